"""The MLP and CNN families: plain builder functions that return ``nn.Module``.

``in_shape`` is the shape of one sample without the batch axis: ``(C, H, W)``
for images, ``(F,)`` for tables. Configuration never enters a model class.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from distill.errors import ModelError


def mlp(
    in_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (32,),
    dropout: float = 0.0,
    pool: int = 1,
) -> nn.Module:
    """Multi-layer perceptron: (average-pool) → flatten → [Linear → ReLU (→ Dropout)] × len(hidden) → Linear.

    ``hidden=[]`` gives a linear classifier; ``hidden=[32]`` on 28×28 images is
    784·32 + 32·10 = 25,408 multiply-accumulates per sample. ``pool=2`` first
    averages 2×2 pixel blocks of image inputs (28×28 → 14×14: 196 inputs), which
    buys a wider network for the same budget.
    """
    _check_common(in_shape, num_classes)
    if not isinstance(pool, int) or pool < 1:
        raise ModelError(f"mlp pool must be a positive integer (got {pool})")
    if pool > 1 and len(in_shape) != 3:
        raise ModelError(f"mlp pool applies to images (channels, height, width), not samples shaped {tuple(in_shape)}")
    hidden = list(hidden)
    if any((not isinstance(h, int)) or h <= 0 for h in hidden):
        raise ModelError(f"mlp hidden sizes must be positive integers (got {hidden})")
    if not 0 <= dropout < 1:
        raise ModelError(f"mlp dropout must be in [0, 1) (got {dropout})")
    layers: list[nn.Module] = []
    if pool > 1:
        layers.append(nn.AvgPool2d(pool))
        in_shape = (in_shape[0], in_shape[1] // pool, in_shape[2] // pool)
    layers.append(nn.Flatten())
    width = math.prod(in_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(
    in_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (16, 32, 64),
    hidden: int = 384,
    dropout: float = 0.3,
    batch_norm: bool = True,
) -> nn.Module:
    """Small CNN: blocks of conv3×3 (→ BN) → ReLU, a 2×2 max-pool after every block
    but the last, then flatten → Linear(hidden) → ReLU → Dropout → Linear.

    The default on 28×28 images is the Fashion-MNIST teacher of the benchmarks:
    64·7·7 = 3136 features → 384 → 10, about 1.23 M parameters.
    """
    _check_common(in_shape, num_classes)
    if len(in_shape) != 3:
        raise ModelError(
            f"cnn needs image samples shaped (channels, height, width), got {tuple(in_shape)}. "
            "Fix: use arch 'mlp' for tabular data."
        )
    channels = list(channels)
    if not channels or any((not isinstance(c, int)) or c <= 0 for c in channels):
        raise ModelError(f"cnn channels must be a non-empty list of positive integers (got {channels})")
    c_in, h, w = in_shape
    layers: list[nn.Module] = []
    for i, c in enumerate(channels):
        layers.append(nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU())
        if i < len(channels) - 1:
            if h < 2 or w < 2:
                raise ModelError(f"cnn with {len(channels)} blocks pools the {tuple(in_shape)} input below 1 pixel")
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c_in = c
    layers.append(nn.Flatten())
    feat = c_in * h * w
    if hidden:
        layers += [nn.Linear(feat, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        feat = hidden
    layers.append(nn.Linear(feat, num_classes))
    return nn.Sequential(*layers)


def _check_common(in_shape: Sequence[int], num_classes: int) -> None:
    if not in_shape or any(int(d) <= 0 for d in in_shape):
        raise ModelError(f"input shape must be positive (got {tuple(in_shape)})")
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes (got {num_classes})")
