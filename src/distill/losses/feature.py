"""Feature-based distillation losses: pure functions on intermediate activations.

The training loop captures the activations (forward hooks, models untouched),
applies a learned adapter where shapes differ (hints), and calls these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNets hint: mean squared error between (adapted) student and teacher features.

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015). ``student_feat``
    must already have the teacher's shape (the loop applies a learned 1×1 conv
    or linear adapter when it does not).

    Args:
        student_feat: ``(N, ...)``, same shape as ``teacher_feat``.
        teacher_feat: ``(N, ...)``; no gradient flows into it.
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"hint: student features {tuple(student_feat.shape)} vs teacher {tuple(teacher_feat.shape)}")
    return F.mse_loss(student_feat.float(), teacher_feat.detach().float())


def attention_map(feat: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention of a feature map: ``normalise(mean_c |F|^p)`` flattened.

    ``(N, C, H, W) -> (N, H·W)``; for ``(N, D)`` features, ``normalise(|F|^p)``
    over the D units. Each row has unit L2 norm.
    """
    f = feat.float()
    am = f.abs().pow(p).mean(dim=1).flatten(1) if f.dim() == 4 else f.abs().pow(p).flatten(1)
    return F.normalize(am, dim=1)


def attention_transfer_loss(student_feat: Tensor, teacher_feat: Tensor, *, p: float = 2.0) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017): mean squared distance between
    the normalised attention maps of student and teacher.

    Maps of different spatial sizes are matched by adaptive average pooling of
    the larger one to the smaller size. Channel counts may differ.

    Args:
        student_feat: ``(N, Cs, Hs, Ws)`` or ``(N, Ds)``.
        teacher_feat: ``(N, Ct, Ht, Wt)`` or ``(N, Dt)`` (``Dt == Ds`` for 2-D features).
    """
    s, t = student_feat, teacher_feat.detach()
    if s.dim() == 4 and t.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        s = F.adaptive_avg_pool2d(s, size) if s.shape[-2:] != size else s
        t = F.adaptive_avg_pool2d(t, size) if t.shape[-2:] != size else t
    a_s, a_t = attention_map(s, p), attention_map(t, p)
    if a_s.shape != a_t.shape:
        raise ValueError(f"attention maps differ in size: student {tuple(a_s.shape)} vs teacher {tuple(a_t.shape)}")
    return (a_s - a_t).pow(2).mean()


def _pairwise_distances(e: Tensor) -> Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp_min(1e-12).sqrt()
    return d * (1 - torch.eye(e.shape[0], dtype=e.dtype, device=e.device))


def rkd_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    *,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    angle_samples: int = 32,
) -> Tensor:
    """Relational KD (Park et al., CVPR 2019): match the *relations* between samples.

    Distance term: pairwise Euclidean distances, each normalised by its mean,
    compared with smooth L1. Angle term: cosines of the angles formed by every
    triplet, compared with smooth L1. Dimensions may differ between student and
    teacher (only relations are compared). The angle term costs O(N³·D), so it
    uses the first ``angle_samples`` samples of the batch (the batch order is
    random); 0 means all of them.

    Args:
        student_emb: ``(N, Ds)`` (flattened when it has more axes).
        teacher_emb: ``(N, Dt)``.
    """
    s = student_emb.float().flatten(1)
    t = teacher_emb.detach().float().flatten(1)
    loss = s.new_zeros(())
    if distance_weight:
        ds, dt = _pairwise_distances(s), _pairwise_distances(t)
        ds = ds / ds[ds > 0].mean().clamp_min(1e-12)
        dt = dt / dt[dt > 0].mean().clamp_min(1e-12)
        loss = loss + distance_weight * F.smooth_l1_loss(ds, dt)
    if angle_weight:
        def angles(e: Tensor) -> Tensor:
            diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
            return torch.bmm(diff, diff.transpose(1, 2)).flatten()

        k = s.shape[0] if not angle_samples else min(int(angle_samples), s.shape[0])
        loss = loss + angle_weight * F.smooth_l1_loss(angles(s[:k]), angles(t[:k]))
    return loss


def contrastive_loss(student_feat: Tensor, teacher_feat: Tensor, *, temperature: float = 0.1) -> Tensor:
    """Contrastive representation distillation with in-batch negatives (after Tian, Krishnan, Isola,
    "Contrastive Representation Distillation", ICLR 2020).

    Each student embedding must pick out *its own* sample's teacher embedding among the batch's:
    with ``z = normalise(feature)``, the scores ``z_s · z_tᵀ / T`` of an ``N``-sample batch are a
    cross-entropy over ``N`` candidates whose answer is the diagonal (InfoNCE), averaged over both
    directions (student→teacher and teacher→student). Where CRD keeps a memory bank of 16,384
    negatives and the NCE estimate, this uses the other samples of the batch as negatives. The
    student side goes through the loop's learned adapter when its width differs from the teacher's
    (as for hints); only relations between samples count, not the features' scale.

    Args:
        student_feat: ``(N, ...)`` (adapted to the teacher's shape), flattened per sample.
        teacher_feat: ``(N, ...)``; no gradient flows into it.
        temperature: ``T > 0``; lower is sharper.
    """
    if not temperature > 0:
        raise ValueError(f"contrastive: temperature must be > 0, got {temperature}")
    s = F.normalize(student_feat.float().flatten(1), dim=1)
    t = F.normalize(teacher_feat.detach().float().flatten(1), dim=1)
    if s.shape != t.shape:
        raise ValueError(f"contrastive: student features {tuple(s.shape)} vs teacher {tuple(t.shape)}")
    scores = s @ t.t() / float(temperature)
    target = torch.arange(s.shape[0], device=s.device)
    return 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target))
