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

from distill.version import __version__  # noqa: E402,F401

import sys  # noqa: E402
import types  # noqa: E402

from distill import api  # noqa: E402
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


class _Distill(types.ModuleType):
    """``distill.export`` is both a function of the API (``distill.export(run_dir)``) and a package
    (``distill.export.onnx``); so are ``compress``, ``bench`` and ``report``. Python's import of such a
    package sets it as an attribute of ``distill``, in place of the function; here that attribute is caught
    and the package made callable (calling it calls the API function; its submodules stay reachable)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _API_PACKAGES and isinstance(value, types.ModuleType):
            value.__class__ = _callable(getattr(api, name))
        super().__setattr__(name, value)


_API_PACKAGES = ("bench", "compress", "export", "report")


def _callable(function):  # type: ignore[no-untyped-def]
    class _Package(types.ModuleType):
        def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return function(*args, **kwargs)

    _Package.__name__ = f"{function.__name__} (package and function)"
    return _Package


sys.modules[__name__].__class__ = _Distill
for _name in _API_PACKAGES:  # a package imported before this line (distill.api's own imports) is made callable now
    if isinstance(sys.modules.get(f"distill.{_name}"), types.ModuleType):
        setattr(sys.modules[__name__], _name, sys.modules[f"distill.{_name}"])


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "losses":  # imported on first use: it loads torch
        import importlib

        return importlib.import_module("distill.losses")
    if name == "Recipe":  # classification's schema, from the task table on first use (its data sources load torch)
        return TASKS["classification"].recipe_class()
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
