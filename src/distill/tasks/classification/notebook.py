"""Distillation without a recipe: your own ``nn.Module`` student, your own teacher, your tensors.

::

    from distill import distill_module
    result = distill_module(student, teacher, (x_train, y_train), val=(x_val, y_val), epochs=5)
    result.student            # trained in place, in eval mode
    result.history[-1]        # {"epoch": 5, "loss": ..., "val_acc": ...}

The teacher is an ``nn.Module`` (run once over the training inputs, in eval mode, without gradients:
its logits are the soft labels) or a tensor of its logits for the training rows (outputs you already
have, e.g. from a hosted API). The loop is the one ``distill run`` trains with (closed-form KD
gradients from the cached teacher outputs, the same optimizers and schedules).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import DataError, ModelError, RecipeError


@dataclass
class DistillResult:
    student: nn.Module
    history: list[dict[str, Any]]
    teacher_val_acc: float | None  # the teacher's accuracy on ``val`` (when a module and ``val`` are given)


def _tensors(data: Any, what: str) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a pair of tensors/arrays, a Dataset of pairs, or a DataLoader of ``(x, y)`` batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, Tensor) else v for v in data)
    else:
        try:
            batches = list(data) if isinstance(data, torch.utils.data.DataLoader) else [
                tuple(data[i]) for i in range(len(data))]  # fmt: skip
        except TypeError:
            raise DataError(
                f"{what}: expected (x, y) tensors, a Dataset of (x, y) pairs or a DataLoader of (x, y) batches, "
                f"got {type(data).__name__}."
            ) from None
        if not batches or len(batches[0]) < 2:
            raise DataError(f"{what}: no (x, y) samples in it.")
        stack = torch.cat if isinstance(data, torch.utils.data.DataLoader) else torch.stack
        x = stack([torch.as_tensor(b[0]) for b in batches])
        y = stack([torch.as_tensor(b[1]) for b in batches])
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels.")
    if x.shape[0] < 2:
        raise DataError(f"{what}: at least 2 samples are needed (got {x.shape[0]}).")
    if y.dtype.is_floating_point or y.ndim != 1:
        raise DataError(f"{what}: labels must be a 1-d tensor of class indices (got {y.dtype}, shape {tuple(y.shape)}).")
    return x.float() if not x.dtype.is_floating_point else x, y.long()


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    was = model.training
    model.eval()
    try:
        out = []
        for s in range(0, len(x), batch_size):
            o = model(x[s : s + batch_size])
            out.append((o.logits if hasattr(o, "logits") else o).float())
        return torch.cat(out)
    finally:
        model.train(was)


def distill_module(
    student: nn.Module,
    teacher: nn.Module | Tensor,
    train: Any,
    *,
    val: Any = None,
    losses: Sequence[dict[str, Any]] | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 3e-3,
    optimizer: str = "adamw",
    schedule: str = "onecycle",
    seed: int = 0,
    progress: bool = True,
) -> DistillResult:
    """Train ``student`` on ``train`` from ``teacher``'s soft labels (and the hard labels); return it with its
    per-epoch history.

    ``losses`` is a list of recipe terms (``[{"loss": "kd", "weight": 0.5, "temperature": 2}, {"loss": "ce",
    "weight": 0.5}]``, any loss of ``distill methods`` that needs only logits and labels); by default
    ``alpha · kd(T=temperature) + (1 − alpha) · ce``. ``val`` (same forms as ``train``) is evaluated after
    every epoch (``val_acc`` in the history).
    """
    from distill.core.accelerate import make_accelerator

    from distill.data import Split
    from distill.tasks.classification.loop import fit
    from distill.tasks.classification.recipe import LossTerm, TrainConfig
    from distill.tasks.classification.objective import build_objective

    if not isinstance(student, nn.Module):
        raise ModelError(f"student must be a torch.nn.Module, got {type(student).__name__}.")
    x, y = _tensors(train, "train")
    if isinstance(teacher, nn.Module):
        t_train = _logits(teacher, x, 1024)
    elif isinstance(teacher, Tensor) or isinstance(teacher, np.ndarray):
        t_train = torch.as_tensor(np.asarray(teacher) if isinstance(teacher, np.ndarray) else teacher).float()
    else:
        raise ModelError(f"teacher must be an nn.Module or a tensor of its logits, got {type(teacher).__name__}.")
    if t_train.ndim != 2 or t_train.shape[0] != len(x):
        raise DataError(f"teacher logits must be (N, classes) for the {len(x)} training rows, got {tuple(t_train.shape)}.")
    if not bool(torch.isfinite(t_train).all()):
        raise DataError("the teacher's logits contain NaN or infinite values; check the teacher.")
    classes = t_train.shape[1]
    if int(y.max()) >= classes or int(y.min()) < 0:
        raise DataError(f"labels must lie in 0..{classes - 1} (the teacher has {classes} outputs); got {int(y.min())}..{int(y.max())}.")
    probe = _logits(student, x[:2], 2)
    if probe.ndim != 2 or probe.shape[1] != classes:
        raise ModelError(f"the student returns shape {tuple(probe.shape)} for 2 samples; it must return (2, {classes}).")
    terms_raw = list(losses) if losses is not None else [
        {"loss": "kd", "weight": alpha, "temperature": temperature}, {"loss": "ce", "weight": 1 - alpha}]  # fmt: skip
    try:
        terms = [LossTerm.model_validate(t) for t in terms_raw]
        cfg = TrainConfig.model_validate({"epochs": epochs, "batch_size": batch_size, "seed": seed,
                                          "optimizer": {"name": optimizer, "lr": lr}, "schedule": {"name": schedule}})  # fmt: skip
    except Exception as exc:  # pydantic's ValidationError: report it as a recipe problem
        raise RecipeError([str(exc)], "distill_module") from None
    objective = build_objective(terms)
    evals: dict[str, Split] = {}
    teacher_val_acc = None
    if val is not None:
        xv, yv = _tensors(val, "val")
        evals["val"] = Split(xv, yv, np.arange(len(yv)))
        if isinstance(teacher, nn.Module):
            teacher_val_acc = float((_logits(teacher, xv, 1024).argmax(-1) == yv).float().mean())
    with torch.random.fork_rng(devices=[]):
        result = fit(student, Split(x, y, np.arange(len(y))), objective, cfg,
                     accelerator=make_accelerator(), role="student", eval_splits=evals,
                     teacher_logits=t_train, progress=progress, eval_batch_size=1024)  # fmt: skip
    return DistillResult(student.eval(), result.history, teacher_val_acc)
