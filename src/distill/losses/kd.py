"""Logit-matching losses for classification: pure functions on tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 4.0) -> Tensor:
    """Hinton knowledge distillation: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch mean.

    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015).
    The T² factor keeps the gradient's magnitude roughly independent of T (the
    gradient of the softened KL scales as 1/T²), so the term can be mixed with
    hard-label cross-entropy by a weight that means the same at every T.

    Args:
        student_logits: ``(N, C)`` raw student scores.
        teacher_logits: ``(N, C)`` raw teacher scores (no gradient flows into them).
        temperature: ``T > 0``; higher values soften both distributions.

    Returns:
        A scalar: the true KL divergence (≥ 0, zero iff the softened
        distributions agree), times T², averaged over the N samples.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def cross_entropy(student_logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Hard-label cross-entropy ``-log softmax(s)[y]``, batch mean.

    Args:
        student_logits: ``(N, C)``.
        labels: ``(N,)`` integer classes in ``[0, C)``; entries equal to -100
            (unlabelled samples) are ignored.
        label_smoothing: in ``[0, 1)``.
    """
    return F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing, ignore_index=-100)


def softmax_with_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` over the last axis: the soft labels."""
    return torch.softmax(logits / float(temperature), dim=-1)
