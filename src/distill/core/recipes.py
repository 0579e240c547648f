"""A recipe of any task: its schema picked from the one task table by the recipe's ``task`` key (default
``classification``), then read and validated by :mod:`distill.recipe.load`, every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.rundir import stored_recipe
from distill.core.task import get_task
from distill.errors import RecipeError
from distill.recipe.load import apply_overrides, read_recipe_file, validate, with_list_defaults


def validate_recipe(raw: Any, source: str | None = None) -> Any:
    """Validate a raw mapping into the schema of its ``task`` (default ``classification``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(
            [f"the recipe must be a mapping of sections (data, teacher, ...), got {type(raw).__name__}"], source
        )
    return validate(get_task(raw.get("task", "classification"), source).recipe_class(), raw, source)


def load_recipe(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    raw: dict[str, Any] | None = None,
) -> Any:
    """Load a recipe from YAML (or a raw mapping), apply ``--set`` overrides, validate."""
    source = None if path is None else str(path)
    if path is not None:
        raw = read_recipe_file(path)
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise RecipeError([f"the recipe must be a mapping of sections, got {type(raw).__name__}"], source)
    if overrides:
        try:
            schema = get_task(raw.get("task", "classification")).recipe_class()
        except RecipeError:
            schema = None  # an unknown task: validation names it
        raw = apply_overrides(with_list_defaults(schema, raw) if schema else raw, overrides)
    return validate_recipe(raw, source)


def run_recipe(run_dir: str | Path) -> Any:
    """The resolved recipe a run directory holds (any task), with ``output.dir`` pointing at that directory."""
    run_dir = Path(run_dir)
    recipe = validate_recipe(stored_recipe(run_dir), str(run_dir / "recipe.yaml"))
    return recipe.model_copy(update={"output": recipe.output.model_copy(update={"dir": str(run_dir)})})


__all__ = ["load_recipe", "run_recipe", "validate_recipe"]
