"""distill: turn a large model into a small, fast one by knowledge distillation.

Python API::

    from distill import load_recipe, run
    recipe = load_recipe("recipe.yaml", ["train.epochs=3"])
    result = run(recipe)
    print(result.table_markdown)
"""

__version__ = "0.1.0"

from distill.errors import DistillError  # noqa: E402
from distill.recipe import Recipe, load_recipe  # noqa: E402


def run(recipe: Recipe, **kwargs):  # type: ignore[no-untyped-def]
    """Run the whole flow of ``recipe`` (see :func:`distill.engine.run.run`)."""
    from distill.engine.run import run as _run

    return _run(recipe, **kwargs)


def evaluate(run_dir, **kwargs):  # type: ignore[no-untyped-def]
    """Re-evaluate a finished run directory (see :func:`distill.engine.run.evaluate`)."""
    from distill.engine.evaluate import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


__all__ = ["DistillError", "Recipe", "__version__", "evaluate", "load_recipe", "run"]
