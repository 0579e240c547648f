"""The licence check of a teacher: whether its declared licence is known to allow distilling from it.

A student trained on a teacher's outputs inherits the teacher's terms: many model licences
forbid using outputs to train other models, or commercial use, or carry use restrictions to
derivatives. :func:`licence_status` says plainly whether the declared licence is one known to
allow this; anything unknown or unrecognised is treated as "check first" (conservative).
"""

from __future__ import annotations

import re

# ------------------------------------------------------------------ licences
# Normalised names (lowercase, spaces/underscores -> '-') of licences that allow training other
# models on a model's outputs and distributing the result, with the SPDX / Hugging Face id.
PERMISSIVE: dict[str, str] = {
    "mit": "mit", "mit-0": "mit-0", "mit-license": "mit",
    "apache-2.0": "apache-2.0", "apache-2": "apache-2.0", "apache2": "apache-2.0", "apache": "apache-2.0",
    "apache-license-2.0": "apache-2.0", "apache-license-version-2.0": "apache-2.0", "apache-2.0-license": "apache-2.0",
    "bsd": "bsd", "bsd-2-clause": "bsd-2-clause", "bsd-3-clause": "bsd-3-clause", "bsd-3-clause-clear": "bsd-3-clause-clear",
    "0bsd": "0bsd", "isc": "isc", "zlib": "zlib", "bsl-1.0": "bsl-1.0", "unlicense": "unlicense",
    "the-unlicense": "unlicense", "cc0": "cc0-1.0", "cc0-1.0": "cc0-1.0", "public-domain": "cc0-1.0",
    "cc-by-4.0": "cc-by-4.0", "cc-by-3.0": "cc-by-3.0", "cc-by-2.5": "cc-by-2.5", "cc-by-2.0": "cc-by-2.0",
    "cc-by": "cc-by-4.0", "afl-3.0": "afl-3.0", "ecl-2.0": "ecl-2.0", "postgresql": "postgresql",
    "ncsa": "ncsa", "psf-2.0": "other", "python-2.0": "other", "wtfpl": "wtfpl",
}  # fmt: skip

# Restrictive licences by name: (pattern on the normalised name, why it matters). Checked before the
# permissive list, so "apache-2.0 + non-commercial rider" is flagged.
_RESTRICTIVE: list[tuple[str, str]] = [
    (r"non-?commercial|(^|-)nc(-|$)", "is non-commercial: it forbids commercial use, which then also binds this student"),
    (r"research|academic|evaluation-only|eval-only", "limits use to research: it may forbid deploying or distributing this student"),
    (r"openai|anthropic|gemini|claude|terms-of-(use|service)|(^|-)tos(-|$)",
     "is a provider's terms of use, which typically forbid using outputs to develop competing models"),
    (r"llama", "is a Llama community licence: it restricts using outputs to improve other models and adds naming and usage rules"),
    (r"gemma", "is the Gemma terms of use: its use restrictions pass on to models trained on its outputs"),
    (r"openrail|rail-?m|(^|-)rail(-|$)", "is a RAIL licence: its use restrictions must be passed on to derivatives such as this student"),
    (r"(^|-)nd(-|$)|no-?deriv", "forbids distributing derivatives (NoDerivatives)"),
    (r"(^|-)sa(-|$)|share-?alike|(^|-)(a|l)?gpl|copyleft|(^|-)mpl(-|$)",
     "is share-alike (copyleft): a student trained on its outputs may have to carry the same licence"),
    (r"proprietary|all-rights-reserved|(^|-)(closed|confidential|internal)(-|$)", "is proprietary: its owner's permission is needed"),
    (r"custom|^other$|(^|-)other(-|$)|bespoke", "is a custom licence: its terms decide whether training other models on its outputs is allowed"),
    (r"qwen|tongyi|deepseek|falcon|mistral|yi-license|baichuan|internlm|cohere",
     "is a model-specific licence with its own use conditions"),
]  # fmt: skip

_UNKNOWN = {"", "unknown", "none", "null", "n/a", "na", "?", "unspecified", "tbd", "todo", "unlicensed"}

_CHECK = "check that its terms allow training other models on its outputs before using or distributing this student."


def _normalise(name: str) -> str:
    key = re.sub(r"[\s_/,()]+", "-", name.strip().lower()).strip("-")
    key = re.sub(r"^the-", "", key)
    key = re.sub(r"-(license|licence|international|software-license)$", "", key)
    key = re.sub(r"^creative-commons-attribution(?=-\d|$)", "cc-by", key)
    key = re.sub(r"-version-(?=\d)", "-", key)
    return key


def licence_status(license: str | None) -> tuple[bool, str]:
    """Whether the teacher's declared licence is known to allow distilling from it, and a plain message.

    ``(True, msg)`` only for licences on the permissive list (MIT, Apache-2.0, BSD, ISC, CC-BY, CC0, ...).
    ``(False, msg)`` for an unknown or missing licence, for licences known to restrict using outputs to
    train other models, commercial use or derivatives (non-commercial, research-only, provider terms of
    use, Llama, Gemma, RAIL, NoDerivatives, share-alike, proprietary, custom, ...), and for anything not
    recognised: the message says why and what to check.
    """
    raw = "" if license is None else str(license)
    key = _normalise(raw)
    if key in _UNKNOWN:
        return False, f"The teacher's licence is unknown: {_CHECK}"
    for pattern, why in _RESTRICTIVE:
        if re.search(pattern, key):
            return False, f"The teacher's licence ({raw.strip()}) {why}; {_CHECK}"
    if key in PERMISSIVE:
        return True, (
            f"The teacher's licence ({raw.strip()}) is permissive: it does not restrict training other models "
            "on its outputs. Keep its notice and attribution with this student."
        )
    return False, f"The teacher's licence ({raw.strip()}) is not one distill recognises as permissive; {_CHECK}"


def hub_licence(license: str | None) -> dict[str, str]:
    """Front-matter licence fields: ``{"license": id}`` for a known id, ``unknown``, or ``other`` + ``license_name``."""
    key = _normalise("" if license is None else str(license))
    if key in _UNKNOWN:
        return {"license": "unknown"}
    if key in PERMISSIVE and PERMISSIVE[key] != "other":
        return {"license": PERMISSIVE[key]}
    known_ids = {"cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "cc-by-sa-4.0", "cc-by-nd-4.0", "gpl-3.0",
                 "agpl-3.0", "lgpl-3.0", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "llama2",
                 "llama3", "llama3.1", "llama3.2", "llama3.3", "gemma", "mpl-2.0", "gpl-2.0", "cc-by-nc-3.0"}  # fmt: skip
    if key in known_ids:
        return {"license": key}
    slug = re.sub(r"[^a-z0-9.-]+", "-", key).strip("-") or "custom"
    return {"license": "other", "license_name": slug}


def fm_licence(license: str | None) -> str:
    """The front-matter licence id of a declared licence (see :func:`hub_licence`)."""
    return hub_licence(license)["license"]
