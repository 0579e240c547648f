"""Sentence embeddings: the label-free quality measures (the losses are in ``distill.losses.embedding``).

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


def pair_similarities(emb: np.ndarray, *, n_pairs: int = 2000, seed: int = 0) -> np.ndarray:
    """Cosine similarity of the seeded random sentence pairs of :func:`random_pairs` (the same pairs for
    every model of the same sentences): what the teacher-vs-student scatter plots."""
    i, j = random_pairs(len(emb), n_pairs, seed)
    u = _unit(emb)
    return (u[i] * u[j]).sum(-1)


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
