"""Logit distillation losses beyond Hinton KD: DKD, DIST, logit-standardised KD, logit regression.

Pure functions on tensors, like :mod:`distill.losses.kd`: no gradient flows into
the teacher's logits, every value is a batch mean, and each carries the T² factor
of its reference formulation so that weights mean the same at every temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.kd import kd_loss, log_softmax

IGNORE_INDEX = -100  # an unlabelled sample, as in :func:`distill.losses.kd.cross_entropy`


def _check_pair(student_logits: Tensor, teacher_logits: Tensor, what: str) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"{what}: student logits must be 2-D (N, C), got shape {tuple(student_logits.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{what}: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled knowledge distillation: ``alpha · TCKD + beta · NCKD``, batch mean, × T².

    Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022
    (reference code: megvii-research/mdistiller ``DKD``). Hinton KD splits into
    ``KD = TCKD + (1 − p_gt^t) · NCKD``; DKD weights the two parts freely:

    - TCKD: ``KL(b^t ‖ b^s)`` of the binary distributions ``b = [p_gt, 1 − p_gt]``
      (target class vs all others) of ``softmax(z/T)``;
    - NCKD: ``KL(p̂^t ‖ p̂^s)`` of the distributions among the non-target classes,
      obtained as in the reference by ``softmax(z/T − 1000 · onehot(gt))``.

    Args:
        student_logits: ``(N, C)`` raw student scores, ``C ≥ 2``.
        teacher_logits: ``(N, C)`` raw teacher scores (no gradient flows into them).
        labels: ``(N,)`` integer ground-truth classes in ``[0, C)``; rows labelled
            ``-100`` (unlabelled samples) are left out of the mean. With no labelled
            row the loss is 0 (still connected to the graph).
        alpha: weight of TCKD, ``≥ 0``.
        beta: weight of NCKD, ``≥ 0`` (the paper uses 8 on CIFAR-100).
        temperature: ``T > 0``.

    Returns:
        A scalar ``≥ 0``: ``T² · (alpha · TCKD + beta · NCKD)`` averaged over the labelled rows;
        zero when the two sets of logits agree.
    """
    _check_pair(student_logits, teacher_logits, "dkd_loss")
    n, c = student_logits.shape
    if c < 2:
        raise ValueError(f"dkd_loss needs at least 2 classes, got {c}")
    if labels.shape != (n,):
        raise ValueError(f"dkd_loss: labels must be shaped ({n},) to match the logits, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"dkd_loss: labels must be integer class indices, got dtype {labels.dtype}")
    keep = labels != IGNORE_INDEX
    if bool(((labels[keep] < 0) | (labels[keep] >= c)).any()):
        raise ValueError(f"dkd_loss: labels must lie in [0, {c}) (or be {IGNORE_INDEX} for unlabelled rows)")
    if not bool(keep.all()):
        student_logits, teacher_logits, labels = student_logits[keep], teacher_logits[keep], labels[keep]
        if labels.numel() == 0:
            return student_logits.sum() * 0.0

    t = float(temperature)
    zs = student_logits.float() / t
    zt = teacher_logits.detach().float() / t
    gt_mask = F.one_hot(labels.long(), c).to(zs.dtype)  # (N, C)
    index = labels.long().unsqueeze(1)

    # TCKD: binary [p_gt, 1 - p_gt], both as log-probabilities computed stably from log-softmax
    def binary_log_probs(z: Tensor) -> Tensor:
        log_p = log_softmax(z)
        log_gt = log_p.gather(1, index)
        log_rest = torch.logsumexp(log_p.masked_fill(gt_mask.bool(), float("-inf")), dim=1, keepdim=True)
        return torch.cat([log_gt, log_rest], dim=1)  # (N, 2)

    tckd = F.kl_div(binary_log_probs(zs), binary_log_probs(zt), reduction="batchmean", log_target=True)

    # NCKD: the reference masks the target class out by subtracting 1000 from its scaled logit
    log_ps_rest = log_softmax(zs - 1000.0 * gt_mask)
    log_pt_rest = log_softmax(zt - 1000.0 * gt_mask)
    nckd = F.kl_div(log_ps_rest, log_pt_rest, reduction="batchmean", log_target=True)

    return (float(alpha) * tckd + float(beta) * nckd) * (t * t)


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``: ``(N, K) → (N,)``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    """DIST: match the *relations* of predictions by Pearson correlation, × T².

    Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher",
    NeurIPS 2022 (reference code: hunto/DIST_KD). With ``P = softmax(z/T)`` ``(N, C)``:

    - inter-class relation: ``1 − mean_n pearson(P^s[n, :], P^t[n, :])`` (per sample, over classes);
    - intra-class relation: ``1 − mean_c pearson(P^s[:, c], P^t[:, c])`` (per class, over the batch);

    loss ``= T² · (beta · inter + gamma · intra)``. Pearson uses ``eps = 1e-8`` added to the
    product of norms, as the reference does, so identical inputs give (almost exactly) 0.

    Args:
        student_logits: ``(N, C)`` raw student scores.
        teacher_logits: ``(N, C)`` raw teacher scores (no gradient flows into them).
        beta: weight of the inter-class term, ``≥ 0``.
        gamma: weight of the intra-class term, ``≥ 0``. It needs ``N ≥ 2``: on a
            single-sample batch a column has no spread, its correlation counts as 0,
            and the term is the constant ``gamma · T²`` (no gradient), as in the reference.
        temperature: ``T > 0``.

    Returns:
        A scalar in ``[0, 2 · T² · (beta + gamma)]``; (almost exactly) 0 for identical inputs.
    """
    _check_pair(student_logits, teacher_logits, "dist_loss")
    t = float(temperature)
    ps = torch.softmax(student_logits.float() / t, dim=1)
    pt = torch.softmax(teacher_logits.detach().float() / t, dim=1)
    inter = 1.0 - _pearson_rows(ps, pt).mean()
    intra = 1.0 - _pearson_rows(ps.t(), pt.t()).mean()
    return (float(beta) * inter + float(gamma) * intra) * (t * t)


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each row: ``(z − mean(z)) / (std(z) + eps)`` with the unbiased std, as the reference does.

    ``(N, C) → (N, C)``; ``C ≥ 2``. A constant row maps to zeros.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def ls_kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 2.0) -> Tensor:
    """KD on standardised logits: ``T² · KL(softmax(ẑ_t/T) ‖ softmax(ẑ_s/T))``, batch mean.

    Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024
    (reference code: sunshangquan/logit-standardization-KD). Each sample's logits are
    z-scored (:func:`standardize_logits`) before the softened KL, so the student need only
    match the teacher's logit *relations*, not their scale or offset: the loss is (up to the
    ``1e-7`` in the denominator) invariant to ``s → a·s + b`` with ``a > 0``.

    Args:
        student_logits: ``(N, C)`` raw student scores, ``C ≥ 2``.
        teacher_logits: ``(N, C)`` raw teacher scores (no gradient flows into them).
        temperature: ``T > 0`` applied to the standardised logits.

    Returns:
        A scalar ``≥ 0``, a true KL times T²; zero when the student's logits are a positive
        affine transform of the teacher's, row by row.
    """
    _check_pair(student_logits, teacher_logits, "ls_kd_loss")
    if student_logits.shape[1] < 2:
        raise ValueError(f"ls_kd_loss needs at least 2 classes, got {student_logits.shape[1]}")
    zs = standardize_logits(student_logits.float())
    zt = standardize_logits(teacher_logits.detach().float())
    return kd_loss(zs, zt, temperature=temperature)


