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
    """True when every term's gradient (and, later, its value) can be computed in closed form."""
    for term in objective:
        if term.spec.value_and_grad is None or term.spec.softmax_grad is None:
            return False
        if term.spec.needs_teacher and term.label not in prepared:
            return False
        if "labels" in term.spec.needs and (not labels_all_valid or term.params.get("label_smoothing", 0.0)):
            return False
    return True


class StepGradient:
    """``d total / d student_logits`` of the weighted terms in closed form, without their values (a training
    step whose statistics are computed later by :func:`objective_values`). Every term's gradient is
    ``factor/N · (softmax(s/T) − target)``, so the sum is one softmax per temperature, minus the targets' rows:
    a step on a small student is bound by how many ops it dispatches, and ATen's softmax over a short last
    dimension is slow on a CPU (~20 us for 128 x 10), so it is written out (max, exp, sum, divide)."""

    def __init__(self, objective: list[Term], prepared_all: dict[str, dict[str, Tensor]], device: Any = "cpu") -> None:
        groups: dict[float, float] = {}
        self.teacher_rows: list[tuple[Tensor, float]] = []
        self.label_coef = 0.0
        for term in objective:
            assert term.spec.softmax_grad is not None
            t, factor = term.spec.softmax_grad(**term.params)
            coef = term.weight * factor
            groups[t] = groups.get(t, 0.0) + coef
            if term.spec.needs_teacher:
                assert term.spec.softmax_target is not None
                self.teacher_rows.append((prepared_all[term.label][term.spec.softmax_target].to(device), coef))
            else:
                self.label_coef += coef
        self.groups = sorted(groups.items(), key=lambda kv: kv[0] == 1.0)  # T = 1 last: it may work in place

    @torch.no_grad()
    def __call__(self, logits: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
        n = logits.shape[0]
        z = logits.float()
        z = z - z.amax(-1, keepdim=True)
        out: Tensor | None = None
        for i, (t, coef) in enumerate(self.groups):
            e = z.mul(1.0 / t) if t != 1.0 else (z if i == len(self.groups) - 1 else z.clone())
            e.exp_()
            e.div_(e.sum(-1, keepdim=True))
            out = e.mul_(coef / n) if out is None else out.add_(e, alpha=coef / n)
        assert out is not None
        for rows, coef in self.teacher_rows:
            out.sub_(rows.index_select(0, idx.to(rows.device)), alpha=coef / n)
        if self.label_coef:
            out.scatter_add_(1, labels.unsqueeze(1), torch.full((n, 1), -self.label_coef / n, device=out.device))
        return out


@torch.no_grad()
def objective_values(objective: list[Term], student_logits: Tensor, labels: Tensor,
                     prepared_all: dict[str, dict[str, Tensor]], idx: Tensor) -> list[Tensor]:  # fmt: skip
    """Each term's unweighted value (a mean over the rows) on the rows ``idx`` of the training split, whose
    student logits and labels are given: many steps at once."""
    values = []
    for term in objective:
        vg = term.spec.value_and_grad
        assert vg is not None
        if term.spec.needs_teacher:
            rows = {k: v.index_select(0, idx).to(student_logits.device) for k, v in prepared_all[term.label].items()}
            values.append(vg(student_logits, **rows, **term.params)[0])
        else:
            values.append(vg(student_logits, labels)[0])
    return values


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
