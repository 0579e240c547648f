"""The training loop, written out: setup → fit (epochs of steps) → evaluate.

HF Accelerate supplies the device, mixed precision and (under ``accelerate
launch``/``torchrun``) DDP; the loop shards the data by rank itself, so each
epoch's order is a pure function of (seed, epoch) and a resumed run replays
exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from distill.data import Split
from distill.data.augment import augment_images, shift_mixup_views
from distill.core.checkpoint import CheckpointStore
from distill.core.optim import epoch_generator, make_optimizer, make_scheduler
from distill.errors import TrainingError
from distill.recipe import TrainConfig
from distill.tasks.classification.objective import (
    Term,
    accuracy_from_logits,
    closed_form_available,
    compute_objective,
    objective_value_and_grad,
    predict_logits,
    prepare_teacher_targets,
    view_term,
)

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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


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
    world, rank = accelerator.num_processes, accelerator.process_index
    is_main = accelerator.is_main_process
    n = len(train)
    local_n = n // world if world > 1 else n
    if local_n < 2:
        raise TrainingError(f"{role}: the training split has {n} samples; at least 2 per process are needed.")
    steps_per_epoch = batches_per_epoch(local_n, cfg.batch_size)
    from distill.tasks.classification.features import FeatureCapture, layer_names

    student_layers, _ = layer_names(objective)
    adapters = adapters if adapters is not None else nn.ModuleDict()
    if len(adapters) and world > 1:
        raise TrainingError(
            f"{role}: feature terms with learned adapters run in one process for now "
            f"(adapters: {', '.join(adapters)}). Fix: run without --nproc, or pick layers of equal shape."
        )
    adapters.to(accelerator.device)
    optimizer = make_optimizer([*model.parameters(), *adapters.parameters()], cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs)
    model, optimizer = accelerator.prepare(model, optimizer)
    result = FitResult()
    start_epoch = 1

    if resume and checkpoints is not None:
        state = checkpoints.load_latest()
        if state is not None:
            _unwrap(model).load_state_dict(state["model"])
            if len(adapters):
                adapters.load_state_dict(state["adapters"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            result.history = list(state["history"])
            start_epoch = int(state["epoch"]) + 1
            result.resumed_from = int(state["epoch"])
            if is_main:
                log.info("%s: resumed after epoch %d of %d", role, state["epoch"], cfg.epochs)

    # function matching: the batch is replaced by views that the (online) teacher sees too
    views = view_term(objective)
    if views is not None and online_teacher is None:
        raise TrainingError(
            f"{role}: {views.label} trains on fresh views of every batch, so it needs the teacher online "
            "(its outputs cannot be cached). Fix: use kd for this stage."
        )
    if online_teacher is not None and is_main and start_epoch <= cfg.epochs:
        log.info("%s: the teacher runs online on every batch (augmented inputs cannot be cached)", role)

    # cached teacher outputs: the teacher side of each loss is computed once, not every step,
    # and the loss gradients are computed in closed form (no autograd graph for the loss head)
    prepared_all = prepare_teacher_targets(objective, teacher_logits) if teacher_logits is not None else {}
    labels = [t.label for t in objective]
    closed_form = (
        online_teacher is None
        and accelerator.mixed_precision == "no"
        and closed_form_available(objective, prepared_all, labels_all_valid=bool((train.y >= 0).all()))
    )
    if not closed_form:
        prepared_all = {}
    raw_teacher_needed = any("teacher_logits" in t.spec.needs for t in objective) and not closed_form

    if result.resumed_from is None:
        # dropout draws from torch's global generator: seed it here, so that a fit does not depend on what
        # ran before it in this process (a resumed fit restored the generator's state instead)
        torch.manual_seed(cfg.seed)
    capture = FeatureCapture(_unwrap(model), student_layers, "student") if student_layers else None
    if capture is not None:
        capture.__enter__()
    try:
        steps_done = 0
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=epoch_generator(cfg.seed, epoch))
            if world > 1:
                perm = perm[: local_n * world][rank::world]
            aug_gen = epoch_generator(cfg.seed, epoch, stream=1)
            view_gen = epoch_generator(cfg.seed, epoch, stream=2)
            sums = torch.zeros(len(labels))
            correct = torch.zeros((), dtype=torch.long)
            seen = 0
            bar = None
            if progress and is_main:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps_per_epoch, desc=f"{role} {epoch}/{cfg.epochs}", unit="step", leave=False, dynamic_ncols=True)
            t0 = time.perf_counter()
            for step in range(steps_per_epoch):
                idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x, y = train.x.index_select(0, idx), train.y.index_select(0, idx)
                if augment != "none":
                    x = augment_images(x, aug_gen, max_shift=2 if "shift" in augment else 0, flip=flip_ok and "flip" in augment)
                if views is not None:
                    x = shift_mixup_views(x, view_gen, **{k: views.params[k] for k in views.spec.views})
                t_logits = None
                t_feats: dict[str, Tensor] | None = None
                if online_teacher is not None:
                    t_logits, t_feats = online_teacher(x)
                elif teacher_logits is not None and raw_teacher_needed:
                    t_logits = teacher_logits.index_select(0, idx)
                prepared = {k: {name: v.index_select(0, idx) for name, v in d.items()} for k, d in prepared_all.items()}
                if teacher_features is not None and online_teacher is None:
                    t_feats = {name: v.index_select(0, idx) for name, v in teacher_features.items()}
                if accelerator.device.type != "cpu":
                    x, y = x.to(accelerator.device), y.to(accelerator.device)
                    t_logits = t_logits.to(accelerator.device) if t_logits is not None else None
                    prepared = {k: {name: v.to(accelerator.device) for name, v in d.items()} for k, d in prepared.items()}
                with accelerator.autocast():
                    logits = model(x)
                    if closed_form:
                        loss, values, grad = objective_value_and_grad(objective, logits.detach(), y, prepared)
                    else:
                        s_feats = capture.outputs if capture is not None else None
                        loss, values = compute_objective(objective, logits, y, t_logits, s_feats, t_feats, adapters)
                if not torch.isfinite(loss):
                    if bar is not None:
                        bar.close()
                    detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in values.items())
                    kept = (
                        f"the last good checkpoint (epoch {epoch - 1}) is kept in {checkpoints.folder}"
                        if checkpoints is not None and epoch > 1
                        else "no checkpoint was written for this stage yet"
                    )
                    raise TrainingError(
                        f"{role}: the loss became {float(loss.detach())} at epoch {epoch}, step {step + 1} ({detail}); "
                        f"training stopped and {kept}. Fix: lower train.optimizer.lr (now {cfg.optimizer.lr}), "
                        "set train.grad_clip, or check the data for extreme values."
                    )
                optimizer.zero_grad(set_to_none=True)
                if closed_form:
                    logits.backward(grad)
                else:
                    accelerator.backward(loss)
                if cfg.grad_clip is not None:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    sums.add_(torch.stack([values[k] for k in labels]).float().cpu(), alpha=len(idx))
                    correct += (logits.detach().argmax(-1) == y).sum().cpu()
                    seen += len(idx)
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0 or step == steps_per_epoch - 1:
                        elapsed = time.perf_counter() - t0
                        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", acc=f"{int(correct) / max(seen, 1):.3f}", sps=f"{seen / max(elapsed, 1e-9):.0f}")
                steps_done += 1
                if stop_after_steps is not None and steps_done >= stop_after_steps:
                    if bar is not None:
                        bar.close()
                    raise KeyboardInterrupt(f"stopped after {steps_done} steps (test hook)")
            epoch_seconds = time.perf_counter() - t0
            if bar is not None:
                bar.close()

            stats = torch.cat([sums, correct.float().reshape(1), torch.tensor([float(seen)])])
            if world > 1:
                stats = accelerator.reduce(stats.to(accelerator.device), reduction="sum").cpu()
            row: dict[str, Any] = {"epoch": epoch, "seconds": round(epoch_seconds, 4)}
            if seen:
                total_seen = float(stats[-1])
                for i, k in enumerate(labels):
                    row[f"loss/{k}"] = float(stats[i]) / total_seen
                row["loss"] = sum(t.weight * row[f"loss/{t.label}"] for t in objective)
                row["train_acc"] = float(stats[-2]) / total_seen
            row["samples_per_s"] = round(seen * world / max(epoch_seconds, 1e-9), 1)
            row["lr"] = float(scheduler.get_last_lr()[0])
            plain = _unwrap(model)
            for name, split in eval_splits.items():
                row[f"{name}_acc"] = accuracy_from_logits(predict_logits(plain, split.x, eval_batch_size), split.y)
            result.history.append(row)
            if is_main:
                terms = " ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in row.items() if k.startswith("loss/"))
                accs = " ".join(f"{k}={row[k]:.4f}" for k in row if k.endswith("_acc"))
                log.info(
                    "%s epoch %d/%d: loss=%.4f (%s) %s | %.2fs, %.0f samples/s",
                    role, epoch, cfg.epochs, row.get("loss", float("nan")), terms, accs, epoch_seconds, row["samples_per_s"],
                )  # fmt: skip
            if checkpoints is not None and is_main:
                checkpoints.save(
                    epoch,
                    {
                        "epoch": epoch,
                        "model": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
                        "adapters": {k: v.detach().cpu() for k, v in adapters.state_dict().items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "history": result.history,
                    },
                )
            accelerator.wait_for_everyone()
    finally:
        if capture is not None:
            capture.__exit__(None, None, None)
    return result
