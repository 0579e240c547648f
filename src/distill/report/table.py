"""The "large model vs distilled model" comparison table.

Input: a list of model entries ``{"label", "role", "cost": ModelCost.to_dict(),
"test_acc", "val_acc"}`` with the teacher first. Output: a JSON-able dict and a
Markdown rendering with the student-vs-teacher ratios.
"""

from __future__ import annotations

from typing import Any


def _fmt_count(n: float | None) -> str:
    if n is None:
        return "—"
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

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        flop_ratio = ratio(sc["flops"], tc["flops"])
        summary = {
            "retention": ratio(student["test_acc"], teacher["test_acc"]),
            "cost_reduction": None if flop_ratio is None else 1 - flop_ratio,
            "parameter_ratio": ratio(sc["parameters"], tc["parameters"]),
            "latency_speedup": ratio(tc["latency_ms_p50"], sc["latency_ms_p50"]),
            "throughput_speedup": ratio(sc["throughput"], tc["throughput"]),
            "size_ratio": ratio(sc.get("size_bytes"), tc.get("size_bytes")),
        }
        summary["at_chance"] = [e["role"] for e in entries if e.get("at_chance")]  # students no better than chance
        if baseline is not None:
            summary["gain_over_baseline"] = student["test_acc"] - baseline["test_acc"]
        trees = next((e for e in entries if e["role"] == "trees"), None)
        if trees is not None:
            summary["gain_over_trees"] = student["test_acc"] - trees["test_acc"]
    return {"models": entries, "summary": summary}


def render_markdown(table: dict[str, Any]) -> str:
    entries = table["models"]
    s = table["summary"]
    head = "| | " + " | ".join(e["label"] for e in entries) + " | distilled vs teacher |"
    sep = "|---|" + "---|" * (len(entries) + 1)

    def row(name: str, cells: list[str], ratio: str) -> str:
        return f"| {name} | " + " | ".join(cells) + f" | {ratio} |"

    c = [e["cost"] for e in entries]

    def r(key: str, fmt: str) -> str:
        return fmt.format(s[key]) if s.get(key) is not None else ""

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f} ms"

    lines = [head, sep]
    lines.append(row("parameters", [_fmt_count(x["parameters"]) for x in c], r("parameter_ratio", "{:.4f}×")))
    lines.append(row("size on disk", [_fmt_bytes(x.get("size_bytes")) for x in c], r("size_ratio", "{:.4f}×")))
    cut = f"−{100 * s['cost_reduction']:.2f}% (cost cut)" if s.get("cost_reduction") is not None else ""
    lines.append(row("FLOPs / sample", [_fmt_count(x["flops"]) for x in c], cut))
    lines.append(row("MACs / sample", [_fmt_count(None if x["flops"] is None else x["flops"] // 2) for x in c], ""))
    lines.append(row("latency, batch 1 (p50)", [ms(x["latency_ms_p50"]) for x in c], r("latency_speedup", "{:.1f}× faster")))
    lines.append(
        row(
            f"throughput, batch {c[0]['throughput_batch']}",
            ["—" if x["throughput"] is None else f"{_fmt_count(x['throughput'])}/s" for x in c],
            r("throughput_speedup", "{:.1f}× more"),
        )
    )
    lines.append(row("validation accuracy", [_fmt_pct(e.get("val_acc")) for e in entries], ""))
    lines.append(row("test accuracy", [_fmt_pct(e.get("test_acc")) for e in entries], f"{100 * s['retention']:.1f}% retained" if s.get("retention") else ""))
    out = "\n".join(lines) + "\n"
    if s and s.get("retention") is not None:
        out += f"\nThe distilled student keeps {100 * s['retention']:.1f}% of the teacher's test accuracy"
        if s.get("cost_reduction") is not None:
            out += f" at {100 * (1 - s['cost_reduction']):.2f}% of its FLOPs (cost cut {100 * s['cost_reduction']:.2f}%)."
        else:
            out += " (the teacher's FLOPs are unknown for this kind of teacher)."
        if "gain_over_baseline" in s:
            out += f" Distillation changed test accuracy by {100 * s['gain_over_baseline']:+.2f} points over the same student trained on hard labels."
        if "gain_over_trees" in s:
            out += (f" Against gradient-boosted trees fitted on the same training rows (the non-neural baseline): "
                    f"{100 * s['gain_over_trees']:+.2f} points.")
        out += f"\nLatency and throughput: this CPU, {c[0]['threads']} thread(s), eager PyTorch, measured side by side in one process.\n"
    notes = [e["chance_note"] for e in entries if e.get("at_chance") and e.get("chance_note")]
    if notes:
        out += "\n" + "\n".join(f"**Warning: {n}**" for n in notes) + "\n"
    return out
