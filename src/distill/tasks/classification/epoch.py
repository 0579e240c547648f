"""One epoch of the classification loop: batches, the step, the statistics and the epoch's checkpoint.

:func:`distill.tasks.classification.loop.fit` sets a :class:`FitRun` up and calls its methods in order:
``train_epoch`` (the steps), ``epoch_row`` (the history row), ``save`` (the checkpoint).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distill.core.checkpoint import CheckpointStore
from distill.core.optim import epoch_generator
from distill.data import Split
from distill.data.augment import augment_images, shift_mixup_views
from distill.errors import TrainingError
from distill.tasks.classification.recipe import TrainConfig
from distill.tasks.classification.objective import (
    StepGradient,
    Term,
    accuracy_from_logits,
    compute_objective,
    objective_values,
    predict_logits,
)

log = logging.getLogger("distill")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or other) wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


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
class FitRun:
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
        plain = unwrap(self.model)
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
            plain = unwrap(self.model)
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
