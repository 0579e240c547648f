"""The commands that start from a finished language-model run: ``distill eval`` (teacher, student and
baseline measured again side by side on the held-out blocks)."""

from __future__ import annotations

from pathlib import Path


from distill.core.context import run_context
from distill.core.logs import setup_logging
from distill.core.recipes import run_recipe
from distill.errors import RunDirError
from distill.tasks.causal_lm.models import load_causal_lm
from distill.tasks.causal_lm.data import prepare_data
from distill.tasks.causal_lm.evaluate import comparison
from distill.tasks.causal_lm.data import LMRunResult


def evaluate_lm_run(run_dir: str | Path, *, console: bool = True) -> LMRunResult:
    """Load the teacher, student (and baseline) of a finished run and measure them again side by side on its
    held-out blocks; write eval.json and print the table."""
    from distill.fsutil import write_json, write_text

    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    setup_logging(None, console=console)
    with run_context(recipe.train.num_threads):
        data = prepare_data(recipe, run_dir)
        models = {}
        for role in ("teacher", "student", "baseline"):
            folder = Path(recipe.teacher.dir) if role == "teacher" and recipe.teacher.dir else run_dir / role
            if (folder / "config.json").exists():
                models[role] = load_causal_lm(folder, trust_remote_code=recipe.teacher.trust_remote_code)
            elif role != "baseline":
                raise RunDirError(f"{folder} is missing: the run did not finish. Fix: finish it with --resume.")
        table, comp, extra = comparison(models, data, recipe)
    write_json(run_dir / "eval.json", {"task": "causal_lm", "models": comp, **extra})
    write_text(run_dir / "eval.md", table)
    if console:
        print(table)
    return LMRunResult(run_dir, {"comparison": comp, **extra}, table)
