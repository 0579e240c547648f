"""The HTML report of an embedding run (``task: embedding``): one self-contained ``run_dir/report.html``.

Everything comes from the run directory (no model is loaded):

- ``metrics.json``: the teacher's identity, sentence counts, the measured rows (``rows``; else
  ``comparison.json``), the machine;
- ``students/<name>.train.json``: each student's training stats, per-epoch ``history`` of the
  transformer students (the training curves);
- ``similarities.json`` (runs of this version): the cosine similarities of the same held-out
  sentence pairs under the teacher and each student, ``{"pairs": N, "teacher": [N],
  "models": {name: [N]}}`` (the teacher-vs-student scatter);
- ``recipe.yaml``: the exact recipe, ``eval.k``, the teacher's declared licence.

A piece an older run lacks becomes one sentence saying so. Figures are base64 PNG data URIs and
the CSS is inline: the page needs no network and no other file. The small page helpers here
(:func:`load_task_run`, :func:`render_page`, :func:`new_figure`, :func:`figure_png`, :func:`fmt`)
also serve the language-model report (``lm_html.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.fsutil import write_text
from distill.report.common import read_json, load_task_run, fmt, render_page, new_figure, figure_png, style_axes, log_axis_ticks, teacher_licence
from distill.report.plots import ROLE_COLOURS, data_uri, pareto_front, training_curves

KIND_COLOURS = {"teacher": ROLE_COLOURS["teacher"], "layers": "#dd8452", "narrow": "#55a868", "static": "#c44e52"}


def _num(row: dict[str, Any], key: str, *, positive: bool = True) -> float | None:
    """``row[key]`` as a float when it is a finite number (and > 0 with ``positive``), else None."""
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        return None
    return float(v)


def quality_points(rows: list[dict[str, Any]], x_key: str, *, scale: float, xlabel: str, title: str,
                   higher_x_better: bool) -> bytes:  # fmt: skip
    """Spearman (y) of every model against ``row[x_key] * scale`` (x, log axis); the Pareto front dashed.

    ``rows``: the run's rows (``name``, ``kind``, ``spearman`` and ``x_key``); rows lacking either are left out."""
    pts = [(r, x * scale, y) for r in rows
           if (x := _num(r, x_key)) is not None and (y := _num(r, "spearman", positive=False)) is not None]
    fig = new_figure(5.6, 3.8)
    ax = fig.subplots()
    style_axes(ax)
    ax.set_xscale("log")
    xy = [(1 / x if higher_x_better else x, y) for _, x, y in pts]
    front = sorted(pareto_front(xy), key=lambda i: pts[i][1])
    if len(front) > 1:
        ax.step([pts[i][1] for i in front], [pts[i][2] for i in front], where="pre" if higher_x_better else "post",
                color="#bbbbbb", linestyle="--", linewidth=1.2, label="Pareto front", zorder=1)  # fmt: skip
    for i, (r, x, y) in enumerate(pts):
        colour = KIND_COLOURS.get(str(r.get("kind")), f"C{i % 10}")
        ax.scatter([x], [y], s=60, color=colour, edgecolor="white", linewidth=1.2, zorder=3)
        ax.annotate(str(r.get("name")), (x, y), textcoords="offset points", xytext=(7, 5 - 11 * (i % 2)), fontsize=8,
                    color="#333333")  # fmt: skip
    xs = [p[1] for p in pts] or [1.0]
    log_axis_ticks(ax, min(xs) / 1.6, max(xs) * 2.5)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("Spearman of pair similarities vs teacher", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(which="both", labelsize=8)
    if len(front) > 1:
        ax.legend(fontsize=8, frameon=False, loc="lower left")
    return figure_png(fig)


def similarity_scatter(teacher: np.ndarray, models: dict[str, np.ndarray], kinds: dict[str, str] | None = None) -> bytes:
    """Small multiples: teacher cosine similarity (x) vs each student's (y) of the same pairs, y = x dashed.

    ``teacher``: (N,); ``models``: name -> (N,); ``kinds``: name -> student kind (the colour)."""
    from distill.tasks.embedding.metrics import spearman

    n = len(models)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = new_figure(3.4 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    lo = min(float(teacher.min()), *(float(v.min()) for v in models.values()))
    hi = max(float(teacher.max()), *(float(v.max()) for v in models.values()))
    pad = 0.03 * (hi - lo or 1.0)
    for i, (ax, (name, sims)) in enumerate(zip(axes, models.items())):
        style_axes(ax)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999999", linestyle="--", linewidth=1.0)
        ax.scatter(teacher, sims, s=6, alpha=0.45, linewidths=0,
                   color=KIND_COLOURS.get((kinds or {}).get(name, ""), f"C{(i + 1) % 10}"))
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"{name}: Spearman {spearman(sims, teacher):.3f}", fontsize=9)
        ax.set_xlabel("teacher cosine", fontsize=8)
        ax.set_ylabel("student cosine", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_axis_off()
    return figure_png(fig)


# ------------------------------------------------------------ the sections
def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "—"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "—"
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min"


def comparison_table(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Header and formatted cells of the comparison table (the columns of comparison.md)."""
    extras = list(dict.fromkeys(key[6:] for r in rows for key in r if key.startswith("extra:")))
    header = ["kind", "params", "size", "sent/s b64", "sent/s b1", "speed-up b64", "speed-up b1", "cosine",
              "Spearman", f"top-{k}"]  # fmt: skip
    for name in extras:
        header += [f"Spearman ({Path(name).name})", f"top-{k} ({Path(name).name})"]
    sts = any("sts_spearman" in r for r in rows)
    header += (["STS Spearman"] if sts else []) + ["train time"]
    out = []
    for r in rows:
        cells = [str(r.get("kind", "—")), fmt(r.get("params"), ","), _size(r.get("size_bytes")),
                 fmt(r.get("speed_b64"), ",.0f"), fmt(r.get("speed_b1"), ",.0f"), fmt(r.get("speedup_b64"), ".1f", "×"),
                 fmt(r.get("speedup_b1"), ".1f", "×"), fmt(r.get("cosine")), fmt(r.get("spearman")), fmt(r.get("topk"))]  # fmt: skip
        for name in extras:
            e = r.get(f"extra:{name}") or {}
            cells += [fmt(e.get("spearman")), fmt(e.get("topk"))]
        cells += ([fmt(r.get("sts_spearman"))] if sts else []) + [_seconds(r.get("train_seconds"))]
        out.append({"name": str(r.get("name", "?")), "role": r.get("role", "student"), "cells": cells})
    return {"header": header, "rows": out, "extras": extras}


def _curves(run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Training curves of the students whose ``students/<name>.train.json`` has a history, and their stats."""
    histories, stats, notes = {}, [], []
    for r in rows:
        if r.get("role") == "teacher":
            continue
        name = str(r.get("name"))
        path = run_dir / "students" / f"{name}.train.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            info = {}
        info = info if isinstance(info, dict) else {}
        hist = [h for h in (info.get("history") or []) if isinstance(h, dict) and "epoch" in h]
        if hist:
            histories[name] = hist
        elif r.get("kind") == "static":
            last = info.get("final_loss")
            notes.append(f"{name} (static): no per-epoch history" + (f"; its fine-tune ended at loss {last:.4g}."
                                                                     if isinstance(last, float) else "."))  # fmt: skip
        else:
            notes.append(f"{name}: no per-epoch history in students/{name}.train.json (a run of an older version).")
        stats.append({"name": name, "epochs": info.get("epochs", "—"), "steps": info.get("steps", "—"),
                      "seconds": _seconds(info.get("seconds")), "build": _seconds(info.get("build_seconds")),
                      "final": fmt(hist[-1].get("loss") if hist else info.get("final_loss"), ".4g"),
                      "stopped": bool(info.get("stopped_by_time"))})  # fmt: skip
    img = data_uri(training_curves(histories)) if histories else None
    return {"img": img, "names": list(histories), "stats": stats, "notes": notes}


def _scatter(run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    path = run_dir / "similarities.json"
    if not path.is_file():
        return {"note": "The teacher-vs-student similarity scatter needs similarities.json, which runs of this "
                        "version of distill write: rerun the recipe to get it."}  # fmt: skip
    try:
        sim = json.loads(path.read_text(encoding="utf-8"))
        teacher = np.asarray(sim["teacher"], dtype=float)
        models = {str(k): np.asarray(v, dtype=float) for k, v in (sim.get("models") or {}).items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        return {"note": f"similarities.json cannot be read ({type(exc).__name__}): the scatter is left out."}
    bad = [k for k, v in models.items() if v.shape != teacher.shape or not np.isfinite(v).all()]
    models = {k: v for k, v in models.items() if k not in bad and v.size}
    if not models or not teacher.size or teacher.ndim != 1 or not np.isfinite(teacher).all():
        return {"note": "similarities.json lists no student with as many finite values as the teacher: no scatter."}
    note = f"Left out (not {teacher.size} finite values like the teacher): {', '.join(bad)}." if bad else None
    return {"img": data_uri(similarity_scatter(teacher, models, {str(r.get("name")): str(r.get("kind")) for r in rows})), "pairs": int(teacher.size), "note": note}


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    students = [r for r in rows if r.get("role") != "teacher" and _num(r, "spearman", positive=False) is not None]
    if not students:
        return []
    best = max(students, key=lambda r: r["spearman"])
    lines = [(f"Closest to the teacher: {best['name']} (Spearman {fmt(best['spearman'])}"
             f"{', ' + fmt(best.get('speedup_b64'), '.1f', '×') + ' the teacher at batch 64' if best.get('speedup_b64') else ''}).")]  # fmt: skip
    fast = [r for r in students if _num(r, "speedup_b64") is not None]
    if fast:
        top = max(fast, key=lambda r: r["speedup_b64"])
        lines.append(f"Fastest: {top['name']} ({fmt(top['speedup_b64'], '.1f', '×')} the teacher's sentences/s at batch "
                     f"64, Spearman {fmt(top['spearman'])}).")  # fmt: skip
    return lines


def build_context(run_dir: Path, metrics: dict[str, Any], recipe: dict[str, Any], recipe_text: str) -> dict[str, Any]:
    rows = metrics.get("rows") or metrics.get("models")
    if not rows and (run_dir / "comparison.json").is_file():
        table = read_json(run_dir / "comparison.json")
        rows = (table.get("models") or table.get("rows")) if isinstance(table, dict) else table
    rows = [r for r in (rows or []) if isinstance(r, dict)]
    k = int(((recipe.get("eval") or {}).get("k")) or 10)
    t, rt = metrics.get("teacher") or {}, recipe.get("teacher") or {}
    teacher = {"name": t.get("name") or rt.get("name") or "the teacher", "path": t.get("path") or rt.get("path"),
               "source": t.get("source"), **teacher_licence(t.get("license", rt.get("license")))}  # fmt: skip
    speed = size = None
    if any(_num(r, "speedup_b64") for r in rows):
        speed = data_uri(quality_points(rows, "speedup_b64", scale=1.0, higher_x_better=True,
                                        xlabel="speed-up over the teacher, sentences/s at batch 64 (log scale)",
                                        title="quality vs speed (up and to the right is better)"))  # fmt: skip
    if any(_num(r, "size_bytes") for r in rows):
        unit, scale = ("MB", 1e-6) if max(_num(r, "size_bytes") or 0 for r in rows) >= 1e6 else ("kB", 1e-3)
        size = data_uri(quality_points(rows, "size_bytes", scale=scale, higher_x_better=False,
                                       xlabel=f"size on disk ({unit}, log scale)",
                                       title="quality vs size (up and to the left is better)"))  # fmt: skip
    return {
        "name": str(metrics.get("name") or recipe.get("name") or run_dir.name), "run_dir": str(run_dir),
        "teacher": teacher, "sentences": metrics.get("sentences") or {}, "k": k,
        "table": comparison_table(rows, k) if rows else None, "summary": _summary(rows),
        "speed_img": speed, "size_img": size, "curves": _curves(run_dir, rows), "scatter": _scatter(run_dir, rows),
        "recipe_text": recipe_text, "corpus": (recipe.get("data") or {}).get("corpus"),
        "env": {key: metrics.get(key) for key in ("torch", "threads", "platform", "seconds")},
    }  # fmt: skip


def write_embedding_report(run_dir: str | Path) -> list[Path]:
    """Write ``run_dir/report.html`` for an embedding run (self-contained) and return ``[its path]``."""
    run_dir, metrics, recipe, recipe_text = load_task_run(run_dir, "embedding")
    html = render_page("embed_report.html.j2", build_context(run_dir, metrics, recipe, recipe_text))
    out = run_dir / "report.html"
    write_text(out, html)
    return [out]
