"""The embedding run's side-by-side table (comparison.md): every model's size, speed and agreement with
the teacher, in Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _f(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def render_table(rows: Sequence[dict[str, Any]], *, k: int, extra: Sequence[str] = (),
                 teacher_pass_seconds: float | None = None) -> str:  # fmt: skip
    """The side-by-side table; ``size`` is the student's folder as saved (the model, without ONNX files), and
    ``with ONNX`` the folder with them when they were written. ``train time`` is building plus training each
    student; the teacher's pass over the training text, shared by every student, is said under the table."""
    with_onnx = any("size_bytes_with_onnx" in r for r in rows)
    head = ["model", "kind", "params", "size", *(["with ONNX"] if with_onnx else []), "sent/s b64", "sent/s b1",
            "speed-up b64", "speed-up b1", "cosine", "Spearman", f"top-{k}"]  # fmt: skip
    for name in extra:
        head += [f"Spearman ({name})", f"top-{k} ({name})"]
    if any("sts_spearman" in r for r in rows):
        head.append("STS Spearman")
    head.append("train time")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        onnx = [_f(r["size_bytes_with_onnx"] / 1e6, ".1f") + " MB" if "size_bytes_with_onnx" in r else "–"] if with_onnx else []
        cells = [r["name"], r["kind"], f"{r['params'] / 1e6:.2f} M", f"{r['size_bytes'] / 1e6:.1f} MB", *onnx,
                 _f(r.get("speed_b64"), ".0f"), _f(r.get("speed_b1"), ".0f"), _f(r.get("speedup_b64"), ".1f") + "×",
                 _f(r.get("speedup_b1"), ".1f") + "×", _f(r.get("cosine")), _f(r.get("spearman")), _f(r.get("topk"))]  # fmt: skip
        for name in extra:
            e = r.get(f"extra:{name}", {})
            cells += [_f(e.get("spearman")), _f(e.get("topk"))]
        if "STS Spearman" in head:
            cells.append(_f(r.get("sts_spearman")))
        secs = r.get("train_seconds")
        cells.append("–" if secs is None else f"{secs:.0f} s" if secs < 60 else f"{secs / 60:.1f} min")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if teacher_pass_seconds is not None:
        lines += ["", f"train time: building each student (token pass, PCA, static table) and training it. The teacher's "
                      f"pass over the training text, done once and shared by every student: {teacher_pass_seconds:.1f} s "
                      "(a cached pass reads its embeddings from output.cache_dir)."]  # fmt: skip
    return "\n".join(lines) + "\n"
