"""Loss functions and the one registry of methods the recipe validates against.

A registry entry says which inputs a loss needs (``student_logits`` always;
``teacher_logits`` and/or ``labels``), its parameters with defaults and valid
ranges, and a one-line summary that ``distill methods`` prints.

Calling convention of ``spec.fn``, by ``spec.needs``:

- ``("labels",)``: ``fn(student_logits, labels, **params)``
- ``("teacher_logits",)``: ``fn(student_logits, teacher_logits, **params)``
- ``("teacher_logits", "labels")``: ``fn(student_logits, teacher_logits, labels, **params)``
  (e.g. ``dkd``: both the teacher's outputs and the ground truth)
- ``("student_features", "teacher_features")``: ``fn(student_feat, teacher_feat, **params)`` on the
  outputs of the layers named by the term's ``student_layer`` / ``teacher_layer`` (module paths),
  captured with forward hooks; with ``adapter=True`` a learned 1×1 conv / linear maps the student's
  features to the teacher's shape first.

A spec with ``views`` (function matching) also changes the inputs: ``views`` names the
term's parameters that define them, and every step the training loop replaces the batch by
``distill.data.augment.shift_mixup_views(x, generator, **those parameters)`` and runs the
teacher online on it, so that teacher and student see the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from distill.losses.embedding import attention_loss as attention_map_loss
from distill.losses.embedding import cosine_loss, hidden_loss, mse_loss, relational_loss
from distill.losses.feature import attention_transfer_loss, contrastive_loss, hint_loss, rkd_loss
from distill.losses.function_matching import function_matching_loss
from distill.losses.kd import (
    cross_entropy,
    cross_entropy_value_and_grad,
    kd_loss,
    kd_targets,
    kd_value_and_grad,
    log_softmax,
    softmax_with_temperature,
)
from distill.losses.logit import dist_loss, dkd_loss, logit_mse_loss, ls_kd_loss, standardize_logits
from distill.losses.token import (
    TOKEN_LOSSES,
    forward_kl,
    generalized_jsd,
    per_token_divergence,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    token_loss,
    total_variation,
    true_kl,
)


@dataclass(frozen=True)
class Param:
    default: Any
    doc: str
    low: float | None = None  # exclusive lower bound (inclusive with low_inclusive)
    low_inclusive: bool = False
    high: float | None = None  # exclusive upper bound
    integer: bool = False  # a whole number (e.g. pixels)
    required_text: bool = False  # a module path the term must name (student_layer, teacher_layer)


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
    # The step's share of the fast path, for a term whose value is a mean over the rows and whose gradient is
    # ``factor/N · (softmax(s/T) − target)``, the target being one-hot labels or the rows of the prepared tensor
    # named ``softmax_target``: ``softmax_grad(**params)`` returns ``(T, factor)``. The step adds up the terms'
    # gradients in one pass (one softmax per temperature); the loop computes the values later, many steps
    # at once, with ``value_and_grad`` on the rows of those steps.
    softmax_grad: Callable[..., tuple[float, float]] | None = None
    softmax_target: str | None = None
    adapter: bool = False  # feature losses: learn a projection when student/teacher shapes differ
    # input views (function matching): the parameters that define the views the loop builds for the
    # student and the (then online) teacher alike; empty: the batch as it is
    views: tuple[str, ...] = ()

    @property
    def required(self) -> list[str]:
        return [k for k, p in self.params.items() if p.required_text]

    @property
    def needs_teacher(self) -> bool:
        return "teacher_logits" in self.needs

    def check(self, key: str, value: Any) -> str | None:
        """Return a problem with one parameter value, or None when it is fine."""
        p = self.params[key]
        if p.required_text:
            if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
                return f"must be a module path such as '3' or 'features.2' (got {value!r})"
            return None
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number (got {value!r})"
            if p.integer and int(value) != value:
                return f"must be a whole number (got {value!r})"
            if p.low is not None:
                if p.low_inclusive and value < p.low:
                    return f"must be >= {p.low} (got {value!r})"
                if not p.low_inclusive and value <= p.low:
                    return f"must be > {p.low} (got {value!r})"
            if p.high is not None and value >= p.high:
                return f"must be < {p.high} (got {value!r})"
        return None

    def resolved(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {k: p.default for k, p in self.params.items() if not p.required_text}
        out.update({k: (str(v) if self.params[k].required_text else v) for k, v in params.items()})
        return out


# the two module paths every feature loss takes (`distill layers RECIPE` lists them)
_LAYERS = {
    "student_layer": Param(None, "student module path, e.g. '2'", required_text=True),
    "teacher_layer": Param(None, "teacher module path, e.g. '13'", required_text=True),
}

REGISTRY: dict[str, LossSpec] = {
    "ce": LossSpec(
        fn=cross_entropy,
        needs=("labels",),
        summary="cross-entropy on hard labels (the vanilla objective)",
        params={"label_smoothing": Param(0.0, "share of probability spread over all classes", 0.0, True, 1.0)},
        value_and_grad=cross_entropy_value_and_grad,
        softmax_grad=lambda **_: (1.0, 1.0),  # (q − onehot(y)) / N
    ),
    "kd": LossSpec(
        fn=kd_loss,
        needs=("teacher_logits",),
        summary="Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et al. 2015)",
        params={"temperature": Param(4.0, "softening temperature T", 0.0)},
        prepare=kd_targets,
        value_and_grad=kd_value_and_grad,
        softmax_grad=lambda temperature=4.0: (float(temperature), float(temperature)),  # T/N · (q_T − p_T)
        softmax_target="probs",
    ),
    "dkd": LossSpec(
        fn=dkd_loss,
        needs=("teacher_logits", "labels"),
        summary="Decoupled KD: T² · (alpha · TCKD + beta · NCKD), target vs non-target classes (Zhao et al. 2022)",
        params={
            "alpha": Param(1.0, "weight of TCKD (target vs non-target, binary KL)", 0.0, True),
            "beta": Param(8.0, "weight of NCKD (KL among the non-target classes)", 0.0, True),
            "temperature": Param(4.0, "softening temperature T", 0.0),
        },
    ),
    "dist": LossSpec(
        fn=dist_loss,
        needs=("teacher_logits",),
        summary="DIST: T² · (beta · (1 − Pearson per sample) + gamma · (1 − Pearson per class)), Huang et al. 2022",
        params={
            "beta": Param(1.0, "weight of the inter-class relation (per-sample Pearson)", 0.0, True),
            "gamma": Param(1.0, "weight of the intra-class relation (per-class Pearson over the batch)", 0.0, True),
            "temperature": Param(1.0, "softening temperature T", 0.0),
        },
    ),
    "ls_kd": LossSpec(
        fn=ls_kd_loss,
        needs=("teacher_logits",),
        summary="KD on z-scored logits: T² · KL(softmax(ẑ_t/T) ‖ softmax(ẑ_s/T)) (Sun et al. 2024)",
        params={"temperature": Param(2.0, "softening temperature T on the standardised logits", 0.0)},
    ),
    "logit_mse": LossSpec(
        fn=logit_mse_loss,
        needs=("teacher_logits",),
        summary="logit regression: mean squared difference of raw logits, the shallow-student mimic loss "
        "(Ba & Caruana 2014)",
        params={"center": Param(0, "1: subtract each row's mean logit first (softmax ignores it); 0: raw logits",
                                0.0, True, 2.0, True)},
    ),
    "fm": LossSpec(
        fn=function_matching_loss,
        needs=("teacher_logits",),
        summary="function matching / consistent teaching: KD where teacher and student see the same shifted, "
        "mixed-up view of each batch; the teacher runs online (Beyer et al. 2022)",
        params={
            "temperature": Param(1.0, "softening temperature T", 0.0),
            "mixup_alpha": Param(1.0, "mixup of pairs of the batch, lambda ~ Beta(a, a) per sample (0: off)", 0.0, True),
            "shift": Param(2, "random shift of up to this many pixels (images; 0 for tables)", 0.0, True, 64.0, True),
            "flip": Param(0, "1: mirror half of the images left-right (images whose classes allow it); 0: off", 0.0,
                          True, 2.0, True),
        },
        views=("shift", "mixup_alpha", "flip"),
    ),
    "hint": LossSpec(
        fn=hint_loss,
        needs=("student_features", "teacher_features"),
        summary="FitNets hint: MSE between a student layer (through a learned adapter) and a teacher layer "
        "(Romero et al. 2015)",
        params=dict(_LAYERS),
        adapter=True,
    ),
    "at": LossSpec(
        fn=attention_transfer_loss,
        needs=("student_features", "teacher_features"),
        summary="attention transfer: match normalised spatial attention maps mean_c |F|^p (Zagoruyko & Komodakis 2017)",
        params={**_LAYERS, "p": Param(2.0, "exponent of the attention map", 0.0)},
    ),
    "crd": LossSpec(
        fn=contrastive_loss,
        needs=("student_features", "teacher_features"),
        summary="contrastive representation distillation: each student embedding picks its own sample's teacher "
        "embedding among the batch's (InfoNCE, in-batch negatives; Tian et al. 2020)",
        params={**_LAYERS, "temperature": Param(0.1, "temperature of the scores (lower: sharper)", 0.0)},
        adapter=True,
    ),
    "rkd": LossSpec(
        fn=rkd_loss,
        needs=("student_features", "teacher_features"),
        summary="relational KD: match pairwise distances and triplet angles between samples (Park et al. 2019)",
        params={
            **_LAYERS,
            "distance_weight": Param(25.0, "weight of the distance term", 0.0, True),
            "angle_weight": Param(50.0, "weight of the angle term", 0.0, True),
            "angle_samples": Param(32, "samples of each batch the O(N^3) angle term uses (0: all)", 0.0, True),
        },
    ),
}

_NEEDS = (("labels",), ("teacher_logits",), ("teacher_logits", "labels"), ("student_features", "teacher_features"))


def register(name: str, fn: Callable[..., Any], *, needs: tuple[str, ...], summary: str,
             params: dict[str, Param] | None = None, replace: bool = False) -> LossSpec:  # fmt: skip
    """Add a loss of your own to :data:`REGISTRY`, so that a recipe's ``distill`` list (or
    ``distill_module(losses=...)``) can name it like a built-in one.

    ``fn`` follows the calling convention of ``needs`` (see the module docstring), returns a scalar tensor
    and must be differentiable in the student's side; ``params`` declare its keyword arguments with
    defaults and ranges (checked when a recipe is validated). Registered in a process, it lives as long as
    that process: register it before the recipe is loaded.

    >>> register("l1_logits", lambda s, t: (s - t).abs().mean(), needs=("teacher_logits",),
    ...          summary="mean absolute difference of the logits")  # doctest: +SKIP
    """
    from distill.errors import RecipeError

    problems = []
    if not isinstance(name, str) or not name.isidentifier():
        problems.append(f"register: the name must be an identifier such as 'my_kd' (got {name!r})")
    elif name in REGISTRY and not replace:
        problems.append(f"register: {name!r} is already a loss ({REGISTRY[name].summary}). Fix: pick another name, or "
                        "pass replace=True")  # fmt: skip
    if tuple(needs) not in _NEEDS:
        problems.append(f"register: needs must be one of {', '.join(map(str, _NEEDS))} (got {tuple(needs)!r})")
    if not callable(fn):
        problems.append(f"register: fn must be callable (got {type(fn).__name__})")
    if problems:
        raise RecipeError(problems, "distill.losses.register")
    spec = LossSpec(fn=fn, needs=tuple(needs), summary=summary, params=dict(params or {}))
    REGISTRY[name] = spec
    return spec


__all__ = [
    # the registry of classification terms (a recipe's `distill` list) and how to add your own
    "REGISTRY", "LossSpec", "Param", "register",
    # classification: logits (N, C)
    "cross_entropy", "cross_entropy_value_and_grad", "kd_loss", "kd_targets", "kd_value_and_grad", "log_softmax",
    "softmax_with_temperature", "dist_loss", "dkd_loss", "function_matching_loss", "logit_mse_loss", "ls_kd_loss",
    "standardize_logits",
    # classification: features of named layers
    "attention_transfer_loss", "hint_loss", "rkd_loss", "contrastive_loss",
    # language models: per-token divergences over (B, S, V) logits, masked
    "TOKEN_LOSSES", "token_loss", "per_token_divergence", "true_kl", "forward_kl", "reverse_kl", "generalized_jsd",
    "skew_forward_kl", "skew_reverse_kl", "total_variation",
    # sentence embeddings: (N, D) embeddings, (B, L, H) hidden states, (B, heads, L, L) attention maps
    "cosine_loss", "mse_loss", "relational_loss", "hidden_loss", "attention_map_loss",
]  # fmt: skip
