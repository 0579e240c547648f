"""The one Accelerate set-up every task's pipeline starts from: the device, mixed precision and, under
``torchrun`` / ``accelerate launch`` (``distill run --nproc N``), the process group."""

from __future__ import annotations

from typing import Any

from distill.errors import DistillError

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(precision: str = "fp32") -> Any:
    """An ``accelerate.Accelerator`` for ``precision`` (fp32, bf16 or fp16). Without a GPU it is told ``cpu=True``,
    so that torchrun gives DDP over gloo rather than looking for CUDA; fp16 without a GPU is refused."""
    import torch
    from accelerate import Accelerator

    if precision not in PRECISIONS:
        raise DistillError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r}). Fix: use one of those.")
    gpu = torch.cuda.is_available()
    if precision == "fp16" and not gpu:
        raise DistillError("train.precision fp16 needs a GPU; none is available. Fix: use fp32 or bf16 on CPU.")
    return Accelerator(mixed_precision=PRECISIONS[precision], cpu=not gpu)


__all__ = ["make_accelerator"]
