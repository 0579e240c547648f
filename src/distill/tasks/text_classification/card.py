"""The model card (README.md) beside each student of a text-classification run: where it came from (the
teacher, its licence, how it was made), what it measured on the test split, and how to run it on raw text."""

from __future__ import annotations

from typing import Any

from distill.tasks.text_classification.recipe import TextClassificationRecipe, TextStudentConfig


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def text_model_card(recipe: TextClassificationRecipe, spec: TextStudentConfig, metrics: dict[str, Any],
                    row: dict[str, Any]) -> str:  # fmt: skip
    teacher = metrics["teacher"]
    lic = teacher.get("license") or "unknown (set teacher.license)"
    labels = metrics["data"]["labels"]
    shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
    settings = {"layers": f"teacher layers {spec.layers}", "static": f"token table of width {spec.dim}, {spec.init} init",
                "narrow": f"{spec.num_layers} layers x {spec.hidden}, {spec.heads} heads",
                "factory": f"factory {spec.factory}", "hf": f"Hugging Face folder {spec.path}"}[spec.kind]  # fmt: skip
    teacher_row = metrics["models"][0]
    lines = [
        "---", "pipeline_tag: text-classification", "library_name: distill", "---", "",
        f"# {spec.name}: a distilled text classifier",
        "",
        f"Distilled with `distill` from the teacher **{teacher['name']}** ({teacher['source']}; licence: {lic}).",
        "The student learned the teacher's soft labels (and the true labels); its weights may derive from the",
        "teacher's, so the teacher's licence and terms apply to it. Distilling another party's model outputs may",
        "breach its terms: check them.",
        "",
        f"- kind: {spec.kind} ({settings})",
        f"- data: {metrics['data']['source']}; {len(labels)} classes ({shown}); {metrics['data']['train']} training, "
        f"{metrics['data']['test']} test texts",
        f"- test accuracy {_pct(row.get('accuracy'))} (teacher {_pct(teacher_row.get('accuracy'))}, retention "
        f"{_pct(row.get('retention'))}), macro-F1 {_pct(row.get('macro_f1'))}, agreement with the teacher "
        f"{_pct(row.get('agreement'))}",
        f"- parameters: {row.get('params') or 0:,}; folder {row.get('size_bytes') or 0:,} bytes; texts/s on the "
        f"training machine: {row.get('speed_batch') or 0:,.0f} (batch {row.get('batch_size', 64)}), {row.get('speed_b1') or 0:,.0f} (batch 1)",
        "",
        "Run it on raw text with ONNX Runtime and tokenizers only (the `onnx/` folder: model.onnx, tokenizer.json,",
        "config.json with the label names and the token limit):",
        "",
        "```python",
        "from distill.export.text_runtime import TextClassifierRuntime",
        "clf = TextClassifierRuntime('onnx')",
        "clf.predict(['a text to classify'])   # -> label names",
        "```",
        "",
    ]
    q = row.get("onnx_int8") or {}
    if q.get("file"):
        speed = f", {q['speed_batch']:,.0f} texts/s (batch {row.get('batch_size', 64)})" if q.get("speed_batch") else ""
        lines += [f"`onnx-int8/` holds the same three files with int8 weights ({q['bytes']:,} bytes, "
                  f"{len(q['kept_float'])} weight nodes kept in float): `TextClassifierRuntime('onnx-int8')`; test accuracy "
                  f"{_pct(q.get('accuracy'))}{speed}.", ""]  # fmt: skip
    if spec.kind in {"layers", "narrow", "hf"}:
        lines += ["Or with transformers, from this folder:", "", "```python",
                  "from transformers import pipeline", "clf = pipeline('text-classification', model=PATH)", "```", ""]  # fmt: skip
    return "\n".join(lines)
