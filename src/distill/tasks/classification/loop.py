"""The training loop, written out: setup → fit (epochs of steps) → evaluate.

HF Accelerate supplies the device, mixed precision and (under ``accelerate
launch``/``torchrun``) DDP; the loop shards the data by rank itself, so each
epoch's order is a pure function of (seed, epoch) and a resumed run replays
exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from distill.core.checkpoint import CheckpointStore
from distill.core.optim import make_optimizer, make_scheduler, prepare_for_training
from distill.data import Split
from distill.errors import TrainingError
from distill.tasks.classification.recipe import TrainConfig
from distill.tasks.classification.epoch import CHECK_EVERY, FitRun, unwrap
from distill.tasks.classification.objective import Term, closed_form_available, prepare_teacher_targets, view_term

__all__ = ["CHECK_EVERY", "FitResult", "batches_per_epoch", "fit"]

log = logging.getLogger("distill")


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def best_epoch(self) -> dict[str, Any] | None:
        rows = [h for h in self.history if "val_acc" in h]
        return max(rows, key=lambda h: (h["val_acc"], -h["epoch"])) if rows else None


def batches_per_epoch(n: int, batch_size: int) -> int:
    # a trailing batch of one sample is skipped (BatchNorm cannot train on it)
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


def fit(
    model: nn.Module,
    train: Split,
    objective: list[Term],
    cfg: TrainConfig,
    *,
    accelerator: Any,
    role: str,
    eval_splits: dict[str, Split],
    teacher_logits: Tensor | None = None,
    online_teacher: Callable[[Tensor], Tensor] | None = None,
    augment: str = "none",
    flip_ok: bool = False,
    checkpoints: CheckpointStore | None = None,
    resume: bool = False,
    progress: bool = True,
    eval_batch_size: int = 1024,
    stop_after_steps: int | None = None,
    adapters: nn.ModuleDict | None = None,
    teacher_features: dict[str, Tensor] | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` for ``cfg.epochs`` epochs; return per-epoch history.

    ``teacher_logits`` (aligned with ``train``) come from the cache; with
    ``online_teacher`` the teacher runs on every (augmented) batch instead.
    A checkpoint is written after every epoch. With ``resume`` the newest valid
    checkpoint is loaded and training continues from the epoch after it.
    ``stop_after_steps`` ends the fit early (used by tests of interruption).

    Feature terms (hints, attention transfer, RKD): the student's named layers are
    captured with forward hooks; the teacher's come from ``teacher_features``
    (tables aligned with ``train``) or, with ``online_teacher``, from its second
    output. ``adapters`` (learned, where shapes differ) train with the student.
    """
    from distill.tasks.classification.features import FeatureCapture, layer_names

    world = accelerator.num_processes
    adapters = adapters if adapters is not None else nn.ModuleDict()
    local_n, views = _refuse_what_cannot_run(train, objective, adapters, online_teacher, world, role)
    steps_per_epoch = batches_per_epoch(local_n, cfg.batch_size)
    adapters.to(accelerator.device)
    optimizer = make_optimizer([*model.parameters(), *adapters.parameters()], cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs)
    model, optimizer = prepare_for_training(accelerator, model, optimizer)
    result, start_epoch = _resume(model, optimizer, scheduler, adapters, cfg, role, checkpoints if resume else None,
                                  accelerator.is_main_process)  # fmt: skip
    if online_teacher is not None and accelerator.is_main_process and start_epoch <= cfg.epochs:
        log.info("%s: the teacher runs online on every batch (augmented inputs cannot be cached)", role)
    # cached teacher outputs: the teacher side of each loss is computed once, not every step,
    # and the loss gradients are computed in closed form (no autograd graph for the loss head)
    prepared_all = prepare_teacher_targets(objective, teacher_logits) if teacher_logits is not None else {}
    closed_form = (
        online_teacher is None
        and accelerator.mixed_precision == "no"
        and closed_form_available(objective, prepared_all, labels_all_valid=bool((train.y >= 0).all()))
    )
    if result.resumed_from is None:
        # dropout draws from torch's global generator: seed it here, so that a fit does not depend on what
        # ran before it in this process (a resumed fit restored the generator's state instead)
        torch.manual_seed(cfg.seed)
    run = FitRun(model, optimizer, scheduler, accelerator, train, objective, cfg, role, closed_form,
               prepared_all if closed_form else {}, teacher_logits, online_teacher, teacher_features, views, augment,
               flip_ok, adapters, checkpoints, steps_per_epoch, local_n, progress, stop_after_steps)  # fmt: skip
    student_layers, _ = layer_names(objective)
    capture = FeatureCapture(unwrap(model), student_layers, "student") if student_layers else None
    if capture is not None:
        capture.__enter__()
        run.capture = capture
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            sums, correct, seen, seconds = run.train_epoch(epoch)
            result.history.append(run.epoch_row(epoch, sums, correct, seen, seconds, eval_splits, eval_batch_size))
            run.save(epoch, result.history)
    finally:
        if capture is not None:
            capture.__exit__(None, None, None)
    return result


def _refuse_what_cannot_run(train: Split, objective: list[Term], adapters: nn.ModuleDict, online_teacher: Any,
                            world: int, role: str) -> tuple[int, Term | None]:  # fmt: skip
    """This process's share of the training split, and the views term (function matching) if any; or a
    :class:`TrainingError` for a fit that cannot run as asked."""
    local_n = len(train) // world if world > 1 else len(train)
    if local_n < 2:
        raise TrainingError(f"{role}: the training split has {len(train)} samples; at least 2 per process are needed.")
    if len(adapters) and world > 1:
        raise TrainingError(
            f"{role}: feature terms with learned adapters run in one process for now "
            f"(adapters: {', '.join(adapters)}). Fix: run without --nproc, or pick layers of equal shape."
        )
    views = view_term(objective)  # function matching: the batch is replaced by views the (online) teacher sees too
    if views is not None and online_teacher is None:
        raise TrainingError(
            f"{role}: {views.label} trains on fresh views of every batch, so it needs the teacher online "
            "(its outputs cannot be cached). Fix: use kd for this stage."
        )
    return local_n, views


def _resume(model: nn.Module, optimizer: Any, scheduler: Any, adapters: nn.ModuleDict, cfg: TrainConfig, role: str,
            checkpoints: CheckpointStore | None, is_main: bool) -> tuple[FitResult, int]:  # fmt: skip
    """The fit's state from the newest valid checkpoint (none given or none valid: a fresh start)."""
    result = FitResult()
    state = checkpoints.load_latest() if checkpoints is not None else None
    if state is None:
        return result, 1
    unwrap(model).load_state_dict(state["model"])
    if len(adapters):
        adapters.load_state_dict(state["adapters"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    result.history = list(state["history"])
    result.resumed_from = int(state["epoch"])
    if is_main:
        log.info("%s: resumed after epoch %d of %d", role, state["epoch"], cfg.epochs)
    return result, int(state["epoch"]) + 1


