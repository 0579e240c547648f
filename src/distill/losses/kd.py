"""Logit-matching losses for classification: pure functions on tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``F.log_softmax`` with a fast path for few classes on CPU.

    ATen's CPU kernel along a short last axis (C ≤ 64, e.g. 10 classes) is
    10-20× slower than along the first axis of the transposed view; the result
    (and its gradient) is the same.
    """
    if x.dim() == 2 and dim in (-1, 1) and x.shape[1] <= 64 and x.device.type == "cpu":
        return F.log_softmax(x.t(), 0).t()
    return F.log_softmax(x, dim)


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
    log_p_student = log_softmax(student_logits.float() / t)
    log_p_teacher = log_softmax(teacher_logits.detach().float() / t)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def kd_targets(teacher_logits: Tensor, *, temperature: float = 4.0) -> dict[str, Tensor]:
    """Precompute, once for a whole cached dataset, what :func:`kd_loss` needs of the teacher.

    Returns ``probs = softmax(t/T)`` ``(N, C)`` and ``neg_entropy = Σ p log p`` ``(N,)``.
    """
    log_p = log_softmax(teacher_logits.detach().float() / float(temperature))
    probs = log_p.exp()
    return {"probs": probs.contiguous(), "neg_entropy": (probs * log_p).sum(-1).contiguous()}


@torch.no_grad()
def kd_value_and_grad(
    student_logits: Tensor, probs: Tensor, neg_entropy: Tensor, *, temperature: float = 4.0
) -> tuple[Tensor, Tensor]:
    """:func:`kd_loss` and its gradient with respect to ``student_logits``, in closed form.

    From :func:`kd_targets` rows ``probs = softmax(t/T)`` and ``neg_entropy = Σ p log p``:
    value ``T²/N · Σ_n (Σ_c p log p − Σ_c p log q)`` with ``q = softmax(s/T)``,
    gradient ``T/N · (q − p)``. Same numbers as autograd through :func:`kd_loss`
    (tested), without building a graph: the training loop uses it when teacher
    outputs are cached, so a distillation step costs about what a plain one does.
    """
    t = float(temperature)
    n = student_logits.shape[0]
    log_q = log_softmax(student_logits.float() / t)
    value = (neg_entropy.sum() - torch.sum(probs * log_q)) * (t * t / n)
    grad = (log_q.exp_() - probs).mul_(t / n)
    return value, grad


@torch.no_grad()
def cross_entropy_value_and_grad(student_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`cross_entropy` (no smoothing, every label valid) and its gradient ``(softmax(s) − onehot(y)) / N``."""
    n = student_logits.shape[0]
    log_q = log_softmax(student_logits.float())
    index = labels.unsqueeze(1)
    value = log_q.gather(1, index).sum() * (-1.0 / n)
    grad = log_q.exp_()
    grad.scatter_add_(1, index, torch.full((n, 1), -1.0))
    return value, grad.mul_(1.0 / n)


def cross_entropy(student_logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Hard-label cross-entropy ``-log softmax(s)[y]``, batch mean.

    Args:
        student_logits: ``(N, C)``.
        labels: ``(N,)`` integer classes in ``[0, C)``; entries equal to -100
            (unlabelled samples) are ignored: the mean is over labelled rows, and a
            batch with none gives 0.
        label_smoothing: in ``[0, 1)``.
    """
    if label_smoothing:
        total = F.cross_entropy(
            student_logits.float(), labels, label_smoothing=label_smoothing, ignore_index=-100, reduction="sum"
        )
    else:
        total = F.nll_loss(log_softmax(student_logits.float()), labels, ignore_index=-100, reduction="sum")
    # mean over the labelled rows; a batch without any label contributes 0 (not NaN)
    return total / (labels != -100).sum().clamp_min(1)


def softmax_with_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` over the last axis: the soft labels."""
    return torch.softmax(logits / float(temperature), dim=-1)
