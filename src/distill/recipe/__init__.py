"""The recipe: one YAML file that describes a run, typed and validated.

Each task's schema lives in its package (``tasks/<task>/recipe.py``, named by ``core.task.TASKS``) and
builds on the sections every task shares, :mod:`distill.recipe.base`; :mod:`distill.core.recipes` picks the
schema of a recipe by its ``task`` key and validates it with :mod:`distill.recipe.load`. Every field is documented once, in its
``Field(description=...)``; the example printed by ``distill recipe --example`` and the README's field table
are generated from these descriptions.

Validation collects every problem and raises one :class:`RecipeError` whose
lines name the field as written (``train.batch_size``, ``distill[0].temperature``),
what was wrong, and how to fix it.
"""


from distill.recipe.base import OptimizerConfig, OutputConfig, RecipeRoot, ScheduleConfig, Section
from distill.recipe.load import apply_overrides

__all__ = ["OptimizerConfig", "OutputConfig", "RecipeRoot", "ScheduleConfig", "Section", "apply_overrides"]

# A recipe of any task is loaded by distill.core.recipes (load_recipe, validate_recipe: the schema picked by the
# recipe's `task` key); this package knows no task, so it imports nothing above it.
