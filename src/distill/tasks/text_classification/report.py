"""``distill report`` for a text-classification run: ``report.html`` (the table, quality against speed, per-class
accuracy, training curves; self-contained), read from the run directory alone (no model is loaded)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from distill.core.fsutil import write_text


def _histories(metrics: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for r in metrics["models"]:
        hist = r.get("history") or []
        if hist:
            out[r["name"]] = [{"epoch": h["epoch"], **{f"loss/{k}": v for k, v in h.items() if k != "epoch"}} for h in hist]
    return out


def _scatter(rows: list[dict[str, Any]]) -> bytes:
    from distill.report.plots import figure_png, new_figure

    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    ax.set_xscale("log")
    for r in rows:
        if r.get("speed_b1") and r.get("accuracy") is not None:
            ax.scatter(r["speed_b1"], 100 * r["accuracy"], s=40)
            ax.annotate(r["name"], (r["speed_b1"], 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("texts/s at batch 1 (raw text in, label out; log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("quality against speed")
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    return figure_png(fig)


def write_text_report(run_dir: str | Path) -> list[Path]:
    """Write ``run_dir/report.html`` (self-contained) and return ``[its path]``."""
    import numpy as np

    from distill.report.common import load_task_run
    from distill.report.plots import data_uri, per_class_bars, training_curves

    run_dir, metrics, _, recipe_text = load_task_run(run_dir, "text_classification")
    rows = metrics["models"]
    teacher = metrics["teacher"]
    table = (run_dir / "comparison.md").read_text(encoding="utf-8") if (run_dir / "comparison.md").is_file() else ""
    figures = [("Quality against speed", _scatter(rows))]
    labels = metrics["data"]["labels"]
    per_class = {r["name"]: np.array([np.nan if v is None else v for v in r["per_class_accuracy"]], dtype=float)
                 for r in rows if r.get("per_class_accuracy")}  # fmt: skip
    if per_class and len(labels) <= 60:
        figures.append(("Per-class test accuracy", per_class_bars(labels, per_class)))
    hist = _histories(metrics)
    if hist:
        figures.append(("Training curves (per-epoch mean of each weighted loss term)", training_curves(hist)))
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>distill report: " + e(metrics["name"]) + "</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}pre{background:#f6f6f6;"
        "padding:1em;overflow:auto}img{max-width:100%}</style></head><body>",
        f"<h1>{e(metrics['name'])}: text classification</h1>",
        f"<p>Teacher <b>{e(teacher['name'])}</b>, {e(teacher['source'])}; licence: "
        f"{e(teacher.get('license') or 'not declared (set teacher.license)')}. Distilling another party's model "
        "outputs may breach its terms.</p>",
        f"<p>Data: {e(metrics['data']['source'])}, {len(labels)} classes, {metrics['data']['train']} training / "
        f"{metrics['data']['val']} validation / {metrics['data']['test']} test texts.</p>",
        "<h2>Large model against distilled models</h2><pre>" + e(table) + "</pre>",
    ]
    for title, png in figures:
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='{data_uri(png)}'>")
    parts += ["<h2>Recipe</h2><pre>" + e(recipe_text) + "</pre>", "</body></html>"]
    out = run_dir / "report.html"
    write_text(out, "\n".join(parts))
    return [out]
