"""The commands that start from a finished text-classification run: ``distill eval`` (load the teacher and the
saved students and measure them again on the test split, side by side), ``distill export`` (the ONNX folders
again, parity-checked) and ``distill report`` (``report.html``: the table, quality against speed, per-class
accuracy, training curves; self-contained)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from distill.core.logs import setup_logging
from distill.core.rundir import run_recipe
from distill.errors import RunDirError
from distill.fsutil import write_json, write_text
from distill.tasks.text_classification import models as M
from distill.tasks.text_classification.folders import count_parameters, folder_bytes, load_text_model
from distill.tasks.text_classification.pipeline import (
    Setup,
    TextResult,
    export_students,
    student_stage,
    time_models,
)
from distill.tasks.text_classification.signal import teacher_logits
from distill.tasks.text_classification.data import load_labelled_texts
from distill.tasks.text_classification.results import quality, render_table


def _loaded(run_dir: str | Path) -> tuple[Any, Path, Setup]:
    """The recipe, the run directory, and its data, teacher and students loaded from the run (nothing trained)."""
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    data = load_labelled_texts(recipe.data)
    if recipe.teacher.kind == "finetune":
        teacher, _ = load_text_model(run_dir / "teacher")
        tpath = run_dir / "teacher"
    else:
        teacher = M.load_hf_classifier(recipe.teacher.path, trust_remote_code=recipe.teacher.trust_remote_code)
        M.reorder_head(teacher, M.check_label_names(teacher, data.label_names, f"teacher {recipe.teacher.path}"),
                       data.label_names)  # fmt: skip
        tpath = Path(recipe.teacher.path)
    for spec in recipe.students:
        if not (run_dir / "students" / f"{spec.name}.train.json").is_file():
            raise RunDirError(f"{run_dir / 'students' / spec.name} is missing: the run did not finish. Fix: finish it "
                              f"with `distill run RECIPE --resume --set output.dir={run_dir}`.")  # fmt: skip
    name = recipe.teacher.name or tpath.name
    return recipe, run_dir, Setup(data, teacher, tpath, name, {})


def evaluate_text_run(run_dir: str | Path, *, console: bool = True) -> TextResult:
    """Measure the teacher and the saved students of a finished run again on its test split; write eval.json."""
    setup_logging(None, console=console)
    recipe, run_dir, setup = _loaded(run_dir)
    logits, _ = teacher_logits(recipe, setup.data, setup.teacher, setup.teacher_path, setup.teacher_name, run_dir,
                               progress=False)  # fmt: skip
    rows = [{"name": f"teacher ({setup.teacher_name})", "kind": "teacher", "role": "teacher",
             "params": count_parameters(setup.teacher), "size_bytes": folder_bytes(setup.teacher_path),
             **quality(logits["test"], setup.data.test.labels, None), "agreement": 1.0}]  # fmt: skip
    models = {"teacher": setup.teacher}
    for spec in recipe.students:
        models[spec.name], row = student_stage(recipe, spec, setup, logits, run_dir, resume=True, progress=False)
        rows.append(row)
    for r in rows:
        r["retention"] = r["accuracy"] / rows[0]["accuracy"] if rows[0]["accuracy"] else None
    time_models(recipe, rows, models, None, setup.data.test.inputs())
    table = render_table(rows)
    write_json(run_dir / "eval.json", {"task": "text_classification", "models": rows})
    if console:
        print(table)
    return TextResult(run_dir=run_dir, rows=rows, table_markdown=table)


def export_text_run(run_dir: str | Path, formats: Any = None, overrides: Any = None) -> dict[str, Any]:
    """Write every student's ONNX folder again (model.onnx, tokenizer.json, config.json), parity-checked."""
    recipe, run_dir, setup = _loaded(run_dir)
    models = {spec.name: load_text_model(run_dir / "students" / spec.name)[0] for spec in recipe.students}
    rows = [{"name": spec.name} for spec in recipe.students]
    export_students(recipe, setup, models, rows, run_dir)
    return {"files": {r["name"]: r["onnx"]["file"] for r in rows}}


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
