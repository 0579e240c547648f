"""What every task's loop builds the same way: the optimizer and learning-rate schedule of a train section
(``optimizer.name/lr/weight_decay/momentum``, ``schedule.name/warmup_fraction``), and the seeded generator
of an epoch's data order; for text, batches of similar length and the warm-up / linear-decay factor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 101 + stream) % (2**63 - 1))
    return g


def make_optimizer(params: Any, cfg: Any) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int) -> Any:
    s = cfg.schedule
    total_steps = max(total_steps, 1)
    if s.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.optimizer.lr, total_steps=total_steps, pct_start=max(s.warmup_fraction, 1e-3)
        )
    if s.name == "cosine":
        warm = int(total_steps * s.warmup_fraction)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(total_steps - warm, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def prepare_for_training(accelerator: Any, model: Any, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """``accelerator.prepare`` for a written-out loop: the model always (device placement, DDP); the optimizer
    only where Accelerate's wrapper does something on this set-up (fp16 gradient scaling, FSDP, DeepSpeed,
    XLA ...). On a CPU or under plain DDP the wrapper adds only per-step work (accelerate 1.16 looks up on
    every step whether the ``lomo_optim`` package is importable), so the loop calls the optimizer itself."""
    from accelerate.utils import DistributedType

    plain = {DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU}
    if accelerator.mixed_precision == "fp16" or accelerator.distributed_type not in plain:
        return accelerator.prepare(model, optimizer)
    return accelerator.prepare(model), optimizer


def length_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """Seeded batches of indices of similar length: shuffle, sort within windows of 50 batches, shuffle batches."""
    n = len(lengths)
    perm = torch.randperm(n, generator=generator).numpy()
    lens = np.asarray(lengths)
    window = batch_size * 50
    batches: list[np.ndarray] = []
    for s in range(0, n, window):
        chunk = perm[s : s + window]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def warmup_linear_decay(step: int, total: int, warm: int, spent: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up over ``warm`` steps, then linear
    decay to 0 at the end. ``spent`` (share of a time budget used, 0..1) decays it further when the clock,
    not the step count, will end the run: the decay follows whichever is further along."""
    done = max(step / max(1, total), spent)
    return min((step + 1) / warm, max(0.0, (1.0 - done) / max(1e-9, 1.0 - warm / max(1, total))))
