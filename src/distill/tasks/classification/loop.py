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
from distill.core.optim import epoch_generator, make_optimizer, make_scheduler, prepare_for_training
from distill.errors import TrainingError
from distill.recipe import TrainConfig
from distill.tasks.classification.objective import (
    Term,
    accuracy_from_logits,
    closed_form_available,
    compute_objective,
    StepGradient,
    objective_values,
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
    from distill.tasks.classification.features import FeatureCapture, layer_names

    world = accelerator.num_processes
    local_n = len(train) // world if world > 1 else len(train)
    if local_n < 2:
        raise TrainingError(f"{role}: the training split has {len(train)} samples; at least 2 per process are needed.")
    steps_per_epoch = batches_per_epoch(local_n, cfg.batch_size)
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
    model, optimizer = prepare_for_training(accelerator, model, optimizer)
    result, start_epoch = _resume(model, optimizer, scheduler, adapters, cfg, role, checkpoints if resume else None,
                                  accelerator.is_main_process)  # fmt: skip
    views = view_term(objective)  # function matching: the batch is replaced by views the (online) teacher sees too
    if views is not None and online_teacher is None:
        raise TrainingError(
            f"{role}: {views.label} trains on fresh views of every batch, so it needs the teacher online "
            "(its outputs cannot be cached). Fix: use kd for this stage."
        )
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
    run = _Fit(model, optimizer, scheduler, accelerator, train, objective, cfg, role, closed_form,
               prepared_all if closed_form else {}, teacher_logits, online_teacher, teacher_features, views, augment,
               flip_ok, adapters, checkpoints, steps_per_epoch, local_n, progress, stop_after_steps)  # fmt: skip
    capture = FeatureCapture(_unwrap(model), student_layers, "student") if student_layers else None
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


def _resume(model: nn.Module, optimizer: Any, scheduler: Any, adapters: nn.ModuleDict, cfg: TrainConfig, role: str,
            checkpoints: CheckpointStore | None, is_main: bool) -> tuple[FitResult, int]:  # fmt: skip
    """The fit's state from the newest valid checkpoint (none given or none valid: a fresh start)."""
    result = FitResult()
    state = checkpoints.load_latest() if checkpoints is not None else None
    if state is None:
        return result, 1
    _unwrap(model).load_state_dict(state["model"])
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


#: steps between two reads of the training statistics (and checks for a non-finite loss)
CHECK_EVERY = 50


def _flush(pending: list[tuple[int, list[Tensor], Tensor]], sums: Tensor, correct: Tensor) -> None:
    """Add the pending steps' (samples, term values, correct) to ``sums`` and ``correct``, in one go."""
    if not pending:
        return
    with torch.no_grad():
        n = torch.tensor([p[0] for p in pending], dtype=torch.float32, device=sums.device)
        values = torch.stack([torch.stack(p[1]).float() for p in pending])  # (steps, terms)
        sums.add_((values * n[:, None]).sum(0))
        correct.add_(torch.stack([p[2] for p in pending]).sum())
    pending.clear()


@dataclass
class _Fit:
    """What the epochs of one fit share; each method is one piece of the loop, in the order it runs."""

    model: nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Any
    train: Split
    objective: list[Term]
    cfg: TrainConfig
    role: str
    closed_form: bool
    prepared_all: dict[str, dict[str, Tensor]]
    teacher_logits: Tensor | None
    online_teacher: Any
    teacher_features: dict[str, Tensor] | None
    views: Any
    augment: str
    flip_ok: bool
    adapters: nn.ModuleDict
    checkpoints: CheckpointStore | None
    steps_per_epoch: int
    local_n: int
    progress: bool
    stop_after_steps: int | None
    capture: Any = None
    steps_done: int = 0

    def __post_init__(self) -> None:
        self.step_gradient = (
            StepGradient(self.objective, self.prepared_all, self.accelerator.device) if self.closed_form else None
        )

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.objective]

    @property
    def raw_teacher_needed(self) -> bool:
        return any("teacher_logits" in t.spec.needs for t in self.objective) and not self.closed_form

    def batch(self, idx: Tensor, aug_gen: torch.Generator, view_gen: torch.Generator) -> tuple[Any, ...]:
        """Inputs, labels and the teacher's side of the loss for the samples ``idx`` (augmented or viewed)."""
        x, y = self.train.x.index_select(0, idx), self.train.y.index_select(0, idx)
        if self.augment != "none":
            x = augment_images(x, aug_gen, max_shift=2 if "shift" in self.augment else 0,
                               flip=self.flip_ok and "flip" in self.augment)  # fmt: skip
        if self.views is not None:
            x = shift_mixup_views(x, view_gen, **{k: self.views.params[k] for k in self.views.spec.views})
        t_logits = None
        t_feats: dict[str, Tensor] | None = None
        if self.online_teacher is not None:
            t_logits, t_feats = self.online_teacher(x)
        elif self.teacher_logits is not None and self.raw_teacher_needed:
            t_logits = self.teacher_logits.index_select(0, idx)
        if self.teacher_features is not None and self.online_teacher is None:
            t_feats = {name: v.index_select(0, idx) for name, v in self.teacher_features.items()}
        device = self.accelerator.device
        if device.type != "cpu":
            x, y = x.to(device), y.to(device)
            t_logits = t_logits.to(device) if t_logits is not None else None
        return x, y, t_logits, t_feats

    def step(self, x: Tensor, y: Tensor, t_logits: Tensor | None, t_feats: Any, idx: Tensor, epoch: int,
             step: int) -> tuple[Tensor | None, dict[str, Tensor] | None, Tensor]:  # fmt: skip
        """One optimizer step; returns (loss, {term: value}, student logits). In closed form the loss and the
        values are left for :meth:`_flush_rows` (None here): the step does only what a bare loop does."""
        if self.closed_form:
            logits = self.model(x)
            grad = self.step_gradient(logits, y, idx)  # the teacher's rows of the samples idx
            self.optimizer.zero_grad(set_to_none=True)
            logits.backward(grad)
            loss = values = None
        else:
            with self.accelerator.autocast():
                logits = self.model(x)
                s_feats = self.capture.outputs if self.capture is not None else None
                loss, values = compute_objective(self.objective, logits, y, t_logits, s_feats, t_feats, self.adapters)
            self.optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(loss)
        if self.cfg.grad_clip is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss, values, logits

    def _flush_rows(self, pending: list[tuple[Tensor, Tensor, Tensor]], sums: Tensor, correct: Tensor) -> None:
        """Closed form: the term values of the pending steps' rows (their student logits as the steps saw them),
        computed at once and added to ``sums`` (× rows: each value is a mean over its rows) and ``correct``."""
        if not pending:
            return
        idx, y, logits = (torch.cat([p[i] for p in pending]) for i in range(3))
        values = objective_values(self.objective, logits, y, self.prepared_all, idx)
        with torch.no_grad():
            sums.add_(torch.stack(values).float() * float(len(idx)))
            correct.add_((logits.argmax(-1) == y).sum())
        pending.clear()

    def _mean_loss(self, sums: Tensor, seen: int) -> float:
        return sum(t.weight * float(v) for t, v in zip(self.objective, sums)) / max(seen, 1)

    def _diverged(self, sums: Tensor, seen: int, epoch: int, first: int, last: int) -> None:
        detail = ", ".join(f"{k}={float(v) / max(seen, 1):.4g}" for k, v in zip(self.labels, sums))
        kept = (
            f"the last good checkpoint (epoch {epoch - 1}) is kept in {self.checkpoints.folder}"
            if self.checkpoints is not None and epoch > 1
            else "no checkpoint was written for this stage yet"
        )
        where = f"step {last}" if first == last else f"steps {first}-{last}"
        value = next((float(v) for v in sums if not torch.isfinite(v)), float("nan"))
        raise TrainingError(
            f"{self.role}: the loss became {value} at epoch {epoch}, {where} (mean so far: {detail}); "
            f"training stopped and {kept}. Fix: lower train.optimizer.lr (now {self.cfg.optimizer.lr}), "
            "set train.grad_clip, or check the data for extreme values."
        )

    def train_epoch(self, epoch: int) -> tuple[Tensor, Tensor, int, float]:
        """One pass over this process's share of the epoch's order; the summed term values, correct, seen.

        The step does what a bare loop does; the statistics stay on the device and are summed, and checked
        for a non-finite loss, every :data:`CHECK_EVERY` steps and at the end of the epoch."""
        cfg, world, rank = self.cfg, self.accelerator.num_processes, self.accelerator.process_index
        self.model.train()
        perm = torch.randperm(len(self.train), generator=epoch_generator(cfg.seed, epoch))
        if world > 1:
            perm = perm[: self.local_n * world][rank::world]
        aug_gen = epoch_generator(cfg.seed, epoch, stream=1)
        view_gen = epoch_generator(cfg.seed, epoch, stream=2)
        labels = self.labels
        device = self.accelerator.device
        sums = torch.zeros(len(labels), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        pending: list[tuple[int, list[Tensor], Tensor]] = []
        seen, checked, flushed = 0, 0, 0
        bar = None
        if self.progress and self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"{self.role} {epoch}/{cfg.epochs}", unit="step", leave=False,
                       dynamic_ncols=True)  # fmt: skip
        t0 = time.perf_counter()
        try:
            for step in range(self.steps_per_epoch):
                idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x, y, t_logits, t_feats = self.batch(idx, aug_gen, view_gen)
                loss, values, logits = self.step(x, y, t_logits, t_feats, idx, epoch, step)
                if values is None:  # closed form: the values of these rows are computed at the flush
                    pending.append((idx, y, logits.detach()))
                else:
                    pending.append((len(idx), [values[k] for k in labels], (logits.detach().argmax(-1) == y).sum()))
                seen += len(idx)
                last = step == self.steps_per_epoch - 1
                if len(pending) == CHECK_EVERY or last:
                    (self._flush_rows if self.closed_form else _flush)(pending, sums, correct)
                    if not bool(torch.isfinite(sums).all()):
                        self._diverged(sums, seen, epoch, checked + 1, step + 1)
                    checked, flushed = step + 1, seen
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0 or last:
                        elapsed = time.perf_counter() - t0
                        shown = float(loss.detach()) if loss is not None else self._mean_loss(sums, flushed)
                        bar.set_postfix(loss=f"{shown:.4f}", sps=f"{seen / max(elapsed, 1e-9):.0f}")
                self.steps_done += 1
                if self.stop_after_steps is not None and self.steps_done >= self.stop_after_steps:
                    raise KeyboardInterrupt(f"stopped after {self.steps_done} steps (test hook)")
        finally:
            if bar is not None:
                bar.close()
        return sums.cpu(), correct.cpu(), seen, time.perf_counter() - t0

    def epoch_row(self, epoch: int, sums: Tensor, correct: Tensor, seen: int, seconds: float,
                  eval_splits: dict[str, Split], eval_batch_size: int) -> dict[str, Any]:  # fmt: skip
        """The epoch's history row (training terms reduced over processes, accuracies on the eval splits), logged."""
        world = self.accelerator.num_processes
        stats = torch.cat([sums, correct.float().reshape(1), torch.tensor([float(seen)])])
        if world > 1:
            stats = self.accelerator.reduce(stats.to(self.accelerator.device), reduction="sum").cpu()
        row: dict[str, Any] = {"epoch": epoch, "seconds": round(seconds, 4)}
        if seen:
            total_seen = float(stats[-1])
            for i, k in enumerate(self.labels):
                row[f"loss/{k}"] = float(stats[i]) / total_seen
            row["loss"] = sum(t.weight * row[f"loss/{t.label}"] for t in self.objective)
            row["train_acc"] = float(stats[-2]) / total_seen
        row["samples_per_s"] = round(seen * world / max(seconds, 1e-9), 1)
        row["lr"] = float(self.scheduler.get_last_lr()[0])
        plain = _unwrap(self.model)
        for name, split in eval_splits.items():
            row[f"{name}_acc"] = accuracy_from_logits(predict_logits(plain, split.x, eval_batch_size), split.y)
        if self.accelerator.is_main_process:
            terms = " ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in row.items() if k.startswith("loss/"))
            accs = " ".join(f"{k}={row[k]:.4f}" for k in row if k.endswith("_acc"))
            log.info(
                "%s epoch %d/%d: loss=%.4f (%s) %s | %.2fs, %.0f samples/s",
                self.role, epoch, self.cfg.epochs, row.get("loss", float("nan")), terms, accs, seconds, row["samples_per_s"],
            )  # fmt: skip
        return row

    def save(self, epoch: int, history: list[dict[str, Any]]) -> None:
        """The epoch's checkpoint (main process), then every process waits for it."""
        if self.checkpoints is not None and self.accelerator.is_main_process:
            plain = _unwrap(self.model)
            self.checkpoints.save(epoch, {
                "epoch": epoch,
                "model": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
                "adapters": {k: v.detach().cpu() for k, v in self.adapters.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
            })  # fmt: skip
        self.accelerator.wait_for_everyone()
