"""Sentence-embedding losses, pure functions on tensors.

* :func:`cosine_loss` ``1 - cos(s, t)`` per sentence, averaged; :func:`mse_loss` on the embeddings;
  :func:`relational_loss` between the in-batch similarity matrices.
* :func:`hidden_loss`: MSE between a student hidden state and a teacher hidden state through a learned
  linear projection (TinyBERT's hidden-state term); :func:`attention_loss`: KL between teacher and
  student attention maps averaged over heads (MiniLM/TinyBERT's attention term), over real tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean of ``1 - cos(student_i, teacher_i)``; student, teacher: (N, D)."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error per coordinate; student, teacher: (N, D)."""
    return F.mse_loss(student, teacher)


def relational_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference between the in-batch cosine-similarity matrices of student and teacher
    embeddings (N, D) (relational KD, Park et al. 2019, on similarities): it trains what search and the
    Spearman agreement measure, how sentences relate, rather than where each vector points."""
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    return ((s @ s.T - t @ t.T) ** 2).mean()


def hidden_loss(student_h: Tensor, teacher_h: Tensor, mask: Tensor, proj: torch.nn.Module | None = None) -> Tensor:
    """MSE over real tokens between ``proj(student_h)`` (B, L, Hs → Ht) and ``teacher_h`` (B, L, Ht)."""
    s = proj(student_h) if proj is not None else student_h
    m = mask.unsqueeze(-1).to(s.dtype)
    return ((s - teacher_h) ** 2 * m).sum() / (m.sum() * s.shape[-1]).clamp(min=1.0)


def attention_loss(student_a: Tensor, teacher_a: Tensor, mask: Tensor) -> Tensor:
    """KL(teacher ‖ student) of attention rows averaged over heads; maps (B, heads, L, L), mask (B, L).

    Heads are averaged first, so the two models may have different head counts."""
    t = teacher_a.mean(dim=1).clamp(min=1e-9)
    s = student_a.mean(dim=1).clamp(min=1e-9)
    kl = (t * (t.log() - s.log())).sum(dim=-1)  # (B, L)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1.0)


