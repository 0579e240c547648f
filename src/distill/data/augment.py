"""Augmentation: random image shifts and flips on batches (seeded through an explicit generator), and
seeded variants of training texts for a teacher to label (:func:`augment_texts`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data.corpus import dedupe
from distill.errors import DataError


def augment_images(x: Tensor, generator: torch.Generator, *, max_shift: int = 2, flip: bool = True) -> Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero-filled) and flip half of them.

    ``x``: ``(N, C, H, W)``. Returns a new tensor of the same shape.
    """
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(x.dtype)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shifts[:, 0] * 2.0 / w
    theta[:, 1, 2] = shifts[:, 1] * 2.0 / h
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
        theta[flips, 0, 0] = -1.0
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # images are normalised; pad with the value of a blank (background) pixel
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(x - background, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out + background


def shift_mixup_views(
    x: Tensor, generator: torch.Generator, *, shift: int = 2, mixup_alpha: float = 1.0, flip: int = 0
) -> Tensor:
    """Random views of a batch for consistent teaching: shift (and flip), then mix pairs of samples.

    Each sample is shifted by up to ``shift`` pixels (images only, zero-filled with the
    background as in :func:`augment_images`), with ``flip = 1`` half of them mirrored
    left-right, then mixed with another sample of the same
    batch (a random permutation): ``λ·x_i + (1 − λ)·x_j``, one ``λ ~ Beta(α, α)`` per sample.
    ``mixup_alpha = 0`` turns mixing off. Deterministic given ``generator``.

    ``x``: ``(N, C, H, W)`` images, or ``(N, D)`` tables when ``shift == 0``.
    """
    if shift < 0 or int(shift) != shift:
        raise ValueError(f"shift must be a whole number of pixels >= 0 (got {shift!r})")
    if mixup_alpha < 0:
        raise ValueError(f"mixup_alpha must be >= 0 (got {mixup_alpha!r})")
    if flip not in (0, 1):
        raise ValueError(f"flip must be 0 (off) or 1 (mirror half of the images), got {flip!r}")
    if shift or flip:
        if x.dim() != 4:
            raise ValueError(
                f"shift={shift}, flip={flip} need image batches (N, C, H, W), got shape {tuple(x.shape)}; set shift: 0 "
                "and flip: 0 for tables"
            )
        x = augment_images(x, generator, max_shift=int(shift), flip=bool(flip))
    if mixup_alpha > 0 and x.shape[0] > 1:
        n = x.shape[0]
        # Beta(a, a) from two Gamma(a) draws: torch.distributions has no generator argument
        a = torch.full((n,), float(mixup_alpha), dtype=torch.float64)
        g1, g2 = torch._standard_gamma(a, generator=generator), torch._standard_gamma(a, generator=generator)
        lam = (g1 / (g1 + g2).clamp_min(1e-300)).to(x.dtype).reshape(n, *([1] * (x.dim() - 1)))
        partner = torch.randperm(n, generator=generator)
        x = lam * x + (1 - lam) * x.index_select(0, partner)
    return x


AugmentKind = Literal["drop", "crop", "concat"]  # the kinds of variant augment_texts makes
AUGMENT_KINDS: tuple[str, ...] = get_args(AugmentKind)


def augment_texts(texts: Sequence[str], copies: int, seed: int, *, kinds: Sequence[str] = AUGMENT_KINDS,
                  drop: float = 0.15, exclude: Iterable[str] = ()) -> list[str]:  # fmt: skip
    """``copies`` new variants of each training text, for the teacher to label (function matching for text:
    the student learns the teacher on more of the input space than the corpus itself covers).

    Each variant is one of ``kinds``, drawn at random: ``drop`` removes each word with probability ``drop``;
    ``crop`` keeps a random contiguous span of half the words or more; ``concat`` appends another random
    training text. Seeded; deduplicated against each other, against ``texts`` and against ``exclude``
    (pass the held-out text, so evaluation stays unseen)."""
    bad = sorted(set(kinds) - set(AUGMENT_KINDS))
    if bad or not kinds:
        raise DataError(f"unknown augmentation kinds {bad or list(kinds)}. Fix: use some of {', '.join(AUGMENT_KINDS)}.")
    rng = np.random.default_rng(seed)
    n = len(texts)
    out: list[str] = []
    for _ in range(copies):
        picks = rng.integers(len(kinds), size=n)
        for i, t in enumerate(texts):
            words = t.split()
            kind = kinds[picks[i]]
            if kind == "drop" and len(words) > 1:
                keep = rng.random(len(words)) >= drop
                if not keep.any():
                    keep[rng.integers(len(words))] = True
                out.append(" ".join(w for w, k in zip(words, keep, strict=True) if k))
            elif kind == "crop" and len(words) > 1:
                size = int(rng.integers((len(words) + 1) // 2, len(words) + 1))
                start = int(rng.integers(0, len(words) - size + 1))
                out.append(" ".join(words[start : start + size]))
            elif kind == "concat" and n > 1:
                out.append(t + " " + texts[int(rng.integers(n))])
    known = set(texts).union(exclude)
    return [t for t in dedupe(out) if t not in known]
