"""The model card of a distilled student (``run_dir/README.md``, Hugging Face format) and the
licence check of its teacher.

A student trained on a teacher's outputs inherits the teacher's terms: many model licences
forbid using outputs to train other models, or commercial use, or carry use restrictions to
derivatives. :func:`licence_status` says plainly whether the declared licence is one known to
allow this; anything unknown or unrecognised is treated as "check first" (conservative).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distill.fsutil import write_text

if TYPE_CHECKING:
    from distill.report.html import RunData

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


# ---------------------------------------------------------- shared pieces
def teacher_origin(source: str | None, checkpoint: str | None, path: str | None, members: int = 0) -> str:
    """Where the teacher's weights came from, in words: trained in this run, loaded from a checkpoint or from
    an ONNX / scikit-learn / precomputed file, or an ensemble of such."""
    if source == "trained":
        return "trained in this run"
    if source == "checkpoint":
        return f"loaded from the checkpoint {checkpoint}" if checkpoint else "loaded from a checkpoint"
    if source == "ensemble":
        return f"an ensemble of {members} teachers, each loaded from its own file" if members else "an ensemble"
    if source in {"onnx", "sklearn", "precomputed"}:
        what = {"onnx": "the ONNX file", "sklearn": "the scikit-learn file", "precomputed": "the outputs file"}[source]
        return f"loaded from {what} {path}" if path else f"loaded from {what}"
    return f"{source} (not trained in this run)" if source else "not recorded"


def teacher_identity(data: RunData) -> dict[str, Any]:
    """Name, origin, fingerprint and licence of the teacher of a run (for the card and the report)."""
    t = dict(data.metrics.get("teacher") or {})
    rt = data.recipe.get("teacher") or {}
    arch = rt.get("factory") or rt.get("arch") or rt.get("kind")
    name = t.get("name") or rt.get("name")
    checkpoint = t.get("checkpoint") or rt.get("checkpoint")
    source = t.get("source") or ("checkpoint" if checkpoint else "trained")
    licence = t.get("license", rt.get("license"))
    ok, message = licence_status(licence)
    teacher = data.model("teacher") or {}
    return {
        "name": name or f"{arch or 'model'} (unnamed)",
        "named": bool(name),
        "arch": arch,
        "params": rt.get("params") or {},
        "origin": teacher_origin(source, checkpoint, t.get("path") or rt.get("path"), len(rt.get("members") or [])),
        "checkpoint": checkpoint,
        "source": source,
        "fingerprint": t.get("fingerprint"),
        "license": licence,
        "licence_ok": ok,
        "licence_message": message,
        "test_acc": teacher.get("test_acc"),
        "parameters": (teacher.get("cost") or {}).get("parameters"),
    }


def reproduce_command(data: RunData) -> dict[str, Any]:
    """The command that reproduces the run from its resolved ``recipe.yaml``, with notes."""
    out_dir = (data.recipe.get("output") or {}).get("dir")
    notes = [
        "recipe.yaml is the resolved recipe this run wrote (every default filled in); it is in the run directory.",
    ]
    if out_dir:
        notes.append(f"It writes to output.dir ({out_dir}); add `--set output.dir=OTHER` to keep this run's folder.")
    ck = (data.recipe.get("teacher") or {}).get("checkpoint")
    if ck:
        notes.append(f"It loads the teacher from {ck}; the same weights are also saved as teacher.safetensors here.")
    return {"command": "distill run recipe.yaml", "notes": notes, "version": data.metrics.get("distill_version")}


def _md(text: Any) -> str:
    """A user string made safe for one Markdown line / table cell."""
    s = " ".join(str(text).split())
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _task(data: RunData) -> tuple[str, str]:
    source = str((data.metrics.get("data") or {}).get("source") or (data.recipe.get("data") or {}).get("source") or "")
    if source.startswith("table"):
        return "tabular-classification", "Tabular Classification"
    return "image-classification", "Image Classification"


def _dataset_id(data: RunData) -> str:
    source = str(
        (data.metrics.get("data") or {}).get("source") or (data.recipe.get("data") or {}).get("source") or "data"
    )
    return {"fashion_mnist": "zalando-datasets/fashion_mnist"}.get(source, source)


def _hardware(data: RunData) -> list[str]:
    m = data.metrics
    lines = [f"torch {m.get('torch', 'unknown')}, {m.get('threads', '?')} CPU thread(s) for training and timing"]
    if m.get("platform"):
        lines.append(f"platform: {m['platform']}")
    else:
        lines.append(
            f"platform (of the machine that wrote this card; the run did not record its own): "
            f"{platform.platform()}, {platform.machine()}, Python {platform.python_version()}"
        )
    lines.append("latency and throughput: eager PyTorch on CPU, every model measured side by side in one process")
    return lines


# ---------------------------------------------------------------- the card
def front_matter(data: RunData) -> dict[str, Any]:
    """The YAML metadata block of the card (Hugging Face model-card fields)."""
    ident = teacher_identity(data)
    task, task_name = _task(data)
    student = data.model("student") or {}
    fm: dict[str, Any] = {**hub_licence(ident["license"]), "library_name": "distill"}
    fm["tags"] = ["knowledge-distillation", task, "distill"]
    fm["datasets"] = [_dataset_id(data)]
    fm["metrics"] = ["accuracy"]
    if ident["named"] and re.fullmatch(r"[\w.-]+/[\w.-]+", str(ident["name"])):
        fm["base_model"] = ident["name"]  # a Hugging Face Hub id
    fm["teacher"] = {
        "name": ident["name"] if ident["named"] else None,
        "architecture": ident["arch"],
        "source": ident["origin"],
        "fingerprint": ident["fingerprint"],
        "license": ident["license"] if ident["license"] is not None else "unknown",
    }
    metrics = []
    if student.get("test_acc") is not None:
        metrics.append({"type": "accuracy", "value": round(float(student["test_acc"]), 6),
                        "name": "test accuracy (distilled student)"})  # fmt: skip
    if ident["test_acc"] is not None:
        metrics.append(
            {"type": "accuracy", "value": round(float(ident["test_acc"]), 6), "name": "test accuracy (teacher)"}
        )
    ds = _dataset_id(data)
    fm["model-index"] = [
        {
            "name": data.name,
            "results": [
                {
                    "task": {"type": task, "name": task_name},
                    "dataset": {"name": ds, "type": ds, "split": "test"},
                    "metrics": metrics,
                }
            ],
        }
    ]
    return fm


def render_model_card(data: RunData) -> str:
    """The card's text: YAML front matter between ``---`` lines, then Markdown."""
    from distill.report.html import kd_temperature, loss_terms

    ident = teacher_identity(data)
    _, task_name = _task(data)
    d = data.metrics.get("data") or {}
    s = data.table.get("summary") or {}
    student = data.model("student") or {}
    meta = yaml.safe_dump(front_matter(data), sort_keys=False, allow_unicode=True)
    L: list[str] = ["---", meta.rstrip("\n"), "---", ""]
    L.append(f"# {_md(data.name)}: distilled student")
    L.append("")
    acc = student.get("test_acc")
    line = f"A small model distilled with `distill` from a larger teacher, for {task_name.lower()}"
    if acc is not None and s.get("retention") is not None and s.get("cost_reduction") is not None:
        line += (
            f": {100 * acc:.2f}% test accuracy, {100 * s['retention']:.1f}% of the teacher's, "
            f"at {100 * (1 - s['cost_reduction']):.2f}% of its FLOPs."
        )
    else:
        line += "."
    L += [line, ""]

    if not ident["licence_ok"]:
        L += ["> **Licence warning.** " + _md(ident["licence_message"]), ""]

    L += ["## Task", "", f"{task_name} over {d.get('num_classes', '?')} classes"]
    names = d.get("class_names") or []
    if names:
        shown = ", ".join(_md(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
        L[-1] += f": {shown}."
    else:
        L[-1] += "."
    L.append("")

    L += ["## Teacher", "", "| | |", "|---|---|"]
    L.append(f"| name | {_md(ident['name'])} |")
    if ident["arch"]:
        params = ", ".join(f"{k}={v}" for k, v in ident["params"].items())
        L.append(f"| architecture | {_md(ident['arch'])}{' (' + _md(params) + ')' if params else ''} |")
    if ident["parameters"]:
        L.append(f"| parameters | {ident['parameters']:,} |")
    L.append(f"| weights | {_md(ident['origin'])} |")
    L.append(f"| weight fingerprint (sha256) | `{_md(ident['fingerprint'] or 'not recorded')}` |")
    L.append(
        f"| licence (declared in the recipe's teacher.license) | {_md(ident['license'] if ident['license'] is not None else 'unknown (not declared)')} |"
    )
    L.append("")

    L += ["## Licence and provenance", ""]
    if ident["licence_ok"]:
        L.append(_md(ident["licence_message"]) + " This card declares the same licence for the student.")
    else:
        L.append("**" + _md(ident["licence_message"]) + "**")
        L.append("")
        L.append(
            "This student was trained to imitate the teacher's outputs, so the teacher's terms decide what may be "
            f"done with it. Its front matter carries the teacher's licence (`{fm_licence(ident['license'])}`) until "
            "someone who has read those terms decides otherwise."
        )
    L.append("")
    L.append(
        "Provenance: the teacher is identified by the sha256 fingerprint of its weights above; the student's "
        "weights are `student.safetensors`, the resolved recipe `recipe.yaml`, the measurements `metrics.json`."
    )
    L.append("")

    L += ["## Data", ""]
    split = ", ".join(f"{k} {d[k]:,}" for k in ("train", "val", "test") if isinstance(d.get(k), int))
    L.append(
        f"Source: {_md(d.get('source', 'unknown'))} ({split} samples)."
        if split
        else f"Source: {_md(d.get('source', 'unknown'))}."
    )
    rd = data.recipe.get("data") or {}
    if rd:
        L.append("")
        keep = {k: v for k, v in rd.items() if v is not None}
        L.append("Data settings: " + ", ".join(f"`{_md(k)}: {_md(v)}`" for k, v in keep.items()) + ".")
    L.append("")

    L += ["## Method and hyperparameters", ""]
    terms = loss_terms(data.recipe)
    if terms:
        L.append("Objective (weighted sum of loss terms):")
        L.append("")
        L += ["| loss | weight | parameters |", "|---|---|---|"]
        for t in terms:
            params = ", ".join(f"{k}={v}" for k, v in t.items() if k not in {"loss", "weight"}) or "—"
            L.append(f"| {_md(t.get('loss'))} | {t.get('weight', 1.0):g} | {_md(params)} |")
        L.append("")
    t_kd = kd_temperature(data.recipe)
    if t_kd is not None:
        L.append(
            f"The student learned from the teacher's soft labels, softmax(logits / T) at T = {t_kd:g} "
            "(Hinton et al., 2015), as well as from the hard labels where the objective includes `ce`."
        )
        L.append("")
    st = data.recipe.get("student") or {}
    if st:
        params = ", ".join(f"{k}={v}" for k, v in (st.get("params") or {}).items())
        sp = (student.get("cost") or {}).get("parameters")
        L.append(
            f"Student: `{_md(st.get('arch'))}`"
            + (f" ({_md(params)})" if params else "")
            + (f", {sp:,} parameters." if sp else ".")
        )
        L.append("")
    tt = (data.recipe.get("teacher") or {}).get("train")
    if ident["source"] == "trained" and isinstance(tt, dict):
        opt = tt.get("optimizer") or {}
        L.append(
            f"Teacher (trained in this run on hard labels, `teacher.train`): {tt.get('epochs', '?')} epochs, batch "
            f"{tt.get('batch_size', '?')}, {_md(opt.get('name', '?'))} lr {opt.get('lr', '?')}, seed {tt.get('seed', '?')}."
        )
        L.append("")
    train = data.recipe.get("train") or {}
    if train:
        L.append("Training (`train` section of the recipe):")
        L.append("")
        text = yaml.safe_dump({"train": train}, sort_keys=False).rstrip("\n")
        L += [_fence(text) + "yaml", text, _fence(text)]
        L.append("")

    bt = (data.recipe.get("eval") or {}).get("baseline_train")
    if data.model("baseline") is not None:
        if isinstance(bt, dict):
            text = yaml.safe_dump({"baseline_train": bt}, sort_keys=False).rstrip("\n")
            L += ["Baseline (the same student on hard labels only), trained with `eval.baseline_train`:", ""]
            L += [_fence(text) + "yaml", text, _fence(text), ""]
        else:
            L += ["Baseline: the same student trained on hard labels only, with the same `train` section.", ""]

    L += ["## Results", ""]
    if data.table_markdown:
        L.append(data.table_markdown.rstrip("\n"))
    else:
        L.append("comparison.md is absent from the run directory.")
    L.append("")

    L += _how_to_call(data)
    L += ["## Hardware", ""]
    L += [f"- {_md(x)}" for x in _hardware(data)]
    if data.metrics.get("seconds") is not None:
        L.append(f"- whole run: {data.metrics['seconds']:.1f} s")
    L.append("")

    rep = reproduce_command(data)
    L += ["## Reproduce", ""]
    if rep["version"]:
        L += [f"With distill {_md(rep['version'])} installed, in the run directory:", ""]
    L += ["```sh", rep["command"], "```", ""]
    L += [f"- {_md(n)}" for n in rep["notes"]]
    L.append("")
    recipe_path = data.run_dir / "recipe.yaml"
    if recipe_path.exists():
        text = recipe_path.read_text(encoding="utf-8").rstrip("\n")
        fence = _fence(text)
        L += ["<details><summary>recipe.yaml</summary>", "", fence + "yaml", text, fence, "", "</details>", ""]
    return "\n".join(L)


def _how_to_call(data: RunData) -> list[str]:
    """How to run the exported files on raw inputs (when the run was exported)."""
    import json

    shipped = data.run_dir / "export" / "classifier.json"
    if not shipped.exists():
        return ["## Use", "", "Export it to run on raw inputs: `distill export RUN_DIR` (ONNX files that carry their "
                "preprocessing, with `classifier.py`).", ""]  # fmt: skip
    meta = json.loads(shipped.read_text())
    inputs = (f"the feature columns in this order: {', '.join(meta['feature_names'])}" if meta["kind"] == "table"
              else f"images {meta.get('pixels', '')}")  # fmt: skip
    return [
        "## Use", "",
        f"`export/{meta['files'][0]}` takes raw samples ({_md(inputs)}); the standardisation is inside the graph. It "
        f"returns logits over the classes {_md(', '.join(meta['classes']))}. With onnxruntime and numpy alone:", "",
        "```python", "from classifier import Classifier   # export/classifier.py", 'model = Classifier("export")',
        "labels = model.predict(rows)          # rows: a DataFrame with those columns, in that order", "```", "",
        "Rows whose columns are not these names in this order are refused with both lists.", "",
    ]  # fmt: skip


def fm_licence(license: str | None) -> str:
    return hub_licence(license)["license"]


def write_model_card(run_dir: str | Path) -> Path:
    """Write ``run_dir/README.md``, the Hugging Face model card of the distilled student; return its path."""
    from distill.report.html import read_run

    data = read_run(run_dir)
    out = Path(run_dir) / "README.md"
    write_text(out, render_model_card(data))
    return out
