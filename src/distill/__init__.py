"""distill: turn a large model into a small, fast one by knowledge distillation.

Python API (every task: classification, embedding, causal_lm)::

    import distill
    recipe = distill.load_recipe("recipe.yaml", ["train.epochs=3"])
    result = distill.run(recipe)
    print(result.table_markdown)
    distill.report(result.run_dir)

Your own student from your own teacher, on tensors, without a recipe::

    result = distill.distill_module(student, teacher, (x, y), val=(xv, yv), epochs=5)

The losses are pure functions in :mod:`distill.losses`.
"""

__version__ = "0.1.0"

from distill.api import bench, check, compress, distill_module, evaluate, export, layers, report, run  # noqa: E402
from distill.core.task import TASKS  # noqa: E402
from distill.errors import (  # noqa: E402
    DataError,
    DistillError,
    ExportError,
    ModelError,
    RecipeError,
    RunDirError,
    TeacherError,
    TrainingError,
    UnsupportedError,
)
from distill.core.recipes import load_recipe, validate_recipe  # noqa: E402

__all__ = [
    "TASKS", "DataError", "DistillError", "ExportError", "ModelError", "Recipe", "RecipeError", "RunDirError",
    "TeacherError", "TrainingError", "UnsupportedError", "__version__", "bench", "check", "compress", "distill_module",
    "evaluate", "export", "layers", "load_recipe", "losses", "report", "run", "validate_recipe",
]  # fmt: skip


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "losses":  # imported on first use: it loads torch
        import importlib

        return importlib.import_module("distill.losses")
    if name == "Recipe":  # classification's schema, from the task table on first use (its data sources load torch)
        return TASKS["classification"].recipe_class()
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
