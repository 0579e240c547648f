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
