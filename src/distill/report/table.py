"""The "large model vs distilled model" comparison table.

Input: a list of model entries ``{"label", "role", "cost": ModelCost.to_dict(),
"test_acc", "val_acc"}`` with the teacher first. Output: a JSON-able dict and a
Markdown rendering with the student-vs-teacher ratios.
"""

from __future__ import annotations

from typing import Any


def _fmt_count(n: float) -> str:
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def _fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def comparison(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Compute ratios of the last distilled student (role 'student') against the teacher."""
    teacher = next(e for e in entries if e["role"] == "teacher")
    student = next((e for e in entries if e["role"] == "student"), None)
    baseline = next((e for e in entries if e["role"] == "baseline"), None)
    summary: dict[str, Any] = {}
    if student is not None:
        tc, sc = teacher["cost"], student["cost"]
        summary = {
            "retention": student["test_acc"] / teacher["test_acc"] if teacher["test_acc"] else None,
            "cost_reduction": 1 - sc["flops"] / tc["flops"] if tc["flops"] else None,
            "parameter_ratio": sc["parameters"] / tc["parameters"],
            "latency_speedup": tc["latency_ms_p50"] / sc["latency_ms_p50"],
            "throughput_speedup": sc["throughput"] / tc["throughput"],
            "size_ratio": (sc["size_bytes"] / tc["size_bytes"]) if sc.get("size_bytes") and tc.get("size_bytes") else None,
        }
        if baseline is not None:
            summary["gain_over_baseline"] = student["test_acc"] - baseline["test_acc"]
    return {"models": entries, "summary": summary}


def render_markdown(table: dict[str, Any]) -> str:
    entries = table["models"]
    s = table["summary"]
    head = "| | " + " | ".join(e["label"] for e in entries) + " | distilled vs teacher |"
    sep = "|---|" + "---|" * (len(entries) + 1)

    def row(name: str, cells: list[str], ratio: str) -> str:
        return f"| {name} | " + " | ".join(cells) + f" | {ratio} |"

    c = [e["cost"] for e in entries]
    lines = [head, sep]
    lines.append(row("parameters", [_fmt_count(x["parameters"]) for x in c], f"{s['parameter_ratio']:.4f}×" if s else ""))
    lines.append(row("size on disk", [_fmt_bytes(x.get("size_bytes")) for x in c], f"{s['size_ratio']:.4f}×" if s.get("size_ratio") else ""))
    lines.append(row("FLOPs / sample", [_fmt_count(x["flops"]) for x in c], f"−{100 * s['cost_reduction']:.2f}% (cost cut)" if s else ""))
    lines.append(row("MACs / sample", [_fmt_count(x["flops"] // 2) for x in c], ""))
    lines.append(
        row("latency, batch 1 (p50)", [f"{x['latency_ms_p50']:.3f} ms" for x in c], f"{s['latency_speedup']:.1f}× faster" if s else "")
    )
    lines.append(
        row(
            f"throughput, batch {c[0]['throughput_batch']}",
            [f"{_fmt_count(x['throughput'])}/s" for x in c],
            f"{s['throughput_speedup']:.1f}× more" if s else "",
        )
    )
    lines.append(row("validation accuracy", [_fmt_pct(e.get("val_acc")) for e in entries], ""))
    lines.append(row("test accuracy", [_fmt_pct(e.get("test_acc")) for e in entries], f"{100 * s['retention']:.1f}% retained" if s.get("retention") else ""))
    out = "\n".join(lines) + "\n"
    if s:
        out += (
            f"\nThe distilled student keeps {100 * s['retention']:.1f}% of the teacher's test accuracy "
            f"at {100 * (1 - s['cost_reduction']):.2f}% of its FLOPs (cost cut {100 * s['cost_reduction']:.2f}%)."
        )
        if "gain_over_baseline" in s:
            out += f" Distillation changed test accuracy by {100 * s['gain_over_baseline']:+.2f} points over the same student trained on hard labels."
        out += f"\nLatency and throughput: this CPU, {c[0]['threads']} thread(s), eager PyTorch, measured side by side in one process.\n"
    return out
