"""The classification recipe's training section (``train``, also the teacher's and the baseline's ``train``) and
the check of a builder's parameters, which the teacher and student sections share."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, field_validator

from distill.recipe.base import OptimizerConfig, ScheduleConfig, Section

__all__ = ["TrainConfig", "check_builder_params"]


class TrainConfig(Section):
    epochs: int = Field(10, gt=0, description="Passes over the training split.")
    batch_size: int = Field(128, gt=0, description="Samples per optimizer step (per process).")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimizer settings.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    seed: int = Field(0, description="Seed of initialisation, data order and dropout.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Mixed precision through Accelerate: 'fp32' (none), 'bf16', or 'fp16' (GPU only)."
    )
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value (off when null).")
    augment: Literal["none", "flip", "shift", "flip+shift"] = Field(
        "none",
        description="Random augmentation of image training batches: 'flip' (horizontal, where the data allows), "
        "'shift' (up to 2 pixels), 'flip+shift' (true), or 'none' (false). For the student this means the teacher "
        "runs online on every batch (its outputs cannot be cached): much slower.",
    )

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_bool(cls, v: Any) -> Any:
        return {True: "flip+shift", False: "none"}.get(v, v) if isinstance(v, bool) else v
    num_threads: int | None = Field(
        None, gt=0, description="torch CPU threads (default: torch's own choice)."
    )


def check_builder_params(arch: str, params: dict[str, Any]) -> None:
    """A builder's ``params`` name only its parameters (the builder's signature is the source of truth)."""
    from distill.models import BUILDERS  # lazy: it loads torch

    fn = BUILDERS[arch]
    sig = inspect.signature(fn)
    reserved = {"in_shape", "num_classes"}
    allowed = [p for p in sig.parameters if p not in reserved]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"builder {arch!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(allowed)}"
        )
