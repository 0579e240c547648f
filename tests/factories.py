"""Students a user would bring through ``student.factory: "tests.factories:NAME"`` (plain functions
returning an nn.Module, as in the user's own package)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Fragile(nn.Module):
    """An MLP whose forward raises on batches larger than ``fail_above`` (0: never): a run that passes the
    preflight (one sample) and fails later, when evaluation sends a large batch."""

    def __init__(self, features: int, num_classes: int, hidden: int, fail_above: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.fail_above = fail_above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_above and x.shape[0] > self.fail_above:
            raise ValueError(f"this student refuses batches of more than {self.fail_above}")
        return self.net(x)


def small_mlp(in_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def fragile_mlp(in_shape: tuple[int, ...], num_classes: int, hidden: int = 16, fail_above: int = 0) -> nn.Module:
    return Fragile(math.prod(in_shape), num_classes, hidden, fail_above)


def softmax_mlp(in_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> nn.Module:
    """A teacher whose forward ends with a softmax: it outputs probabilities, not logits."""
    return nn.Sequential(small_mlp(in_shape, num_classes, hidden), nn.Softmax(dim=-1))


class _Noisy(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import warnings

        warnings.warn("noisy_mlp: a library warning on every forward", UserWarning, stacklevel=2)
        return self.inner(x)


def noisy_mlp(in_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> nn.Module:
    """A student that warns on every forward, as a third-party layer might."""
    return _Noisy(small_mlp(in_shape, num_classes, hidden))
