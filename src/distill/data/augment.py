"""Random image augmentation on batches (seeded through an explicit generator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
