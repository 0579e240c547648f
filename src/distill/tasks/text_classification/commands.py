"""The commands that start from a finished text-classification run: ``distill eval`` (load the teacher and the
saved students and measure them again on the test split, side by side), ``distill export`` (the ONNX folders
again, parity-checked) (``distill report`` is report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.logs import setup_logging
from distill.core.recipes import run_recipe
from distill.core.rundir import check_run_files, folder_files
from distill.errors import RunDirError
from distill.core.fsutil import write_json
from distill.tasks.text_classification.folders import count_parameters, folder_bytes, load_text_model
from distill.tasks.text_classification.models import KIND_FILE
from distill.tasks.text_classification.measure import export_students, time_models
from distill.tasks.text_classification.pipeline import Setup, TextResult, load_teacher, student_stage
from distill.tasks.text_classification.signal import teacher_logits
from distill.tasks.text_classification.data import load_labelled_texts
from distill.tasks.text_classification.transfer import with_transfer
from distill.tasks.text_classification.results import quality, render_table


def _loaded(run_dir: str | Path) -> tuple[Any, Path, Setup]:
    """The recipe, the run directory, and its data, teacher and students loaded from the run (nothing trained)."""
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    for spec in recipe.students:
        if not (run_dir / "students" / f"{spec.name}.train.json").is_file():
            raise RunDirError(f"{run_dir / 'students' / spec.name} is missing: the run did not finish. Fix: finish it "
                              f"with `distill run RECIPE --resume --set output.dir={run_dir}`.")  # fmt: skip
    check_run_files(run_dir, run_files(recipe, run_dir))
    data = with_transfer(load_labelled_texts(recipe.data), recipe.data)
    if recipe.teacher.kind == "finetune":
        teacher, _ = load_text_model(run_dir / "teacher")
        tpath = run_dir / "teacher"
    else:
        teacher, tpath = load_teacher(recipe, data.label_names)  # its labels matched as the run matched them
    name = recipe.teacher.name or tpath.name
    return recipe, run_dir, Setup(data, teacher, tpath, name, {})


def run_files(recipe: Any, run_dir: Path) -> list[Path]:
    """The files of a finished run that eval and export read: the fine-tuned teacher's folder, each student's
    (its weights, its config or KIND_FILE, its tokenizer)."""
    files = folder_files(run_dir / "teacher", ["config.json", "tokenizer_config.json"]) if recipe.teacher.kind == "finetune" else []
    for spec in recipe.students:
        own = [KIND_FILE, "model.pt"] if spec.kind in ("static", "factory") else ["config.json"]
        files += folder_files(run_dir / "students" / spec.name, [*own, "tokenizer_config.json"])
    return files


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
    """Write every student's ONNX folder again (model.onnx, tokenizer.json, config.json), parity-checked; with
    ``--set export.int8=true`` (only ``export.*`` may be set here) its int8 folder too."""
    from distill.core.recipes import validate_recipe
    from distill.errors import UnsupportedError
    from distill.recipe import apply_overrides

    wrong = sorted(set(formats or ["onnx"]) - {"onnx"})
    if wrong:
        raise UnsupportedError(f"--format {', '.join(wrong)}: a text classification run's students are saved as "
                               "folders (RUN/students/NAME) and exported as ONNX folders; only --format onnx applies.")  # fmt: skip
    others = [o for o in overrides or () if not str(o).startswith("export.")]
    if others:
        raise UnsupportedError(f"--set {', '.join(others)}: distill export of a finished run takes export.* settings "
                               "only (the rest made the models it exports). Fix: rerun the recipe with them.")  # fmt: skip
    recipe, run_dir, setup = _loaded(run_dir)
    if overrides:
        recipe = validate_recipe(apply_overrides(recipe.to_dict(), list(overrides)), "--set")
    models = {spec.name: load_text_model(run_dir / "students" / spec.name)[0] for spec in recipe.students}
    rows = [{"name": spec.name} for spec in recipe.students]
    export_students(recipe, setup, models, rows, run_dir)
    out: dict[str, Any] = {"files": {r["name"]: r["onnx"]["file"] for r in rows}}
    int8 = {r["name"]: r["onnx_int8"] for r in rows if r.get("onnx_int8")}
    if int8:
        out["int8"] = int8
    return out
