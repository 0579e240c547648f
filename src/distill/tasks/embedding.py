"""Sentence embeddings: the distillation losses and the label-free quality measures.

Losses (pure functions on tensors):

* :func:`cosine_loss` ``1 - cos(s, t)`` per sentence, averaged; :func:`mse_loss` on the embeddings;
  :func:`relational_loss` between the in-batch similarity matrices.
* :func:`hidden_loss`: MSE between a student hidden state and a teacher hidden state through a learned
  linear projection (TinyBERT's hidden-state term); :func:`attention_loss`: KL between teacher and
  student attention maps averaged over heads (MiniLM/TinyBERT's attention term), over real tokens.

Quality without labels, on held-out text (student vs teacher embeddings of the same sentences):

* :func:`mean_cosine`: mean cosine between the two embeddings of each sentence (same dimension only).
* :func:`similarity_spearman`: Spearman correlation between the cosine similarities the two models give
  to the same random sentence pairs (1.0: the student orders every pair as the teacher does).
* :func:`retrieval_agreement`: for each query, the share of the teacher's top-k neighbours among the
  documents that are also in the student's top-k (1.0: identical search results).
* :func:`sts_spearman`: with gold scores of sentence pairs, Spearman correlation of a model's cosines
  with them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


# ------------------------------------------------------------------ losses
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


# ----------------------------------------------------------------- metrics
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mean_cosine(student: np.ndarray, teacher: np.ndarray) -> float | None:
    """Mean cosine between row i of ``student`` and row i of ``teacher``; None when dimensions differ."""
    if student.shape != teacher.shape:
        return None
    return float((_unit(student) * _unit(teacher)).sum(axis=1).mean())


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # average ties
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = np.bincount(inv, weights=ranks)
        ranks = sums[inv] / counts[inv]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equal-length vectors (ties averaged)."""
    ra, rb = _rank(np.asarray(a, dtype=np.float64)), _rank(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def random_pairs(n: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` seeded pairs (i, j), i != j, of ``range(n)``."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n
    return i, j


def similarity_spearman(student: np.ndarray, teacher: np.ndarray, *, n_pairs: int = 5000, seed: int = 0) -> float:
    """Spearman correlation of the cosine similarities of random sentence pairs under the two models."""
    n = len(student)
    if n < 2:
        raise ValueError("similarity_spearman needs at least 2 sentences")
    i, j = random_pairs(n, n_pairs, seed)
    s, t = _unit(student), _unit(teacher)
    return spearman((s[i] * s[j]).sum(1), (t[i] * t[j]).sum(1))


def retrieval_agreement(
    student: np.ndarray, teacher: np.ndarray, *, n_queries: int = 1000, k: int = 10, seed: int = 0
) -> float:
    """Top-k retrieval agreement: the first ``n_queries`` rows (after a seeded shuffle) are queries, the
    rest documents; for each query, |teacher top-k ∩ student top-k| / k, averaged."""
    n = len(student)
    if n < n_queries + k:
        raise ValueError(f"retrieval_agreement needs at least n_queries + k = {n_queries + k} sentences (got {n})")
    perm = np.random.default_rng(seed).permutation(n)
    q, d = perm[:n_queries], perm[n_queries:]
    s, t = _unit(student), _unit(teacher)

    def topk(e: np.ndarray) -> np.ndarray:
        sims = e[q] @ e[d].T
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]

    ts, ss = topk(t), topk(s)
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ts, ss, strict=True)]
    return float(np.mean(hits) / k)


def sts_spearman(emb1: np.ndarray, emb2: np.ndarray, gold: np.ndarray) -> float:
    """Spearman correlation between the cosine of each pair (emb1[i], emb2[i]) and the gold score."""
    return spearman((_unit(emb1) * _unit(emb2)).sum(1), gold)


def quality(student: np.ndarray, teacher: np.ndarray, *, n_pairs: int = 5000, n_queries: int = 1000,
            k: int = 10, seed: int = 0) -> dict[str, float | None]:  # fmt: skip
    """The three label-free measures of a student against the teacher on the same sentences."""
    n_queries = min(n_queries, max(1, len(student) // 4))
    return {
        "cosine": mean_cosine(student, teacher),
        "spearman": similarity_spearman(student, teacher, n_pairs=n_pairs, seed=seed),
        f"top{k}": retrieval_agreement(student, teacher, n_queries=n_queries, k=k, seed=seed)
        if len(student) >= n_queries + k else None,
    }  # fmt: skip
