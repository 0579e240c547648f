"""A module's identity for caches: the sha256 of its class name and every tensor of its state dict. A teacher's
cached outputs (classification), a language model's top-k cache and an image teacher's cache key are tied to it."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def module_fingerprint(module: nn.Module) -> str:
    """sha256 over the class name and every tensor of the state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


__all__ = ["module_fingerprint"]
