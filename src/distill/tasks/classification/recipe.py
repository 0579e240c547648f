"""The classification recipe (``task: classification``, the default): every section and field, each documented
once in its ``Field(description=...)`` (the sections every task shares are in :mod:`distill.recipe.base`; the
objective's in :mod:`.recipe_terms`, compression's and export's in :mod:`.recipe_stages`, the teacher's in
:mod:`.recipe_teacher`).

``distill.recipe.docs`` turns these descriptions into the example recipe and the field table;
``distill.recipe.load`` validates raw mappings against these models (through ``core.task.TASKS``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from distill.data import FASHION_MNIST_DIR
from distill.recipe.base import OutputConfig, RecipeRoot, Section
from distill.tasks.classification.recipe_stages import (
    CompressConfig,
    ExportConfig,
    ParityConfig,
    PruneConfig,
    QuantizeConfig,
)
from distill.tasks.classification.recipe_teacher import TeacherConfig
from distill.tasks.classification.recipe_train import TrainConfig, check_builder_params
from distill.tasks.classification.recipe_terms import LossTerm, TransferConfig, default_terms

# the whole classification schema is importable from here, the sections of recipe_terms/_stages/_teacher too
__all__ = ["CompressConfig", "DataConfig", "EvalConfig", "ExportConfig", "LossTerm", "ParityConfig", "PruneConfig",
           "QuantizeConfig", "Recipe", "StudentConfig", "TeacherConfig", "TrainConfig", "TransferConfig",
           "default_terms", "example_recipe"]  # fmt: skip


# --------------------------------------------------------------------- data
class DataConfig(Section):
    source: Literal["fashion_mnist", "digits", "table", "image_folder"] = Field(
        "digits",
        description="Where samples come from: 'fashion_mnist' (IDX gzip files), 'digits' "
        "(scikit-learn's bundled 8x8 digits, no set-up), 'table' (a CSV or Parquet file) or 'image_folder' "
        "(a folder with one subfolder of PNG/JPEG/BMP/GIF/WebP images per class, named as the class).",
    )
    image_size: list[int] = Field(
        default_factory=lambda: [32, 32], min_length=2, max_length=2,
        description="image_folder: every image is resized to [height, width] (bilinear).",
    )
    channels: Literal[1, 3] = Field(1, description="image_folder: 1 (grayscale) or 3 (RGB).")
    path: str | None = Field(
        None,
        description="fashion_mnist: folder of the four IDX .gz files (default "
        f"{FASHION_MNIST_DIR}, from Debian's dataset-fashion-mnist); table: the .csv/.parquet file; "
        "image_folder: the folder of class subfolders.",
    )
    label_column: str = Field("label", description="table: the column that holds the class label.")
    feature_columns: list[str] | None = Field(
        None, description="table: feature columns (numeric); default: every column but the label and the id "
        "column (a first column holding the row number, 0, 1, 2, ..., is refused then: set it as data.id_column)."
    )
    id_column: str | None = Field(
        None, description="table: column with a stable, unique sample id (not a feature); default: the column "
        "named `id` if there is one, else the row number."
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training samples held out for validation (seeded)."
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share held out for test, for sources without their own test split (digits, table, image_folder).",
    )
    train_limit: int | None = Field(
        None, gt=0, description="Use only the first N training samples after the seeded shuffle (quick runs)."
    )
    seed: int = Field(0, description="Seed of the train/validation/test split.")

    @model_validator(mode="after")
    def _image_fields(self) -> "DataConfig":
        # compared with the defaults, not with the fields given: a resolved recipe (recipe.yaml of a run,
        # an ensemble member's recipe) writes every field out, defaults included
        fields = type(self).model_fields
        stray = [k for k in ("image_size", "channels")
                 if getattr(self, k) != fields[k].get_default(call_default_factory=True)]  # fmt: skip
        if stray and self.source != "image_folder":
            raise ValueError(f"{', '.join(stray)} apply to source image_folder (source is {self.source!r})")
        if any(d <= 0 for d in self.image_size):
            raise ValueError(f"image_size must be two positive sizes [height, width] (got {self.image_size})")
        return self

    @model_validator(mode="after")
    def _no_leak(self) -> "DataConfig":
        leaked = [c for c in (self.label_column, self.id_column) if c is not None and c in (self.feature_columns or [])]
        if leaked:
            raise ValueError(
                f"feature_columns lists {', '.join(map(repr, leaked))}, the "
                f"{'label' if leaked[0] == self.label_column else 'id'} column: the student (and the teacher's inputs) "
                "would see what it should predict. Fix: remove it from data.feature_columns"
            )
        return self


# ------------------------------------------------------------------- models
class StudentConfig(Section):
    arch: Literal["mlp", "cnn"] = Field("mlp", description="Builder of the student: 'mlp' or 'cnn' (ignored with `factory`).")
    factory: str | None = Field(
        None,
        description="Your own student instead of a built-in: 'package.module:function' returning an nn.Module, "
        "called with `params` (and in_shape/num_classes when it accepts them); it must map a batch of samples to "
        "(N, classes) logits. The module must be importable (installed, or its folder on PYTHONPATH).",
    )
    params: dict[str, Any] = Field(
        default_factory=lambda: {"hidden": [32]},
        description="Arguments of the builder or factory, e.g. mlp: {hidden: [32]}, cnn: {channels: [8, 16], hidden: 32}. "
        "`distill models` lists them.",
    )

    @model_validator(mode="before")
    @classmethod
    def _factory_params(cls, values: Any) -> Any:
        # the built-in default {hidden: [32]} is the mlp's: a factory starts from no parameters
        if isinstance(values, dict) and values.get("factory") and "params" not in values:
            values = {**values, "params": {}}
        return values

    @model_validator(mode="after")
    def _check_params(self) -> "StudentConfig":
        if self.factory is not None:
            if ":" not in self.factory or not all(self.factory.partition(":")[::2]):
                raise ValueError(f"factory must be 'package.module:function' (got {self.factory!r})")
            return self
        check_builder_params(self.arch, self.params)
        return self



# ------------------------------------------------------------------- losses


# --------------------------------------------------------------- eval/output


class EvalConfig(Section):
    baseline: bool = Field(
        True,
        description="Also train the same student on hard labels alone, to show what distillation bought.",
    )
    trees_baseline: Literal["auto"] | bool = Field(
        "auto",
        description="Also fit gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on the "
        "students' labeled training rows and measure them beside the students: the cheap baseline a user would "
        "pick instead of a network. 'auto': for tables (data.source table).",
    )
    allow_chance_teacher: bool = Field(
        False,
        description="Go on when the teacher scores no better than chance on the validation split (the run stops "
        "with the numbers otherwise: such a teacher usually sees its features or classes in another order).",
    )
    baseline_train: TrainConfig | None = Field(
        None,
        description="Training settings of that baseline (default: the `train` section). Tune them on the "
        "validation split so that the comparison is with the best hard-label student, not a handicapped one.",
    )
    batch_size: int = Field(1024, gt=0, description="Batch size for computing accuracy.")
    latency_runs: int = Field(200, gt=0, description="Timed batch-1 calls per model (median reported).")
    warmup_runs: int = Field(20, ge=0, description="Untimed calls before timing.")
    throughput_batch: int = Field(256, gt=0, description="Batch size for the throughput measurement.")
    throughput_runs: int = Field(20, gt=0, description="Timed large-batch calls per model.")


class Recipe(RecipeRoot):
    task: Literal["classification"] = Field(
        "classification",
        description="What is distilled: 'classification' (this schema), 'embedding' (sentence embeddings) or "
        "'causal_lm' (language models); each task has its own sections (`distill recipe --example --task T`).",
    )
    name: str = Field("run", min_length=1, description="Name of the run (default folder runs/<name>).")
    data: DataConfig = Field(default_factory=DataConfig, description="The data.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The large model.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="The small model.")
    transfer: TransferConfig = Field(
        default_factory=TransferConfig,
        description="What the students learn from: the teacher always trains on the full training split.",
    )
    distill: list[LossTerm] = Field(
        default_factory=default_terms,
        min_length=1,
        description="The objective: a weighted sum of loss terms, each `{loss: NAME, weight: W, ...params}`.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="How the student is trained.")
    compress: CompressConfig | None = Field(
        None, description="Optional stage after distillation (also `distill compress RUN_DIR`): prune, quantize."
    )
    export: ExportConfig | None = Field(
        None, description="Optional last stage (also `distill export RUN_DIR`): ONNX/torch/HF files, parity-checked."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation and measurement.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where results go.")

    @model_validator(mode="after")
    def _table_teacher_arch(self) -> "Recipe":
        """A torch teacher left at the default builder (a CNN, for images) is an MLP on a table: a CNN cannot
        read rows of features. An arch the recipe names is kept (and a CNN on a table refused when it is built)."""
        t = self.teacher
        if self.data.source == "table" and t.kind == "torch" and t.factory is None and "arch" not in t.model_fields_set:
            object.__setattr__(t, "arch", "mlp")
        return self

    @model_validator(mode="after")
    def _check_views(self) -> "Recipe":
        from distill.losses import REGISTRY

        if self.distill and all(t.weight == 0 for t in self.distill):
            raise ValueError(
                "distill: every term has weight 0, so the student would learn nothing. Fix: give at least one term "
                "a weight > 0 (a term with weight 0 is simply off)"
            )

        viewing = [t.loss for t in self.distill if REGISTRY[t.loss].views]
        if len(viewing) > 1:
            raise ValueError(
                f"distill: at most one term may set the training views, found {len(viewing)} ({', '.join(viewing)}). "
                "Fix: keep one."
            )
        term = next((t for t in self.distill if REGISTRY[t.loss].views), None)
        if term is not None and REGISTRY[term.loss].resolved(term.params).get("mixup_alpha", 0) > 0:
            labelled = [t.loss for t in self.distill if "labels" in REGISTRY[t.loss].needs and t.weight > 0]
            if labelled:
                raise ValueError(
                    f"distill: {term.loss!r} trains on mixed-up views that have no single hard label, so it cannot be "
                    f"combined with {', '.join(map(repr, labelled))}. Fix: drop those terms, or set mixup_alpha: 0 "
                    "(shifted views keep their labels)"
                )
        return self

    # ------------------------------------------------------------ helpers
    @property
    def teacher_train(self) -> TrainConfig:
        return self.teacher.train if self.teacher.train is not None else self.train

    @classmethod
    def raw_defaults(cls) -> dict[str, Any]:
        """The defaults that ``--set`` overrides address by index (``distill.0.weight=0``) when the recipe leaves
        them out, as raw values."""
        return {"distill": [t.model_dump() for t in default_terms()]}


def example_recipe() -> dict[str, Any]:
    """The documented example: a CNN teacher distilled into a tiny MLP on Fashion-MNIST."""
    return {
        "name": "fashion-mnist",
        "data": {"source": "fashion_mnist", "path": FASHION_MNIST_DIR, "val_fraction": 5000 / 60000, "seed": 0},
        "teacher": {
            "arch": "cnn",
            "params": {"channels": [16, 32, 64], "hidden": 384, "dropout": 0.3},
            "train": {"epochs": 10, "batch_size": 128, "optimizer": {"name": "adam", "lr": 3e-3}},
            "license": "MIT",
        },
        "student": {"arch": "mlp", "params": {"hidden": [32]}},
        "distill": [{"loss": "kd", "weight": 0.5, "temperature": 2.0}, {"loss": "ce", "weight": 0.5}],
        "train": {"epochs": 30, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0},
        "eval": {"baseline": True},
    }
