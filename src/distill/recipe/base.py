"""The recipe sections every task shares (the run's name and directory, optimizer, schedule, output), each
field documented once in its ``Field(description=...)``; each task's recipe builds on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A recipe section: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RecipeRoot(Section):
    """What every task's recipe shares: a safe run name, the run directory, YAML out.
    Subclasses declare ``name`` and an ``output`` section with ``dir``."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if "/" in v or v in {".", ".."}:
            raise ValueError(f"name must be a plain folder name without '/' (got {v!r})")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


class OptimizerConfig(Section):
    name: Literal["adamw", "adam", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only: momentum.")


class ScheduleConfig(Section):
    name: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="Learning-rate schedule over all steps: 'onecycle', 'cosine' or 'constant'."
    )
    warmup_fraction: float = Field(
        0.3, ge=0, lt=1, description="Share of the steps spent warming up (onecycle's pct_start; cosine's warm-up)."
    )


class OutputConfig(Section):
    dir: str | None = Field(None, description="Run directory (default: runs/<name>).")
    cache_dir: str = Field(
        ".distill-cache", description="Folder of the teacher-output cache, shared across runs."
    )
    overwrite: bool = Field(False, description="Replace an existing run directory instead of refusing.")
    report: bool = Field(
        True,
        description="At the end of the run write the report that fits its task: report.html (plots, tables; "
        "self-contained) and the model card (classification also TensorBoard curves, when tensorboard is installed); "
        "`distill report RUN_DIR` does it later.",
    )


def repeated(names: list[str]) -> list[str]:
    """The names that occur more than once (sorted): for the validators of lists that must be unique."""
    return sorted({n for n in names if names.count(n) > 1})
