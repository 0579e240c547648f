"""The commands that start from a finished language-model run: ``distill eval`` (teacher, student and
baseline measured again side by side on the held-out blocks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from distill.core.context import run_context
from distill.core.logs import setup_logging
from distill.core.recipes import run_recipe
from distill.tasks.causal_lm.models import load_causal_lm
from distill.core.rundir import check_run_files, folder_files
from distill.tasks.causal_lm.data import prepare_data
from distill.tasks.causal_lm.evaluate import comparison
from distill.tasks.causal_lm.data import LMRunResult




def _model_folders(recipe: Any, run_dir: Path) -> dict[str, Path]:
    """The model folders a finished run's eval reads (teacher, student, baseline when the recipe trained one),
    each checked for its config and weights, and the run's tokenizer when it was trained in the run."""
    folders = {"teacher": Path(recipe.teacher.dir) if recipe.teacher.dir else run_dir / "teacher",
               "student": run_dir / "student"}  # fmt: skip
    if recipe.eval.baseline:
        folders["baseline"] = run_dir / "baseline"
    files: list[Path] = []
    for role, folder in folders.items():
        if role == "teacher" and recipe.teacher.dir:
            continue  # the given teacher's folder is not the run's: load_causal_lm says what is wrong with it
        files += folder_files(folder, ["config.json"])
    if not (recipe.data.tokenizer.dir or recipe.teacher.dir):
        files.append(run_dir / "tokenizer" / "tokenizer.json")
    check_run_files(run_dir, files, "eval")
    return folders


def evaluate_lm_run(run_dir: str | Path, *, console: bool = True) -> LMRunResult:
    """Load the teacher, student (and baseline) of a finished run and measure them again side by side on its
    held-out blocks; write eval.json and print the table."""
    from distill.core.fsutil import write_json, write_text

    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    setup_logging(None, console=console)
    folders = _model_folders(recipe, run_dir)  # every file it reads is there before anything runs
    with run_context(recipe.train.num_threads):
        data = prepare_data(recipe, run_dir, finished=True)
        models = {role: load_causal_lm(folder, trust_remote_code=recipe.teacher.trust_remote_code)
                  for role, folder in folders.items()}  # fmt: skip
        table, comp, extra = comparison(models, data, recipe)
    write_json(run_dir / "eval.json", {"task": "causal_lm", "models": comp, **extra})
    write_text(run_dir / "eval.md", table)
    if console:
        print(table)
    return LMRunResult(run_dir, {"comparison": comp, **extra}, table)
