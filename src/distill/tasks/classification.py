"""Classification: batched prediction, accuracy, and the weighted objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distill.losses import REGISTRY, LossSpec


@dataclass(frozen=True)
class Term:
    """One resolved term of the objective: ``weight · spec.fn(inputs, **params)``."""

    label: str
    spec: LossSpec
    weight: float
    params: dict[str, Any]


def build_objective(terms: list[Any]) -> list[Term]:
    """Turn recipe loss terms (objects with ``loss``, ``weight``, ``params``) into :class:`Term`s."""
    out: list[Term] = []
    seen: dict[str, int] = {}
    for t in terms:
        spec = REGISTRY[t.loss]
        n = seen.get(t.loss, 0)
        seen[t.loss] = n + 1
        label = t.loss if n == 0 else f"{t.loss}#{n + 1}"
        out.append(Term(label, spec, float(t.weight), spec.resolved(t.params)))
    return out


def needs_teacher(objective: list[Term]) -> bool:
    return any(t.spec.needs_teacher and t.weight > 0 for t in objective)


def compute_objective(
    objective: list[Term], student_logits: Tensor, labels: Tensor, teacher_logits: Tensor | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return ``(total, {label: unweighted value})``."""
    values: dict[str, Tensor] = {}
    total: Tensor | None = None
    for term in objective:
        if term.spec.needs_teacher:
            if teacher_logits is None:
                raise RuntimeError(f"loss {term.label!r} needs teacher outputs but none were given")
            value = term.spec.fn(student_logits, teacher_logits, **term.params)
        else:
            value = term.spec.fn(student_logits, labels, **term.params)
        values[term.label] = value
        weighted = value * term.weight
        total = weighted if total is None else total + weighted
    assert total is not None
    return total, values


@torch.inference_mode()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits of ``model`` (in eval mode) for all rows of ``x``: ``(N, C)`` float32."""
    was = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i : i + batch_size])
            if hasattr(out, "logits"):
                out = out.logits
            outs.append(out.float())
        return torch.cat(outs) if outs else torch.empty(0)
    finally:
        model.train(was)


def accuracy_from_logits(logits: Tensor, labels: Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return float((logits.argmax(dim=-1) == labels).float().mean())


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    return accuracy_from_logits(predict_logits(model, x, batch_size), y)
