"""The recipe: one YAML file that describes a run, typed and validated.

Every field is documented once, here, in its ``Field(description=...)``; the
example printed by ``distill recipe --example`` and the README's field table
are generated from these descriptions.

Validation collects every problem and raises one :class:`RecipeError` whose
lines name the field as written (``train.batch_size``, ``distill[0].temperature``),
what was wrong, and how to fix it.
"""


from distill.recipe.docs import example_recipe, example_yaml, fields_markdown
from distill.recipe.load import apply_overrides, load_recipe, validate_recipe
from distill.recipe.schema import (
    FASHION_MNIST_DIR,
    CompressConfig,
    DataConfig,
    EvalConfig,
    ExportConfig,
    LossTerm,
    OptimizerConfig,
    OutputConfig,
    ParityConfig,
    PruneConfig,
    QuantizeConfig,
    Recipe,
    ScheduleConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    TransferConfig,
)

__all__ = [
    "FASHION_MNIST_DIR", "CompressConfig", "DataConfig", "EvalConfig", "ExportConfig", "LossTerm", "OptimizerConfig",
    "OutputConfig", "ParityConfig", "PruneConfig", "QuantizeConfig", "Recipe", "ScheduleConfig", "StudentConfig",
    "TeacherConfig", "TrainConfig", "TransferConfig", "apply_overrides", "example_recipe", "example_yaml",
    "fields_markdown", "load_recipe", "validate_recipe",
]  # fmt: skip
