"""What a token loss compares the student with: the teacher's distribution as dense logits or as a
summary of k slots per position (:class:`TeacherTopK`: the top-k with the remaining mass, or k draws),
and the coarsening that turns a student's full distribution into the same k + 1 buckets.

Split from :mod:`distill.losses.token` (the divergences, their registry and :func:`~distill.losses.token.token_loss`),
which re-exports every public name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: log of the smallest probability mass kept for the "all other tokens" bucket, so
#: that the coarsened distributions never hold an exact zero (``log 0 = -inf``).
TAIL_FLOOR = math.log(1e-12)


@dataclass(frozen=True)
class TeacherTopK:
    """What the offline cache keeps of a teacher, per position.

    Attributes:
        indices: ``(B, S, k)`` int64 vocabulary ids of the teacher's top-k tokens.
        logprobs: ``(B, S, k)`` float teacher log-probabilities of those tokens, at the
            temperature the cache was built with.
        tail: ``(B, S)`` float ``log(1 − Σ exp(logprobs))``, the log of the remaining
            mass, floored at :data:`TAIL_FLOOR` (never ``-inf``).
        temperature: the temperature the log-probabilities were computed at, when
            known; :func:`token_loss` refuses another temperature (a top-k summary
            cannot be re-tempered exactly).
    """

    indices: Tensor
    logprobs: Tensor
    tail: Tensor
    temperature: float | None = None

    @property
    def k(self) -> int:
        return int(self.indices.shape[-1])

    def select(self, mask: Tensor) -> TeacherTopK:
        """The positions where ``mask`` ``(B, S)`` is True, flattened: shapes ``(N, k)``, ``(N,)``."""
        return TeacherTopK(self.indices[mask], self.logprobs[mask], self.tail[mask], self.temperature)

    def flat(self) -> TeacherTopK:
        """Every position, flattened like :meth:`select` with a full mask, as views (no copy)."""
        k = self.indices.shape[-1]
        return TeacherTopK(self.indices.reshape(-1, k), self.logprobs.reshape(-1, k), self.tail.reshape(-1),
                           self.temperature)  # fmt: skip

    def to(self, device: torch.device | str) -> TeacherTopK:
        return TeacherTopK(self.indices.to(device), self.logprobs.to(device), self.tail.to(device), self.temperature)


Teacher = Tensor | TeacherTopK


# --------------------------------------------------------------------------- teacher views


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a finite number > 0 (got {temperature!r})")
    return t


#: above this top-k mass, ``log(1 − Σ)`` loses float32 digits; :func:`coarsen` takes the exact path there
_SUBTRACT_MAX = 0.999


def _log_rest(logp: Tensor, indices: Tensor) -> Tensor:
    """``log Σ_{v ∉ indices} exp(logp_v)`` over the last axis, floored at :data:`TAIL_FLOOR`."""
    rest = logp.scatter(-1, indices, float("-inf")).logsumexp(-1)
    return rest.clamp_min(TAIL_FLOOR)


def dense_topk(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> TeacherTopK:
    """The teacher's top-k log-probabilities at ``T`` and the log of its remaining mass.

    Args:
        teacher_logits: ``(..., V)`` raw teacher scores, e.g. ``(B, S, V)``.
        k: ``1 ≤ k ≤ V``.
        temperature: ``T > 0``.

    Returns:
        :class:`TeacherTopK` with ``indices`` ``(..., k)`` int64 (most likely first),
        ``logprobs`` ``(..., k)`` float32 and ``tail`` ``(...)`` float32 — what the
        offline cache stores (it keeps them as uint16/int32 and fp16).
    """
    t = _check_temperature(temperature)
    v = teacher_logits.shape[-1]
    if not 1 <= int(k) <= v:
        raise ValueError(f"dense_topk: k must be in [1, {v}] (the vocabulary size), got {k}")
    logp = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    values, indices = logp.topk(int(k), dim=-1)
    return TeacherTopK(indices, values, _log_rest(logp, indices), t)


DRAWS = ("multinomial", "systematic")


def dense_sample(
    teacher_logits: Tensor,
    n: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    draws: str = "multinomial",
) -> TeacherTopK:
    """``n`` tokens drawn per position from the teacher at ``T``, kept as an empirical distribution.

    Random-sampling KD (Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge
    Distillation in LLMs", ACL 2025): a top-k summary is *biased* (the student learns the
    teacher's head and nothing about its tail), whereas ``n`` draws with replacement
    ``x_1..x_n ~ p_T`` give ``p̂(v) = count(v) / n`` with ``E[p̂] = p_T``. The forward-KL
    gradient in the student's logits is ``q − p``, linear in the target, so training on
    ``KL(p̂ ‖ q)`` follows the full forward-KL gradient without bias, at the storage cost
    of a top-n summary.

    Returns:
        :class:`TeacherTopK` with ``k = n`` slots: the distinct sampled ids, most frequent
        first, with ``logprobs = log(count / n)``; the remaining slots hold other (distinct,
        unsampled) ids with ``logprobs = -inf`` (mass 0), and ``tail`` is the floor
        :data:`TAIL_FLOOR` (the draws carry all the mass). Only ``fkl`` is unbiased on it:
        the other divergences are not linear in ``p``, so ``E[D(p̂, q)] ≠ D(p, q)``. They are
        finite (``skew_fkl``, ``skew_rkl`` with α > 0, ``jsd`` with β < 1, ``tvd``) but
        measured far worse than training from scratch (``benchmarks/results/lm.md``), and
        ``rkl``, which divides by the teacher's probability where it is 0, is infinite and
        refused by :func:`token_loss`.

    ``draws``: ``"multinomial"`` draws ``n`` times independently; ``"systematic"`` draws
    once, ``u ~ U[0, 1)``, and takes the tokens at the cumulative-probability points
    ``(u + j) / n``, ``j = 0..n−1`` (systematic resampling). Each point is uniform in its
    own ``1/n`` stratum, so ``E[p̂] = p`` still holds, and every token's count is
    ``⌊n p⌋`` or ``⌈n p⌉``: a token with ``p ≥ 1/n`` is always kept, close to its exact
    probability, where independent draws can miss it or double it. Same storage, lower
    variance (``benchmarks/results/lm.md`` measures both).
    """
    if draws not in DRAWS:
        raise ValueError(f"dense_sample: draws must be one of {', '.join(DRAWS)}, got {draws!r}")
    t = _check_temperature(temperature)
    v = teacher_logits.shape[-1]
    if not 1 <= int(n) <= v:
        raise ValueError(f"dense_sample: n must be in [1, {v}] (the vocabulary size), got {n}")
    lead = teacher_logits.shape[:-1]
    probs = F.softmax(teacher_logits.detach().float().reshape(-1, v) / t, dim=-1)
    if draws == "systematic":
        cdf = probs.double().cumsum(-1)
        cdf = cdf / cdf[:, -1:]
        u = torch.rand((cdf.shape[0], 1), generator=generator, dtype=torch.float64, device=cdf.device)
        points = (u + torch.arange(int(n), dtype=torch.float64, device=cdf.device)) / int(n)
        picked = torch.searchsorted(cdf, points, right=True).clamp_max(v - 1)
    else:
        picked = torch.multinomial(probs, int(n), replacement=True, generator=generator)
    counts = torch.zeros_like(probs).scatter_add_(-1, picked, torch.ones_like(picked, dtype=probs.dtype))
    top, indices = counts.topk(int(n), dim=-1)  # distinct ids; slots past the distinct draws have count 0
    logprobs = (top / float(n)).log()  # log 0 = -inf in the unused slots
    tail = torch.full(top.shape[:-1], TAIL_FLOOR, dtype=torch.float32, device=top.device)
    return TeacherTopK(indices.reshape(*lead, int(n)), logprobs.reshape(*lead, int(n)), tail.reshape(lead), t)


def coarsen(student_logits: Tensor, topk: TeacherTopK, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities over ``k + 1`` buckets.

    Bucket ``i < k`` is the teacher's ``i``-th top token, bucket ``k`` is "every other
    token". The student's bucket-``k`` log-mass is computed directly (a logsumexp over
    the tokens outside the top-k, not ``log(1 − Σ)``), both tails are floored at
    :data:`TAIL_FLOOR`, and both vectors are renormalised, so they are proper
    distributions even after the cache's fp16 rounding.

    Every loss of :func:`token_loss` on a :class:`TeacherTopK` is the exact divergence
    between these two coarsened distributions, which by the data-processing
    inequality is a lower bound of the full-vocabulary divergence.

    Args:
        student_logits: ``(..., V)`` raw student scores (gradients flow).
        topk: indices/logprobs ``(..., k)``, tail ``(...)``, same leading shape.
        temperature: ``T > 0``; the student is scaled by it, the teacher's
            log-probabilities are used as stored.

    Returns:
        ``(student_logp, teacher_logp)``, each ``(..., k + 1)`` float32.
    """
    t = _check_temperature(temperature)
    s_logp = F.log_softmax(_soften(student_logits, t), dim=-1)
    indices = topk.indices.long()
    s_top = s_logp.gather(-1, indices)
    # the rest as log(1 − Σ top) (no pass over the vocabulary) where that is accurate; rows whose top-k
    # holds nearly all the student's mass get the exact logsumexp over the other tokens
    mass = s_top.exp().sum(-1)
    risky = mass > _SUBTRACT_MAX
    s_tail = torch.log1p(-mass.clamp(max=_SUBTRACT_MAX))
    if bool(risky.any()):
        s_tail = s_tail.index_put((risky,), _log_rest(s_logp[risky], indices[risky]))
    s_tail = s_tail.clamp_min(TAIL_FLOOR)
    s = torch.cat([s_top, s_tail.unsqueeze(-1)], dim=-1)
    teacher = torch.cat([topk.logprobs.float(), topk.tail.float().clamp_min(TAIL_FLOOR).unsqueeze(-1)], dim=-1)
    return F.log_softmax(s, dim=-1), F.log_softmax(teacher.detach(), dim=-1)


def _soften(x: Tensor, t: float) -> Tensor:
    x = x.float()
    return x if t == 1.0 else x / t
