"""The model card (README.md) written beside each student of an embedding run: its teacher and the
teacher's licence, the settings of its kind, what it measured against the teacher, how to load it."""

from __future__ import annotations

from typing import Any

from distill.tasks.embedding.recipe import EmbeddingRecipe, EmbedStudentConfig

CARD_FIELDS = {  # what the card lists of each kind's settings
    "layers": ("layers", "ffn_keep", "heads_keep"),
    "narrow": ("num_layers", "hidden", "heads"),
    "static": ("dim", "weighting", "init", "extend_vocab", "anchor", "pair_min_count", "save_dtype", "finetune"),
}


def _num(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def embedding_model_card(recipe: EmbeddingRecipe, spec: EmbedStudentConfig, teacher_name: str, row: dict[str, Any]) -> str:
    lic = recipe.teacher.license or "unknown (set teacher.license)"
    lines = [
        f"# {spec.name}: a distilled sentence encoder",
        "",
        f"Distilled with `distill` from the teacher **{teacher_name}** (licence: {lic}). The student learned the",
        "teacher's sentence embeddings; its weights derive from the teacher's, so the teacher's licence and terms",
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
