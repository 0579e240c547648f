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
    """Turn recipe loss terms (objects with ``loss``, ``weight``, ``params``) into :class:`Term`s; a term with
    weight 0 is off (left out: it needs no teacher outputs, features or views)."""
    out: list[Term] = []
    seen: dict[str, int] = {}
    for t in terms:
        if float(t.weight) == 0:
            continue
        spec = REGISTRY[t.loss]
        n = seen.get(t.loss, 0)
        seen[t.loss] = n + 1
        label = t.loss if n == 0 else f"{t.loss}#{n + 1}"
        out.append(Term(label, spec, float(t.weight), spec.resolved(t.params)))
    return out


def needs_teacher(objective: list[Term]) -> bool:
    """True when some term needs the teacher's logits."""
    return any("teacher_logits" in t.spec.needs and t.weight > 0 for t in objective)


def view_term(objective: list[Term]) -> Term | None:
    """The term (at most one, the recipe checks) whose parameters define the training views, if any."""
    return next((t for t in objective if t.spec.views and t.weight > 0), None)


def needs_teacher_features(objective: list[Term]) -> bool:
    return any("teacher_features" in t.spec.needs and t.weight > 0 for t in objective)


def prepare_teacher_targets(objective: list[Term], teacher_logits: Tensor) -> dict[str, dict[str, Tensor]]:
    """Per-sample teacher tensors for every term that has a closed-form path (once per run)."""
    out: dict[str, dict[str, Tensor]] = {}
    for term in objective:
        if term.spec.needs_teacher and term.spec.prepare is not None and term.spec.value_and_grad is not None:
            out[term.label] = term.spec.prepare(teacher_logits, **term.params)
    return out


def closed_form_available(objective: list[Term], prepared: dict[str, Any], labels_all_valid: bool) -> bool:
    """True when every term's value and gradient can be computed in closed form."""
    for term in objective:
        if term.spec.value_and_grad is None:
            return False
        if term.spec.needs_teacher and term.label not in prepared:
            return False
        if "labels" in term.spec.needs and (not labels_all_valid or term.params.get("label_smoothing", 0.0)):
            return False
    return True


@torch.no_grad()
def objective_value_and_grad(
    objective: list[Term], student_logits: Tensor, labels: Tensor, prepared: dict[str, dict[str, Tensor]]
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """``(total, {label: unweighted value}, d total / d student_logits)`` without autograd.

    ``prepared`` holds this batch's rows of :func:`prepare_teacher_targets`. Only valid
    when :func:`closed_form_available` says so.
    """
    values: dict[str, Tensor] = {}
    total: Tensor | None = None
    grad: Tensor | None = None
    for term in objective:
        vg = term.spec.value_and_grad
        assert vg is not None
        if term.spec.needs_teacher:
            value, g = vg(student_logits, **prepared[term.label], **term.params)
        else:
            value, g = vg(student_logits, labels)
        values[term.label] = value
        if term.weight != 1.0:
            value, g = value * term.weight, g.mul_(term.weight)
        total = value if total is None else total + value
        grad = g if grad is None else grad.add_(g)
    assert total is not None and grad is not None
    return total, values, grad


def call_term(
    term: Term,
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None,
    student_features: dict[str, Tensor] | None = None,
    teacher_features: dict[str, Tensor] | None = None,
    adapters: Any = None,
) -> Tensor:
    """The unweighted value of one term, dispatched on what its loss needs.

    Calling conventions (``spec.needs``): ``("labels",)`` → ``fn(s, labels)``;
    ``("teacher_logits",)`` → ``fn(s, t)``; ``("teacher_logits", "labels")`` →
    ``fn(s, t, labels)``; ``("student_features", "teacher_features")`` →
    ``fn(adapter(student_feat), teacher_feat)`` for the layers the term names.
    """
    from distill.tasks.classification.features import LAYER_PARAMS

    needs = term.spec.needs
    params = {k: v for k, v in term.params.items() if k not in LAYER_PARAMS}
    if "teacher_features" in needs:
        if student_features is None or teacher_features is None:
            raise RuntimeError(f"loss {term.label!r} needs features but none were captured")
        s_f = student_features[term.params["student_layer"]]
        t_f = teacher_features[term.params["teacher_layer"]]
        key = term.label.replace("#", "_")
        if adapters is not None and key in adapters:
            s_f = adapters[key](s_f)
        return term.spec.fn(s_f, t_f, **params)
    if "teacher_logits" in needs:
        if teacher_logits is None:
            raise RuntimeError(f"loss {term.label!r} needs teacher outputs but none were given")
        if "labels" in needs:
            return term.spec.fn(student_logits, teacher_logits, labels, **params)
        return term.spec.fn(student_logits, teacher_logits, **params)
    return term.spec.fn(student_logits, labels, **params)


def compute_objective(
    objective: list[Term],
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None,
    student_features: dict[str, Tensor] | None = None,
    teacher_features: dict[str, Tensor] | None = None,
    adapters: Any = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return ``(total, {label: unweighted value})`` through autograd (the reference path)."""
    values: dict[str, Tensor] = {}
    total: Tensor | None = None
    for term in objective:
        value = call_term(term, student_logits, labels, teacher_logits, student_features, teacher_features, adapters)
        values[term.label] = value
        weighted = value if term.weight == 1.0 else value * term.weight
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


def class_bias_correction(
    val_logits: Tensor, val_y: Tensor, test_logits: Tensor, test_y: Tensor, classes: list[int]
) -> dict[str, Any]:
    """Hinton's correction for classes the student never saw: add one bias to their logits, the
    value (from a grid 0..10) that maximises accuracy on the validation split; report test accuracy
    on those classes and overall, before and after."""
    grid = torch.linspace(0.0, 10.0, 81)
    cls = torch.tensor(classes, dtype=torch.long)

    def shifted(logits: Tensor, b: float) -> Tensor:
        out = logits.clone()
        out[:, cls] += b
        return out

    def acc(logits: Tensor, y: Tensor, mask: Tensor | None = None) -> float:
        hit = logits.argmax(-1) == y
        return float(hit[mask].float().mean()) if mask is not None and mask.any() else float(hit.float().mean())

    val_scores = [acc(shifted(val_logits, float(b)), val_y) for b in grid]
    best = float(grid[int(torch.tensor(val_scores).argmax())])
    in_cls = torch.isin(test_y, cls)
    return {
        "classes": classes,
        "bias": best,
        "test_acc_on_classes_before": acc(test_logits, test_y, in_cls),
        "test_acc_on_classes_after": acc(shifted(test_logits, best), test_y, in_cls),
        "test_acc_before": acc(test_logits, test_y),
        "test_acc_after": acc(shifted(test_logits, best), test_y),
    }
