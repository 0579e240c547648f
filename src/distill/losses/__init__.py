"""Loss functions and the one registry of methods the recipe validates against.

A registry entry says which inputs a loss needs (``student_logits`` always;
``teacher_logits`` and/or ``labels``), its parameters with defaults and valid
ranges, and a one-line summary that ``distill methods`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from distill.losses.kd import (
    cross_entropy,
    cross_entropy_value_and_grad,
    kd_loss,
    kd_targets,
    kd_value_and_grad,
    log_softmax,
    softmax_with_temperature,
)


@dataclass(frozen=True)
class Param:
    default: Any
    doc: str
    low: float | None = None  # exclusive lower bound (inclusive with low_inclusive)
    low_inclusive: bool = False
    high: float | None = None  # exclusive upper bound


@dataclass(frozen=True)
class LossSpec:
    fn: Callable[..., Any]
    needs: tuple[str, ...]
    summary: str
    params: dict[str, Param] = field(default_factory=dict)
    # Optional fast path (closed-form gradient, no autograd graph for the loss):
    # ``prepare(all_teacher_logits, **params)`` returns per-sample teacher tensors once
    # per run (cached teachers only); ``value_and_grad(student_logits, <labels, or the
    # batch's rows of prepare's tensors>, **params)`` returns (value, d value / d logits)
    # and must match autograd through ``fn`` (tested).
    prepare: Callable[..., dict[str, Any]] | None = None
    value_and_grad: Callable[..., Any] | None = None

    @property
    def needs_teacher(self) -> bool:
        return "teacher_logits" in self.needs

    def check(self, key: str, value: Any) -> str | None:
        """Return a problem with one parameter value, or None when it is fine."""
        p = self.params[key]
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number (got {value!r})"
            if p.low is not None:
                if p.low_inclusive and value < p.low:
                    return f"must be >= {p.low} (got {value!r})"
                if not p.low_inclusive and value <= p.low:
                    return f"must be > {p.low} (got {value!r})"
            if p.high is not None and value >= p.high:
                return f"must be < {p.high} (got {value!r})"
        return None

    def resolved(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {k: p.default for k, p in self.params.items()}
        out.update(params)
        return out


REGISTRY: dict[str, LossSpec] = {
    "ce": LossSpec(
        fn=cross_entropy,
        needs=("labels",),
        summary="cross-entropy on hard labels (the vanilla objective)",
        params={"label_smoothing": Param(0.0, "share of probability spread over all classes", 0.0, True, 1.0)},
        value_and_grad=cross_entropy_value_and_grad,
    ),
    "kd": LossSpec(
        fn=kd_loss,
        needs=("teacher_logits",),
        summary="Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et al. 2015)",
        params={"temperature": Param(4.0, "softening temperature T", 0.0)},
        prepare=kd_targets,
        value_and_grad=kd_value_and_grad,
    ),
}

__all__ = [
    "REGISTRY", "LossSpec", "Param", "cross_entropy", "cross_entropy_value_and_grad", "kd_loss", "kd_targets",
    "kd_value_and_grad", "log_softmax", "softmax_with_temperature",
]  # fmt: skip