def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor, *, center: int = 0) -> Tensor:
    """Logit regression: ``mean_c (s_c − t_c)²``, batch mean (the L2 "mimic" loss).

    Ba and Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014: shallow students trained
    to regress the teacher's logits (not its probabilities) matched deep teachers more closely than
    students trained on soft labels, because logits keep what the softmax squashes (how sure the
    teacher is of every class, not only the winner). It is Hinton KD's limit as ``T → ∞`` with
    zero-mean logits (Hinton et al. 2015, section 2.1; compared with KD by Kim et al., IJCAI 2021).

    Args:
        student_logits: ``(N, C)`` raw student scores.
        teacher_logits: ``(N, C)`` raw teacher scores (no gradient flows into them).
        center: ``1``: subtract each row's mean from both first, so only the logits' differences
            count (the softmax ignores a constant per row); ``0``: raw logits, as in the paper.

    Returns:
        A scalar ``≥ 0``; zero exactly when the (centred) logits are equal.
    """
    _check_pair(student_logits, teacher_logits, "logit_mse_loss")
    s, t = student_logits.float(), teacher_logits.detach().float()
    if center:
        s, t = s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
    return ((s - t) ** 2).mean()


__all__ = ["dist_loss", "dkd_loss", "logit_mse_loss", "ls_kd_loss", "standardize_logits"]
