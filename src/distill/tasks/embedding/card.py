"""The model card (README.md) written beside each student of an embedding run: its teacher and the
teacher's licence, the settings of its kind, what it measured against the teacher, how to load it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from distill.tasks.embedding.recipe import EmbeddingRecipe, EmbedStudentConfig

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as on the Hugging Face hub
_GENERIC = {"model", "models", "snapshot", "snapshots", "main", "latest", "checkpoint", "."}


def teacher_display_name(folder: Path, given: str | None = None) -> str:
    """The teacher's name for the card, report and tables: ``teacher.name`` if set; else the model's own name,
    the title of its sentence-transformers model card (README.md), or its config's ``_name_or_path`` when that
    is a hub name (owner/name; for a sentence-transformers folder it is often the base model, hence second);
    else the folder's name, with its parent's when the folder's own says nothing (``model``, ``snapshot``)."""
    if given:
        return given
    title = _readme_title(folder / "README.md")
    if title:
        return title
    try:
        name = str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path") or "")
    except (OSError, ValueError, AttributeError):
        name = ""
    if _HUB_NAME.match(name) and not Path(name).exists():
        return name
    folder = folder.resolve()
    if folder.name.lower() in _GENERIC and folder.parent.name:
        return f"{folder.parent.name}/{folder.name}"
    return folder.name


def _readme_title(readme: Path) -> str | None:
    """The first level-1 heading of a model card, outside its YAML front matter and code blocks."""
    try:
        lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    in_front = bool(lines) and lines[0].strip() == "---"
    fenced = False
    for i, line in enumerate(lines):
        if in_front:
            in_front = not (i > 0 and line.strip() == "---")
            continue
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("# ") and line[2:].strip():
            title = line[2:].strip().strip("`*")
            return title if len(title) <= 100 else None
    return None

CARD_FIELDS = {  # what the card lists of each kind's settings
    "layers": ("layers", "ffn_keep", "heads_keep"),
    "narrow": ("num_layers", "hidden", "heads"),
    "static": ("dim", "weighting", "init", "extend_vocab", "anchor", "pair_min_count", "save_dtype", "finetune"),
}


def _num(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def embedding_model_card(recipe: EmbeddingRecipe, spec: EmbedStudentConfig, teacher_name: str, row: dict[str, Any],
                         teacher_path: Path | str | None = None) -> str:  # fmt: skip
    lic = recipe.teacher.license or "unknown (set teacher.license)"
    where = f", loaded from `{teacher_path}`" if teacher_path is not None else ""
    lines = [
        f"# {spec.name}: a distilled sentence encoder",
        "",
        f"Distilled with `distill` from the teacher **{teacher_name}** (licence: {lic}{where}). The student learned",
        "the teacher's sentence embeddings; its weights derive from the teacher's, so the teacher's licence and terms",
        "apply to it. Distilling another party's model outputs may breach its terms: check them.",
        "",
        f"- kind: {spec.kind} ({', '.join(f'{k}={getattr(spec, k)}' for k in CARD_FIELDS[spec.kind])})",
        f"- training text: {recipe.data.corpus}",
        f"- parameters: {_num(row.get('params'), ',')}; size on disk: {_num(row.get('size_bytes'), ',')} bytes",
        f"- against the teacher on held-out text: cosine {_num(row.get('cosine'))}, Spearman agreement "
        f"{_num(row.get('spearman'))}, top-{recipe.eval.k} retrieval agreement {_num(row.get('topk'))}",
        f"- sentences/s on the training machine: {_num(row.get('speed_b64'), ',.0f')} (batch 64), "
        f"{_num(row.get('speed_b1'), ',.0f')} (batch 1)",
        "",
    ]
    if spec.kind == "static":
        lines += ["Load it with numpy and tokenizers only:", "", "```python", "import sys; sys.path.insert(0, PATH)",
                  "from static_model import StaticModel", "model = StaticModel.from_dir(PATH)",
                  "vectors = model.encode(['a sentence'])", "```", ""]  # fmt: skip
    elif spec.kind == "layers" and spec.heads_keep < 1:
        lines += ["Its attention heads were pruned: load it with distill (sentence-transformers cannot rebuild "
                  "pruned heads from the config):", "", "```python",
                  "from distill.models.sentence import load_sentence_encoder", "model = load_sentence_encoder(PATH)",
                  "vectors = model.encode(['a sentence'])", "```", ""]  # fmt: skip
    else:
        lines += ["```python", "from sentence_transformers import SentenceTransformer",
                  "model = SentenceTransformer(PATH)", "vectors = model.encode(['a sentence'])", "```", ""]  # fmt: skip
    return "\n".join(lines)
