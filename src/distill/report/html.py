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

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from distill.errors import RunDirError
from distill.report.analysis import confusion_matrix, dark_knowledge, per_class_accuracy, top_pairs
from distill.fsutil import write_text

log = logging.getLogger("distill")

ROLES = ("teacher", "baseline", "student")


# ------------------------------------------------------------ the run dir
@dataclass
class RunData:
    """What a report needs from a run directory (plain values; missing pieces are None/empty)."""

    run_dir: Path
    metrics: dict[str, Any]
    table: dict[str, Any]
    recipe: dict[str, Any]
    table_markdown: str = ""
    labels: np.ndarray | None = None  # (N,) int64 test labels
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (N, C) float32 test logits

    @property
    def name(self) -> str:
        return str(self.metrics.get("name") or self.recipe.get("name") or self.run_dir.name)

    @property
    def class_names(self) -> list[str]:
        names = (self.metrics.get("data") or {}).get("class_names")
        if names:
            return [str(c) for c in names]
        c = self._num_classes()
        return [str(i) for i in range(c)] if c else []

    def _num_classes(self) -> int | None:
        c = (self.metrics.get("data") or {}).get("num_classes")
        if c:
            return int(c)
        if self.logits:
            return int(next(iter(self.logits.values())).shape[1])
        return None

    @property
    def is_classification(self) -> bool:
        return self.labels is not None and "teacher" in self.logits and bool(self.class_names)

    @property
    def histories(self) -> dict[str, list[dict[str, Any]]]:
        hist = dict(self.metrics.get("history") or {})
        for role in ROLES:
            p = self.run_dir / "history" / f"{role}.json"
            if not hist.get(role) and p.exists():
                hist[role] = json.loads(p.read_text())
        return {r: hist.get(r) or [] for r in ROLES if r in hist or r != "baseline"}

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.table.get("models") or [])

    def model(self, role: str) -> dict[str, Any] | None:
        return next((m for m in self.models if m.get("role") == role), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}). Fix: rerun `distill run` for this recipe.") from None


def read_run(run_dir: str | Path) -> RunData:
    """Load what the report and model card need from a finished run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(
            f"run directory not found: {run_dir}. Fix: pass the folder `distill run` wrote (e.g. runs/NAME)."
        )
    missing = [n for n in ("metrics.json", "comparison.json") if not (run_dir / n).exists()]
    if missing:
        raise RunDirError(
            f"{run_dir} has no {' or '.join(missing)}: the run did not finish. "
            "Fix: finish it with `distill run RECIPE --resume`."
        )
    metrics = _read_json(run_dir / "metrics.json")
    table = _read_json(run_dir / "comparison.json")
    recipe_path = run_dir / "recipe.yaml"
    recipe = (yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}) if recipe_path.exists() else {}
    md_path = run_dir / "comparison.md"
    data = RunData(run_dir, metrics, table, recipe, md_path.read_text(encoding="utf-8") if md_path.exists() else "")
    pred = run_dir / "predictions.safetensors"
    if pred.exists():
        from safetensors.numpy import load_file

        tensors = load_file(str(pred))
        if "test_labels" in tensors:
            data.labels = tensors["test_labels"].astype(np.int64)
        for key, value in tensors.items():
            if key.startswith("test_logits."):
                data.logits[key.split(".", 1)[1]] = value.astype(np.float32)
    return data


def loss_terms(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipe's distill terms with every loss parameter resolved (registry defaults filled in)."""
    from distill.losses import REGISTRY

    terms = []
    for raw in recipe.get("distill") or []:
        term = dict(raw)
        spec = REGISTRY.get(term.get("loss"))
        if spec is not None:
            params = {k: v for k, v in term.items() if k not in {"loss", "weight"}}
            term = {"loss": term["loss"], "weight": term.get("weight", 1.0), **spec.resolved(params)}
        terms.append(term)
    return terms


def kd_temperature(recipe: dict[str, Any]) -> float | None:
    """The temperature of the recipe's first loss term that has one (e.g. kd), or None."""
    for term in loss_terms(recipe):
        if term.get("temperature") is not None:
            return float(term["temperature"])
    return None


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
            from distill.report.card import teacher_origin

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
    from distill.report import plots
    from distill.report.card import reproduce_command, teacher_identity

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

    # training curves
    hist = {r: h for r, h in data.histories.items() if h}
    ctx["curves"] = None
    if hist:
        ctx["curves"] = {
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

    # quality vs latency
    pts = [m for m in data.models if (m.get("cost") or {}).get("latency_ms_p50") and m.get("test_acc") is not None]
    ctx["pareto"] = None
    if pts:
        front = plots.pareto_front([(m["cost"]["latency_ms_p50"], m["test_acc"]) for m in pts])
        ctx["pareto"] = {
            "img": plots.data_uri(plots.quality_vs_latency(pts)),
            "front": [str(pts[i]["label"]) for i in front],
            "off": [str(m["label"]) for i, m in enumerate(pts) if i not in front],
        }

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


def _classification_context(data: RunData) -> dict[str, Any]:
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
    for r in ("teacher", "student"):
        if r in cms:
            acc = float(np.trace(cms[r]) / max(1, cms[r].sum()))
            out["confusion"].append(
                {
                    "role": plots.ROLE_NAMES.get(r, r),
                    "img": plots.data_uri(
                        plots.confusion_heatmap(
                            cms[r], names, f"{plots.ROLE_NAMES.get(r, r)} (test accuracy {100 * acc:.2f}%)"
                        )
                    ),
                }
            )
    if "student" not in cms:
        out["confusion_note"] = "predictions.safetensors has no student logits, so its confusion matrix is absent."
    # dark knowledge
    t_kd = kd_temperature(data.recipe)
    dk = dark_knowledge(labels, data.logits["teacher"], 1.0)
    dk_kd = dark_knowledge(labels, data.logits["teacher"], t_kd) if t_kd and t_kd != 1.0 else None
    pairs = top_pairs(dk, names, 5)
    total_wrong = np.nansum(dk, axis=1)
    out["dark"] = {
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
    return out


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
    from distill import __version__

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
