"""An ensemble of teachers: the (weighted) mean of their class probabilities.

Members may be of any kind (torch, ONNX, scikit-learn, precomputed file). The
ensemble returns log-probabilities ``log Σ_i w_i softmax(z_i)``, which every
softmax-based loss reads as logits. Members whose outputs are looked up by sample
id (``needs_ids``) make the ensemble need ids too: call :meth:`EnsembleTeacher.logits_for`
(or :func:`teacher_logits_for`, which works for every kind).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from distill.errors import TeacherError

COMBINES = ("mean_probs", "mean_logits")


def teacher_logits_for(teacher: Any, x: Tensor | None, ids: Iterable[Any] | None) -> Tensor:
    """Outputs of any teacher for a batch: by sample id when it ``needs_ids``, else by input.

    ``x``: ``(N, *sample_shape)`` inputs; ``ids``: the N sample ids. Either may be None when
    the teacher does not need it. Returns ``(N, C)`` float32.
    """
    if isinstance(teacher, EnsembleTeacher):
        return teacher.logits_for(x, ids)
    if getattr(teacher, "needs_ids", False):
        if ids is None:
            raise TeacherError("this teacher looks its outputs up by sample id, but no ids were given")
        return teacher.logits_for_ids(ids)
    if x is None:
        raise TeacherError("this teacher runs on inputs, but no inputs were given")
    return teacher.logits(x)


class EnsembleTeacher:
    """Combine teachers that agree on ``num_classes``.

    Args:
        teachers: two or more (one is allowed) teacher objects.
        weights: one non-negative weight per member (normalised to sum 1); default equal.
        combine: ``"mean_probs"`` (default): ``log Σ w_i softmax(z_i)``, the mixture of the
            members' distributions; ``"mean_logits"``: ``log_softmax(Σ w_i log_softmax(z_i))``,
            the normalised geometric mean (sharper where members agree).

    ``logits`` returns ``(N, C)`` float32 log-probabilities.
    """

    def __init__(self, teachers: Sequence[Any], weights: Sequence[float] | None = None, combine: str = "mean_probs"):
        members = list(teachers)
        if not members:
            raise TeacherError("an ensemble teacher needs at least one member. Fix: list its teachers.")
        if combine not in COMBINES:
            raise TeacherError(f"ensemble combine must be one of {', '.join(COMBINES)} (got {combine!r})")
        widths = [int(m.num_classes) for m in members]
        if len(set(widths)) != 1:
            shown = ", ".join(f"member {i}: {w}" for i, w in enumerate(widths))
            raise TeacherError(
                f"the ensemble's teachers disagree on the number of classes ({shown}). "
                "Fix: combine only teachers trained for the same classes."
            )
        if weights is None:
            w = [1.0] * len(members)
        else:
            w = [float(v) for v in weights]
            if len(w) != len(members):
                raise TeacherError(
                    f"the ensemble has {len(members)} teachers but {len(w)} weights. Fix: give one weight per teacher."
                )
            bad = [f"member {i}: {v!r}" for i, v in enumerate(w) if not math.isfinite(v) or v < 0]
            if bad:
                raise TeacherError(f"ensemble weights must be finite and >= 0 ({', '.join(bad)})")
            if sum(w) <= 0:
                raise TeacherError("ensemble weights sum to 0. Fix: give at least one teacher a positive weight.")
        total = sum(w)
        self.teachers = members
        self.weights = [v / total for v in w]
        self.combine = combine
        self.num_classes = widths[0]
        self.needs_ids = any(getattr(m, "needs_ids", False) for m in members)

    def _combine(self, outputs: list[Tensor]) -> Tensor:
        n = {tuple(o.shape) for o in outputs}
        if len(n) != 1:
            raise TeacherError(f"the ensemble's teachers returned outputs of different shapes: {sorted(n)}")
        log_p = torch.stack([torch.log_softmax(o.float(), dim=-1) for o in outputs])  # (M, N, C)
        log_w = torch.tensor([math.log(v) if v > 0 else -math.inf for v in self.weights]).view(-1, 1, 1)
        if self.combine == "mean_probs":
            return torch.logsumexp(log_p + log_w, dim=0)
        w = torch.tensor(self.weights).view(-1, 1, 1)
        return torch.log_softmax((log_p * w).sum(0), dim=-1)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """``(N, *sample_shape) → (N, C)`` combined log-probabilities (members that run on inputs only)."""
        if self.needs_ids:
            raise TeacherError(
                "this ensemble has a member that looks outputs up by sample id (a precomputed file). "
                "Fix: call logits_for(x, ids) with the batch's sample ids."
            )
        return self._combine([m.logits(x) for m in self.teachers])

    @torch.no_grad()
    def logits_for_ids(self, ids: Iterable[Any]) -> Tensor:
        """Combined log-probabilities when every member looks outputs up by sample id."""
        if not all(getattr(m, "needs_ids", False) for m in self.teachers):
            raise TeacherError("this ensemble has members that run on inputs. Fix: call logits_for(x, ids).")
        keys = list(ids)
        return self._combine([m.logits_for_ids(keys) for m in self.teachers])

    @torch.no_grad()
    def logits_for(self, x: Tensor | None, ids: Iterable[Any] | None) -> Tensor:
        """Combined log-probabilities for a batch given its inputs and/or sample ids (any members)."""
        keys = list(ids) if ids is not None else None
        return self._combine([teacher_logits_for(m, x, keys) for m in self.teachers])

    def fingerprint(self) -> str:
        """sha256 over the combine rule, the weights and every member's fingerprint, in order."""
        h = hashlib.sha256(f"ensemble\0{self.combine}".encode())
        for w, m in zip(self.weights, self.teachers):
            h.update(f"\0{w!r}\0{m.fingerprint()}".encode())
        return h.hexdigest()


__all__ = ["COMBINES", "EnsembleTeacher", "teacher_logits_for"]
