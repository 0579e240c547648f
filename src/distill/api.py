"""The Python API: one function per command, each dispatched through the task table
(:data:`distill.core.task.TASKS`), so that it works for every task or refuses with the reason.

::

    import distill
    recipe = distill.load_recipe("recipe.yaml", ["train.epochs=3"])
    result = distill.run(recipe)           # any task: classification, embedding, causal_lm
    print(result.table_markdown)
    distill.report(result.run_dir)          # the report that fits the run's task

and, without a recipe, a student of your own from a teacher of your own (:func:`distill_module`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.context import keeps_process_state
from distill.core.logs import warnings_once
from distill.core.task import task_of_recipe, task_of_run


@warnings_once
@keeps_process_state
def run(recipe: Any, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
        console: bool = True) -> Any:  # fmt: skip
    """Run the whole flow of ``recipe`` (of any task) into its run directory; return its result
    (``run_dir``, ``table_markdown`` and the task's measurements)."""
    fn = task_of_recipe(recipe).run_function()
    return fn(recipe, resume=resume, overwrite=overwrite, progress=progress, console=console)


@warnings_once
@keeps_process_state
def check(recipe: Any, *, console: bool = True) -> None:
    """Every check ``distill run`` makes before it writes anything (the output places, the data read, the teacher
    loaded and tried against the data, the students built, loss terms, layers, optional packages); raises the
    problem as a :class:`~distill.errors.DistillError`. Nothing is written and nothing is trained."""
    from distill.core.logs import setup_logging
    from distill.core.rundir import check_places

    task = task_of_recipe(recipe)
    setup_logging(None, console=console)
    check_places(recipe.run_dir, getattr(recipe.output, "cache_dir", None))
    task.preflight_function()(recipe)


@warnings_once
@keeps_process_state
def evaluate(run_dir: str | Path, *, console: bool = True) -> Any:
    """Measure the models of a finished run again, side by side; write ``eval.json``."""
    return task_of_run(run_dir).command("eval", run_dir)(run_dir, console=console)


@warnings_once
@keeps_process_state
def compress(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), *, progress: bool = True) -> dict[str, Any]:
    """Prune and/or int8-quantize the student of a finished run as its recipe (with ``overrides``) says."""
    return task_of_run(run_dir).command("compress", run_dir)(run_dir, overrides, progress=progress)


@warnings_once
@keeps_process_state
def export(run_dir: str | Path, formats: list[str] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Export the student(s) of a finished run, parity-checked; returns ``{"files": {kind: path}, ...}``."""
    return task_of_run(run_dir).command("export", run_dir)(run_dir, formats, overrides)


@warnings_once
@keeps_process_state
def bench(run_dir: str | Path, *, memory: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Measure every stage of a finished run side by side in this process."""
    return task_of_run(run_dir).command("bench", run_dir)(run_dir, memory=memory, threads=threads)


@warnings_once
@keeps_process_state
def report(run_dir: str | Path) -> list[Path]:
    """Write the report (and model card) that fits the run's task; return the files written."""
    return list(task_of_run(run_dir).command("report", run_dir)(run_dir))


@keeps_process_state
def layers(recipe: Any) -> dict[str, list[tuple[str, str, Any]]]:
    """The module paths of a recipe's teacher and student, with their types and output shapes."""
    return task_of_recipe(recipe).command("layers")(recipe)


@warnings_once
@keeps_process_state
def distill_module(student: Any, teacher: Any, train: Any, **options: Any) -> Any:
    """Distill your own ``nn.Module`` student from your own teacher on tensors or a DataLoader, without a
    recipe; see :func:`distill.tasks.classification.notebook.distill_module` for the options."""
    from distill.tasks.classification.notebook import distill_module as _distill_module

    return _distill_module(student, teacher, train, **options)


__all__ = ["bench", "check", "compress", "distill_module", "evaluate", "export", "layers", "report", "run"]
