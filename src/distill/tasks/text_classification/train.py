"""The training loop of text classifiers, written out: the teacher's fine-tuning (cross-entropy) and every
student's distillation (KD at temperature T against the teacher's cached logits, cross-entropy on the true
labels, and for layer students optionally the hidden states of the teacher layers they were copied from).

AdamW, linear warm-up then linear decay; batches group texts of similar length (less padding) in a seeded
order that depends on the epoch only, so a run resumed from an epoch checkpoint takes the same batches.
Every epoch ends with an atomic checkpoint (model, optimizer, step, history) that ``resume`` continues from.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.core.checkpoint import CheckpointStore
from distill.core.optim import length_batches, warmup_linear_decay
from distill.core.logs import log
from distill.errors import CheckpointError, TrainingError
from distill.losses import attention_map_loss as attention_loss
from distill.losses import hidden_loss, kd_loss
from distill.tasks.text_classification.models import Encoded, StaticClassifier, TextModel


@dataclass(frozen=True)
class Objective:
    """What one step minimises: ``kd · T²·KL(teacher ‖ student) + ce · CE(labels) + hidden · MSE(hidden states) +
    attention · KL(teacher's attention rows ‖ student's)`` (the last two over the mapped layers, averaged)."""

    kd: float = 0.0
    ce: float = 1.0
    hidden: float = 0.0
    attention: float = 0.0
    temperature: float = 2.0


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_minutes: float | None = None
    seed: int = 0


@dataclass
class FitStats:
    epochs_done: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_by_time: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done, "steps": self.steps, "seconds": round(self.seconds, 3),
                "stopped_by_time": self.stopped_by_time, "history": self.history}  # fmt: skip


def _optimizer(model: TextModel, sched: Schedule) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.module.named_parameters():
        if not p.requires_grad:
            continue
        table = isinstance(model.module, StaticClassifier) and name.startswith("table")
        (no_decay if p.ndim < 2 or table or "LayerNorm" in name or "embeddings" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": sched.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=sched.lr)  # fmt: skip


def _step_loss(model: TextModel, batch: dict[str, Tensor], labels: Tensor, t_logits: Tensor | None, obj: Objective,
               teacher: TextModel | None, mapping: list[int] | None) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    features = (obj.hidden > 0 or obj.attention > 0) and teacher is not None and mapping is not None
    flags = {"hidden": obj.hidden > 0, "attentions": obj.attention > 0}
    out = model.module(**batch, **flags) if features else model.module(**batch)
    logits, s_hidden, s_attn = out if features else (out, None, None)
    zero = logits.new_zeros(())
    parts: dict[str, Tensor] = {}
    if obj.kd and t_logits is not None:
        parts["kd"] = obj.kd * kd_loss(logits, t_logits, temperature=obj.temperature)
    if obj.ce:
        parts["ce"] = obj.ce * F.cross_entropy(logits.float(), labels)
    if features:
        assert teacher is not None and mapping is not None
        with torch.no_grad():
            _, t_hidden, t_attn = teacher.module(**batch, **flags)
        mask = batch["attention_mask"]
        if s_hidden is not None:
            h = sum(hidden_loss(s_hidden[si + 1], t_hidden[ti + 1], mask) for si, ti in enumerate(mapping))
            parts["hidden"] = obj.hidden * h / len(mapping)
        if s_attn is not None:
            a = sum(attention_loss(s_attn[si], t_attn[ti], mask) for si, ti in enumerate(mapping))
            parts["attention"] = obj.attention * a / len(mapping)
    loss = sum(parts.values(), zero)
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def fit(model: TextModel, enc: Encoded, labels: np.ndarray, teacher_logits: np.ndarray | None, obj: Objective,
        sched: Schedule, store: CheckpointStore, *, resume: bool, progress: bool, desc: str,
        teacher: TextModel | None = None, mapping: list[int] | None = None) -> FitStats:  # fmt: skip
    """Train ``model`` in place (see the module docstring); returns what it did."""
    stats = FitStats()
    if sched.epochs == 0 or len(enc) == 0:
        return stats
    optimizer = _optimizer(model, sched)
    per_epoch = math.ceil(len(enc) / sched.batch_size)
    total = per_epoch * sched.epochs
    warm = max(1, round(total * sched.warmup_fraction))
    start_epoch = 0
    if resume:
        state = store.load_latest()
        if state is not None:
            try:
                model.module.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            except (KeyError, RuntimeError, ValueError) as exc:
                raise CheckpointError(f"the checkpoint in {store.folder} does not fit this model ({type(exc).__name__}). "
                                      f"Fix: delete {store.folder} to train {desc} afresh.") from None  # fmt: skip
            start_epoch, stats.steps = int(state["epoch"]), int(state["step"])
            stats.history, stats.seconds = list(state["history"]), float(state["seconds"])
            log.info("  %s: resumed after epoch %d", desc, start_epoch)
    y = torch.as_tensor(labels, dtype=torch.long)
    tl = torch.as_tensor(teacher_logits, dtype=torch.float32) if teacher_logits is not None else None
    model.module.train()
    if teacher is not None:
        teacher.module.eval()
    t0 = time.perf_counter() - stats.seconds
    token_types = model.uses_token_types
    for epoch in range(start_epoch, sched.epochs):
        batches = length_batches(enc.lengths(), sched.batch_size, torch.Generator().manual_seed(sched.seed * 10_007 + epoch))
        bar = _bar(len(batches), f"{desc} epoch {epoch + 1}/{sched.epochs}", progress)
        sums: dict[str, float] = {}
        for idx in batches:
            for group in optimizer.param_groups:
                group["lr"] = sched.lr * warmup_linear_decay(stats.steps, total, warm)
            batch = enc.batch(idx, token_types)
            loss, parts = _step_loss(model, batch, y[idx], tl[idx] if tl is not None else None, obj, teacher, mapping)
            if not torch.isfinite(loss):
                raise TrainingError(f"{desc}: the loss became {float(loss)} at step {stats.steps + 1} (terms: {parts}). "
                                    "Fix: lower the learning rate (train.lr, or teacher.lr while fine-tuning).")  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.module.parameters(), 1.0)
            optimizer.step()
            stats.steps += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
            if sched.max_minutes is not None and time.perf_counter() - t0 > sched.max_minutes * 60:
                stats.stopped_by_time = True
                break
        if bar is not None:
            bar.close()
        n = max(1, len(batches))
        stats.history.append({"epoch": epoch + 1, **{k: round(v / n, 6) for k, v in sums.items()}})
        stats.epochs_done = epoch + 1
        stats.seconds = time.perf_counter() - t0
        log.info("  %s epoch %d/%d: %s (%.0f s)", desc, epoch + 1, sched.epochs,
                 ", ".join(f"{k} {v / n:.4f}" for k, v in sums.items()), stats.seconds)  # fmt: skip
        store.save(epoch + 1, {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                               "epoch": epoch + 1, "step": stats.steps, "history": stats.history,
                               "seconds": stats.seconds})  # fmt: skip
        if stats.stopped_by_time:
            log.info("  %s: stopped by its time budget after %d steps", desc, stats.steps)
            break
    model.module.eval()
    return stats


def _bar(total: int, desc: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
