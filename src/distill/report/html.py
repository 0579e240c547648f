"""The HTML report of a finished run: one self-contained file, ``run_dir/report.html``.

Everything comes from the run directory (nothing is recomputed from models):

- ``comparison.json``: the side-by-side table and the quality-vs-latency chart;
- ``metrics.json``: identity of data and teacher, per-epoch histories (training curves);
- ``predictions.safetensors``: test labels and each model's test logits (per-class accuracy,
  confusion matrices, the teacher's "dark knowledge");
- ``recipe.yaml``: the loss terms (the KD temperature) and the teacher's declared licence.

Pieces that a run does not have (no baseline, a teacher loaded from a checkpoint so no
curve, no predictions file) turn into a sentence saying what is absent. The page embeds
its figures as base64 PNG data URIs and its CSS inline: it needs no network and no other file.
User strings are escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.fsutil import write_text
from distill.report.analysis import confusion_matrix, dark_knowledge, per_class_accuracy, top_pairs
from distill.report.provenance import reproduce_command, teacher_identity, teacher_origin
from distill.report.run_data import ROLES, RunData, kd_temperature, loss_terms, read_run

log = logging.getLogger("distill")

# ----------------------------------------------------------------- tables
def _fmt_ratio(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def comparison_rows(table: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Header labels and rows ``{"name", "cells", "ratio"}`` of the comparison table, formatted."""
    from distill.report.table import _fmt_bytes, _fmt_count, _fmt_pct

    models = table.get("models") or []
    s = table.get("summary") or {}
    c = [m.get("cost") or {} for m in models]

    def num(key: str, f: Any) -> list[str]:
        return [f(x[key]) if x.get(key) is not None else "—" for x in c]

    batch = next((x.get("throughput_batch") for x in c if x.get("throughput_batch")), "?")
    rows = [
        ("parameters", num("parameters", _fmt_count), _fmt_ratio(s.get("parameter_ratio"), "{:.4f}×")),
        ("size on disk", [_fmt_bytes(x.get("size_bytes")) for x in c], _fmt_ratio(s.get("size_ratio"), "{:.4f}×")),
        ("FLOPs / sample", num("flops", _fmt_count),
         "" if s.get("cost_reduction") is None else f"−{100 * s['cost_reduction']:.2f}% (cost cut)"),
        ("MACs / sample", [_fmt_count(x["macs"]) if x.get("macs") is not None
                           else (_fmt_count(x["flops"] // 2) if x.get("flops") is not None else "—") for x in c], ""),
        ("latency, batch 1 (p50)", num("latency_ms_p50", lambda v: f"{v:.3f} ms"),
         _fmt_ratio(s.get("latency_speedup"), "{:.1f}× faster")),
        ("latency, batch 1 (p95)", num("latency_ms_p95", lambda v: f"{v:.3f} ms"), ""),
        (f"throughput, batch {batch}", num("throughput", lambda v: f"{_fmt_count(v)}/s"),
         _fmt_ratio(s.get("throughput_speedup"), "{:.1f}× more")),
        ("validation accuracy", [_fmt_pct(m.get("val_acc")) for m in models], ""),
        ("test accuracy", [_fmt_pct(m.get("test_acc")) for m in models],
         "" if s.get("retention") is None else f"{100 * s['retention']:.1f}% retained"),
    ]  # fmt: skip
    return [str(m.get("label", m.get("role", "?"))) for m in models], [
        {"name": n, "cells": cells, "ratio": r} for n, cells, r in rows
    ]


def summary_sentences(table: dict[str, Any]) -> list[str]:
    s = table.get("summary") or {}
    out = []
    if s.get("retention") is not None and s.get("cost_reduction") is not None:
        out.append(
            f"The distilled student keeps {100 * s['retention']:.1f}% of the teacher's test accuracy at "
            f"{100 * (1 - s['cost_reduction']):.2f}% of its FLOPs (cost cut {100 * s['cost_reduction']:.2f}%)."
        )
    if s.get("gain_over_baseline") is not None:
        out.append(
            f"Distillation changed test accuracy by {100 * s['gain_over_baseline']:+.2f} points over the same "
            "student trained on hard labels."
        )
    return out


def summary_cards(table: dict[str, Any]) -> list[tuple[str, str]]:
    """(value, caption) of the headline numbers of the summary (those present)."""
    s = table.get("summary") or {}
    spec = [
        ("retention", lambda v: f"{100 * v:.1f}%", "of the teacher's test accuracy kept"),
        ("cost_reduction", lambda v: f"{100 * v:.2f}%", "FLOPs cut"),
        ("latency_speedup", lambda v: f"{v:.1f}×", "faster at batch 1 (p50)"),
        ("parameter_ratio", lambda v: f"{100 * v:.2f}%", "of the teacher's parameters"),
        ("gain_over_baseline", lambda v: f"{100 * v:+.2f} pts", "test accuracy vs. hard labels only"),
    ]
    return [(fmt(s[key]), caption) for key, fmt, caption in spec if s.get(key) is not None]


# ----------------------------------------------------------------- report
def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def _notes_on_absent(data: RunData) -> dict[str, str]:
    notes: dict[str, str] = {}
    teacher = data.metrics.get("teacher") or {}
    hist = data.histories
    if not hist.get("teacher"):
        if teacher.get("source") == "checkpoint" or teacher.get("checkpoint"):
            where = f" ({teacher['checkpoint']})" if teacher.get("checkpoint") else ""
            notes["teacher_curve"] = (
                f"The teacher was loaded from a checkpoint{where}, not trained in this run: it has no training curve."
            )
        elif teacher.get("source") not in (None, "trained"):
            notes["teacher_curve"] = (
                f"The teacher was {teacher_origin(teacher.get('source'), None, teacher.get('path'))}, not trained in "
                "this run: it has no training curve."
            )
        else:
            notes["teacher_curve"] = "No training history was recorded for the teacher."
    if data.model("baseline") is None:
        notes["baseline"] = (
            "No baseline: the run did not train the student on hard labels alone (eval.baseline: false), "
            "so there is no 'student, hard labels' column or curve."
        )
    return notes


def build_context(data: RunData) -> dict[str, Any]:
    """Everything the template shows (figures as data URIs), for ``data``."""
    ctx: dict[str, Any] = {
        "name": data.name,
        "run_dir": str(data.run_dir),
        "metrics": data.metrics,
        "notes": _notes_on_absent(data),
        "summary": summary_sentences(data.table),
        "teacher": teacher_identity(data),
        "data": data.metrics.get("data") or {},
        "terms": loss_terms(data.recipe),
        "train": data.recipe.get("train") or {},
        "reproduce": reproduce_command(data),
        "missing": [],
    }
    ctx["licence"] = {"ok": ctx["teacher"]["licence_ok"], "message": ctx["teacher"]["licence_message"]}
    ctx["cards"] = summary_cards(data.table)

    # comparison table
    header, rows = comparison_rows(data.table)
    ctx["comparison"] = {"header": header, "rows": rows} if header else None
    ctx["curves"] = _curves_context(data)  # training curves
    ctx["pareto"] = _pareto_context(data)  # quality vs latency

    # classification sections
    ctx["classification"] = None
    if data.is_classification:
        ctx["classification"] = _classification_context(data)
    else:
        ctx["missing"].append(
            "predictions.safetensors (test labels and logits) is absent or has no teacher logits, so per-class "
            "accuracy, confusion matrices and the teacher's dark knowledge cannot be shown. Runs of distill "
            "0.1.0 or later write it; rerun `distill run` to get these sections."
        )
    return ctx


def _curves_context(data: RunData) -> dict[str, Any] | None:
    """The training curves (figure, panels, last epoch of each role), or None without any history."""
    from distill.report import plots

    hist = {r: h for r, h in data.histories.items() if h}
    if not hist:
        return None
    return {
        "img": plots.data_uri(plots.training_curves(hist)),
        "roles": [plots.ROLE_NAMES.get(r, r) for r in hist],
        "panels": plots.curve_panels(hist),
        "final": [
            {
                "role": plots.ROLE_NAMES.get(r, r),
                "epochs": len(h),
                "loss": h[-1].get("loss"),
                "terms": {k.split("/", 1)[1]: v for k, v in h[-1].items() if k.startswith("loss/")},
                "val_acc": _pct(h[-1].get("val_acc"), 2),
                "best_val": _pct(max((x.get("val_acc") or 0.0) for x in h), 2),
                "seconds": sum(float(x.get("seconds") or 0.0) for x in h),
            }
            for r, h in hist.items()
        ],
    }


def _pareto_context(data: RunData) -> dict[str, Any] | None:
    """Quality vs latency (figure, models on and off the Pareto front), or None without timed models."""
    from distill.report import plots

    pts = [m for m in data.models if (m.get("cost") or {}).get("latency_ms_p50") and m.get("test_acc") is not None]
    if not pts:
        return None
    front = plots.pareto_front([(m["cost"]["latency_ms_p50"], m["test_acc"]) for m in pts])
    return {
        "img": plots.data_uri(plots.quality_vs_latency(pts)),
        "front": [str(pts[i]["label"]) for i in front],
        "off": [str(m["label"]) for i, m in enumerate(pts) if i not in front],
    }


def _classification_context(data: RunData) -> dict[str, Any]:
    """Per-class accuracy, confusion matrices and the teacher's dark knowledge (needs test labels and logits)."""
    from distill.report import plots

    names = data.class_names
    c = len(names)
    labels = data.labels
    assert labels is not None  # checked by is_classification
    roles = [r for r in ROLES if r in data.logits]
    cms = {r: confusion_matrix(labels, data.logits[r], c) for r in roles}
    accs = {r: per_class_accuracy(cms[r]) for r in roles}
    support = np.bincount(labels, minlength=c)[:c]
    bar_roles = [r for r in ("teacher", "baseline", "student") if r in accs]
    out: dict[str, Any] = {
        "num_classes": c,
        "n_test": len(labels),
        "roles": [plots.ROLE_NAMES.get(r, r) for r in bar_roles],
        "per_class_img": plots.data_uri(plots.per_class_bars(names, {r: accs[r] for r in bar_roles})),
        "per_class_rows": [
            {
                "name": names[i],
                "support": int(support[i]),
                "accs": [_pct(accs[r][i]) for r in bar_roles],
                "delta": (
                    "—"
                    if "student" not in accs or not np.isfinite(accs["student"][i] - accs["teacher"][i])
                    else f"{100 * (accs['student'][i] - accs['teacher'][i]):+.1f}"
                ),
                "worst": bool(
                    "student" in accs
                    and np.isfinite(accs["student"][i])
                    and accs["student"][i] == np.nanmin(accs["student"])
                ),
            }
            for i in range(c)
        ],
        "confusion": [],
    }
    out["confusion"] = _confusion_context(cms, names)
    if "student" not in cms:
        out["confusion_note"] = "predictions.safetensors has no student logits, so its confusion matrix is absent."
    out["dark"] = _dark_context(data, labels, names)
    return out


def _confusion_context(cms: dict[str, np.ndarray], names: list[str]) -> list[dict[str, Any]]:
    """The confusion heatmaps of the teacher and the student (those with logits)."""
    from distill.report import plots

    out = []
    for r in ("teacher", "student"):
        if r in cms:
            acc = float(np.trace(cms[r]) / max(1, cms[r].sum()))
            out.append(
                {
                    "role": plots.ROLE_NAMES.get(r, r),
                    "img": plots.data_uri(
                        plots.confusion_heatmap(
                            cms[r], names, f"{plots.ROLE_NAMES.get(r, r)} (test accuracy {100 * acc:.2f}%)"
                        )
                    ),
                }
            )
    return out


def _dark_context(data: RunData, labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The teacher's dark knowledge: probability it puts on wrong classes, at T = 1 and at the KD temperature."""
    from distill.report import plots

    t_kd = kd_temperature(data.recipe)
    dk = dark_knowledge(labels, data.logits["teacher"], 1.0)
    dk_kd = dark_knowledge(labels, data.logits["teacher"], t_kd) if t_kd and t_kd != 1.0 else None
    pairs = top_pairs(dk, names, 5)
    total_wrong = np.nansum(dk, axis=1)
    return {
        "img": plots.data_uri(plots.dark_knowledge_heatmap(dk, names, 1.0)),
        "temperature": t_kd,
        "pairs": [
            {
                "true": a,
                "other": b,
                "p": _pct(v),
                "p_kd": _pct(float(dk_kd[i, j])) if dk_kd is not None else None,
                "text": f"{a} → {b} {100 * v:.1f}%",
            }
            for a, b, v, i, j in pairs
        ],
        "mean_wrong_mass": _pct(float(np.nanmean(total_wrong))),
        "mean_wrong_mass_kd": _pct(float(np.nanmean(np.nansum(dk_kd, axis=1)))) if dk_kd is not None else None,
    }


def _code_spans(text: str) -> Any:
    """Escape ``text`` and turn its `backtick` spans into <code> elements."""
    import re

    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def render_report(data: RunData) -> str:
    """The report's HTML text for ``data`` (a loaded run directory)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distill.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, fmt="{:.4g}": "—" if v is None else fmt.format(v)
    env.filters["code"] = _code_spans
    ctx = build_context(data)
    from distill.version import __version__

    ctx["version"] = __version__
    return env.get_template("report.html.j2").render(**ctx)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (self-contained: inline CSS, figures as base64 PNG) and return its path."""
    data = read_run(run_dir)
    html = render_report(data)
    out = Path(run_dir) / "report.html"
    write_text(out, html)
    log.info("report: %s", out)
    return out


def write_tensorboard(run_dir: str | Path) -> Path | None:
    """Write the per-epoch curves as TensorBoard event files under ``run_dir/tensorboard/<role>/``.

    Returns that folder, or None when the optional ``tensorboard`` package is not installed
    (``pip install 'distill[tensorboard]'``). View with ``tensorboard --logdir RUN_DIR/tensorboard``.
    """
    from distill.report.plots import write_tensorboard_curves

    data = read_run(run_dir)
    return write_tensorboard_curves(data.histories, Path(run_dir) / "tensorboard")
