"""Token-level divergences for language-model distillation: pure functions on tensors.

Notation: ``p`` is the teacher's next-token distribution, ``q`` the student's, both
at temperature ``T`` (``p = softmax(t/T)``, ``q = softmax(s/T)``). Every divergence
here is a *true* divergence over the vocabulary (``≥ 0``, zero iff ``p = q``), never
``-Σ p log q`` called a KL.

Two layers:

- per-position divergences on normalised log-probabilities over the last axis,
  e.g. :func:`forward_kl` ``(s_logp, t_logp) -> (...)``; any leading shape;
- :func:`token_loss`, which takes raw logits ``(B, S, V)``, a teacher (dense logits
  or a :class:`TeacherTopK`) and a mask ``(B, S)``, and returns the **sum** over the
  real positions times ``T²``. The caller divides by the number of real tokens in
  the whole gradient-accumulation window, so a loss does not depend on how a batch
  is split into micro-batches (tested).

With a :class:`TeacherTopK` teacher (the offline cache stores the teacher's top-k
log-probabilities plus the log of the remaining mass), both distributions are
*coarsened* to ``k + 1`` buckets (the teacher's top-k tokens, then "everything else")
by :func:`coarsen`, and the loss is the exact divergence between the coarsened
distributions. By the data-processing inequality (a coarsening is a deterministic
map of the outcome) every f-divergence here (KL both ways, skew KLs, generalised
JSD, TVD) of the coarsened pair is ≤ the full-vocabulary one: a lower bound, which
is tight when the teacher's tail mass is small or the student's tail matches it in
shape. With ``k ≥ V − 1`` it equals the dense value (tested).

Registry: :data:`TOKEN_LOSSES`, an explicit dict separate from the classification
``REGISTRY`` in :mod:`distill.losses`. The teacher's views (:class:`TeacherTopK`,
:func:`dense_topk`, :func:`dense_sample`, :func:`coarsen`) live in
:mod:`distill.losses.token_views` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.token_views import (  # noqa: F401 - re-exported: what the losses compare with
    TAIL_FLOOR,
    Teacher,
    TeacherTopK,
    _check_temperature,
    _soften,
    coarsen,
    dense_sample,
    dense_topk,
)


# --------------------------------------------------------------------------- divergences
# Each takes student and teacher log-probabilities over the last axis (same shape,
# normalised) and returns the per-position value, shape = input shape without the last axis.


def _plogratio(logp: Tensor, logq: Tensor) -> Tensor:
    """Elementwise ``p (log p − log q)`` with the convention ``0 · log 0 = 0``."""
    p = logp.exp()
    keep = p > 0
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    # the inner where keeps -inf out of the product, so the gradient is 0 (not NaN) where p = 0
    return torch.where(keep, p * (torch.where(keep, logp, zero) - torch.where(keep, logq, zero)), zero)


def _kl(logp: Tensor, logq: Tensor) -> Tensor:
    """``KL(p ‖ q) = Σ p (log p − log q)`` over the last axis."""
    return _plogratio(logp, logq).sum(-1)


def _log_mix(w_a: float, log_a: Tensor, log_b: Tensor) -> Tensor:
    """``log(w_a · a + (1 − w_a) · b)`` from log-probabilities, stably; ``0 ≤ w_a ≤ 1``."""
    if w_a >= 1.0:
        return log_a
    if w_a <= 0.0:
        return log_b
    return torch.logaddexp(log_a + math.log(w_a), log_b + math.log1p(-w_a))


def forward_kl(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """Forward KL ``KL(p ‖ q) = Σ p (log p − log q)``: mode-covering; tokens with ``p = 0`` add 0."""
    return _kl(t_logp, s_logp)


def reverse_kl(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """Reverse KL ``KL(q ‖ p) = Σ q (log q − log p)``: mode-seeking (MiniLLM)."""
    return _kl(s_logp, t_logp)


def generalized_jsd(s_logp: Tensor, t_logp: Tensor, beta: float = 0.5, scaled: bool = False) -> Tensor:
    """Generalised Jensen-Shannon divergence of GKD, with TRL's convention.

    ``m = β p + (1 − β) q``; ``JSD_β = β KL(p ‖ m) + (1 − β) KL(q ‖ m)``
    (Agarwal et al., "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes" (GKD), ICLR 2024; TRL ``GKDTrainer.generalized_jsd_loss``).

    Endpoints, as in TRL: ``β = 0`` returns forward ``KL(p ‖ q)`` and ``β = 1`` reverse
    ``KL(q ‖ p)`` exactly. The unscaled ``JSD_β`` itself tends to 0 at both ends
    (``JSD_β ≈ β KL(p‖q)`` as β → 0, ``≈ (1 − β) KL(q‖p)`` as β → 1), so with
    ``scaled=False`` (TRL, the default) the endpoints are special cases and values
    inside (0, 1) are ≤ ``log 2``-ish, about ``β(1 − β)`` times a KL near agreement.
    With ``scaled=True`` the value is ``JSD_β / (β (1 − β))``, which tends continuously
    to the two KLs at the ends and is ≈ a KL near agreement at every β (so one loss
    weight / learning rate means about the same for every β).
    """
    if beta == 0.0:
        return forward_kl(s_logp, t_logp)
    if beta == 1.0:
        return reverse_kl(s_logp, t_logp)
    log_m = _log_mix(beta, t_logp, s_logp)
    value = beta * _kl(t_logp, log_m) + (1.0 - beta) * _kl(s_logp, log_m)
    return value / (beta * (1.0 - beta)) if scaled else value


def skew_forward_kl(s_logp: Tensor, t_logp: Tensor, alpha: float = 0.1) -> Tensor:
    """Skew forward KL ``KL(p ‖ α p + (1 − α) q)`` (DistiLLM); ``α = 0`` is forward KL."""
    if alpha == 0.0:
        return forward_kl(s_logp, t_logp)
    return _kl(t_logp, _log_mix(alpha, t_logp, s_logp))


def skew_reverse_kl(s_logp: Tensor, t_logp: Tensor, alpha: float = 0.1) -> Tensor:
    """Skew reverse KL ``KL(q ‖ (1 − α) p + α q)`` (DistiLLM); ``α = 0`` is reverse KL."""
    if alpha == 0.0:
        return reverse_kl(s_logp, t_logp)
    return _kl(s_logp, _log_mix(alpha, s_logp, t_logp))


def total_variation(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """Total variation distance ``½ Σ |p − q|``, in ``[0, 1]``, symmetric."""
    return 0.5 * (t_logp.exp() - s_logp.exp()).abs().sum(-1)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class TokenParam:
    """A parameter of a token loss: default, meaning, and the closed range ``[low, high]``."""

    default: float | bool
    doc: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class TokenLossSpec:
    """``fn(s_logp, t_logp, **params) -> per-position values``; summary and paper for ``distill methods``."""

    fn: Callable[..., Tensor]
    summary: str
    paper: str
    params: dict[str, TokenParam] = field(default_factory=dict)

    def defaults(self) -> dict[str, float | bool]:
        return {name: p.default for name, p in self.params.items()}


_GKD = (
    "Agarwal et al., On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes (GKD), ICLR 2024"
)
_DISTILLM = "Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language Models, ICML 2024"

TOKEN_LOSSES: dict[str, TokenLossSpec] = {
    "fkl": TokenLossSpec(
        forward_kl,
        "forward KL(teacher ‖ student) per token: mode-covering, the classic word-level KD",
        "Hinton et al., Distilling the Knowledge in a Neural Network, 2015; Kim & Rush, Sequence-Level Knowledge Distillation, EMNLP 2016",
    ),
    "rkl": TokenLossSpec(
        reverse_kl,
        "reverse KL(student ‖ teacher) per token: mode-seeking",
        "Gu et al., MiniLLM: Knowledge Distillation of Large Language Models, ICLR 2024",
    ),
    "jsd": TokenLossSpec(
        generalized_jsd,
        "generalised Jensen-Shannon divergence; beta=0 is forward KL, beta=1 reverse KL (TRL convention)",
        _GKD,
        {
            "beta": TokenParam(0.5, "mixture weight of the teacher in m = beta p + (1-beta) q", 0.0, 1.0),
            "scaled": TokenParam(False, "divide by beta(1-beta): continuous in beta, KL-sized near agreement"),
        },
    ),
    "skew_fkl": TokenLossSpec(
        skew_forward_kl,
        "skew forward KL(p ‖ alpha p + (1-alpha) q); alpha=0 is forward KL",
        _DISTILLM,
        {"alpha": TokenParam(0.1, "weight of the teacher mixed into the student side", 0.0, 1.0)},
    ),
    "skew_rkl": TokenLossSpec(
        skew_reverse_kl,
        "skew reverse KL(q ‖ (1-alpha) p + alpha q); alpha=0 is reverse KL",
        _DISTILLM,
        {"alpha": TokenParam(0.1, "weight of the student mixed into the teacher side", 0.0, 1.0)},
    ),
    "tvd": TokenLossSpec(
        total_variation,
        "total variation distance 1/2 Σ|p - q| per token, bounded in [0, 1]",
        "Wen et al., f-Divergence Minimization for Sequence-Level Knowledge Distillation (f-DISTILL), ACL 2023",
    ),
}


# --------------------------------------------------------------------------- the entry point

#: losses that are infinite where the teacher's probability is 0 and the student's is not
_NEEDS_FULL_SUPPORT = frozenset({"rkl"})


def _check_params(name: str, params: dict) -> dict:
    if name not in TOKEN_LOSSES:
        raise ValueError(f"unknown token loss {name!r}; choose one of {', '.join(TOKEN_LOSSES)}")
    spec = TOKEN_LOSSES[name]
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        allowed = ", ".join(spec.params) or "none"
        raise ValueError(f"token loss {name!r} has no parameter {', '.join(unknown)} (its parameters: {allowed})")
    resolved = spec.defaults()
    for key, value in params.items():
        p = spec.params[key]
        if isinstance(p.default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"token loss {name!r}: {key} must be true or false (got {value!r})")  # noqa: TRY004
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"token loss {name!r}: {key} must be a number (got {value!r})") from None
            if (p.low is not None and not value >= p.low) or (p.high is not None and not value <= p.high):
                raise ValueError(f"token loss {name!r}: {key} must be in [{p.low}, {p.high}] (got {value})")
        resolved[key] = value
    return resolved


def _check_inputs(student_logits: Tensor, teacher: Teacher, mask: Tensor, temperature: float) -> None:
    if student_logits.dim() != 3:
        raise ValueError(f"student logits must be 3-D (B, S, V), got shape {tuple(student_logits.shape)}")
    b, s, v = student_logits.shape
    if mask.shape != (b, s):
        raise ValueError(f"mask must be shaped (B, S) = {(b, s)} like the student logits, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True at real tokens), got dtype {mask.dtype}")
    if isinstance(teacher, TeacherTopK):
        k = teacher.indices.shape[-1] if teacher.indices.dim() == 3 else -1
        if teacher.indices.shape[:2] != (b, s) or teacher.indices.dim() != 3:
            raise ValueError(
                f"teacher top-k indices must be shaped (B, S, k) with (B, S) = {(b, s)}, got {tuple(teacher.indices.shape)}"
            )
        if teacher.logprobs.shape != teacher.indices.shape:
            raise ValueError(
                f"teacher top-k logprobs {tuple(teacher.logprobs.shape)} and indices {tuple(teacher.indices.shape)} differ in shape"
            )
        if teacher.tail.shape != (b, s):
            raise ValueError(f"teacher tail must be shaped (B, S) = {(b, s)}, got {tuple(teacher.tail.shape)}")
        if not 1 <= k <= v:
            raise ValueError(f"teacher top-k has k = {k}; it must be in [1, {v}] (the student's vocabulary size)")
        if teacher.indices.numel() and (int(teacher.indices.min()) < 0 or int(teacher.indices.max()) >= v):
            raise ValueError(
                f"teacher top-k ids must lie in [0, {v}) (the student's vocabulary); got ids up to "
                f"{int(teacher.indices.max())}: teacher and student vocabularies differ"
            )
        if teacher.temperature is not None and not math.isclose(teacher.temperature, temperature, rel_tol=1e-6):
            raise ValueError(
                f"the teacher top-k was computed at temperature {teacher.temperature}, the loss asks for {temperature}: "
                "a top-k summary cannot be re-tempered; rebuild the cache at this temperature or use its temperature"
            )
    elif isinstance(teacher, Tensor):
        if teacher.shape != student_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher.shape)} differ in shape"
            )
    else:
        raise ValueError(  # noqa: TRY004 - one documented error type for bad input
            f"teacher must be dense logits (a Tensor) or a TeacherTopK, got {type(teacher).__name__}"
        )


def per_token_divergence(
    name: str, student_logits: Tensor, teacher: Teacher, mask: Tensor, *, temperature: float = 1.0, **params
) -> Tensor:
    """The divergence at each real position, ``(N,)`` with ``N = mask.sum()``, without the ``T²`` factor.

    Positions where ``mask`` is False are dropped before any computation, so they
    cannot contribute a value or a gradient (not even a NaN).
    """
    resolved = _check_params(name, params)
    t = _check_temperature(temperature)
    _check_inputs(student_logits, teacher, mask, t)
    fn = TOKEN_LOSSES[name].fn
    full = bool(mask.all())
    s = student_logits.reshape(-1, student_logits.shape[-1]) if full else student_logits[mask]  # (N, V)
    if isinstance(teacher, TeacherTopK):
        picked = teacher.flat() if full else teacher.select(mask)
        if name in _NEEDS_FULL_SUPPORT or (name == "jsd" and resolved.get("beta") == 1.0) or (
            name == "skew_rkl" and resolved.get("alpha") == 0.0
        ):
            if bool(torch.isneginf(picked.logprobs).any()):
                raise ValueError(
                    f"token loss {name!r} is infinite on this teacher: it divides by the teacher's probability, which "
                    "is 0 on some stored tokens (a sampled cache keeps only the drawn tokens). Fix: use fkl, skew_fkl, "
                    "skew_rkl (alpha > 0), jsd (beta < 1) or tvd with a sampled cache, or a top-k cache for rkl"
                )
        s_logp, t_logp = coarsen(s, picked, t)
    else:
        tt = teacher.detach().reshape(s.shape) if full else teacher.detach()[mask]
        s_logp = F.log_softmax(_soften(s, t), dim=-1)
        t_logp = F.log_softmax(_soften(tt, t), dim=-1)
        if name == "fkl":  # dense: every log p is finite, so the fused kernel is exact (and ~3x faster)
            return F.kl_div(s_logp, t_logp, reduction="none", log_target=True).sum(-1)
    return fn(s_logp, t_logp, **resolved)


def token_loss(
    name: str, student_logits: Tensor, teacher: Teacher, mask: Tensor, *, temperature: float = 1.0, **params
) -> Tensor:
    """Sum over the real positions of a token-level divergence, times ``T²``.

    Args:
        name: a key of :data:`TOKEN_LOSSES` (``fkl``, ``rkl``, ``jsd``, ``skew_fkl``,
            ``skew_rkl``, ``tvd``).
        student_logits: ``(B, S, V)`` raw student scores (any float dtype; computed in float32).
        teacher: dense teacher logits ``(B, S, V)`` (no gradient flows into them) or a
            :class:`TeacherTopK` with ``(B, S, k)`` / ``(B, S)`` fields, in which case the
            loss is the exact divergence between the coarsened distributions of :func:`coarsen`.
        mask: ``(B, S)`` bool, True at the positions to distil, False at prompt and padding.
        temperature: ``T > 0``; both distributions are softened by it and the sum is
            multiplied by ``T²`` (the gradient of a softened KL scales as ``1/T²``).
        **params: the loss's parameters (``jsd``: ``beta`` in [0, 1] (default 0.5), ``scaled``;
            ``skew_fkl``/``skew_rkl``: ``alpha`` in [0, 1] (default 0.1)).

    Returns:
        A 0-dim float32 tensor: ``T² · Σ_{mask} D(p_T, q_T)``. Divide it by the number of
        real tokens of the whole gradient-accumulation window (not of this micro-batch).
        With no real position the result is 0, still connected to the graph.

    Raises:
        ValueError: unknown loss or parameter, parameter out of range, shapes that do not fit.
    """
    values = per_token_divergence(name, student_logits, teacher, mask, temperature=temperature, **params)
    t = float(temperature)
    if values.numel() == 0:
        return student_logits.float().sum() * 0.0
    return values.sum() * (t * t)


@torch.no_grad()
def true_kl(student_logits: Tensor, teacher: Teacher, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean forward ``KL(p_T ‖ q_T)`` per real token, in nats, without ``T²``: for logs.

    With a :class:`TeacherTopK` it is the KL of the coarsened distributions (a lower
    bound of the full one). Returns a 0-dim float32 tensor; 0 when no position is real.
    """
    values = per_token_divergence("fkl", student_logits, teacher, mask, temperature=temperature)
    if values.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=student_logits.device)
    return values.mean()
