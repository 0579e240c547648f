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
from torch import Tensor, nn

from distill.core.checkpoint import CheckpointStore
from distill.core.distributed import Ranks
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


def _optimizers(model: TextModel, sched: Schedule) -> list[torch.optim.Optimizer]:
    """AdamW for the dense weights; SparseAdam (lazy Adam: only the rows a batch used) for sparse token tables."""
    sparse = {id(p) for p in _sparse(model)}
    decay, no_decay, rows = [], [], []
    for name, p in model.module.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in sparse:
            rows.append(p)
            continue
        table = isinstance(model.module, StaticClassifier) and name.startswith("table")
        (no_decay if p.ndim < 2 or table or "LayerNorm" in name or "embeddings" in name else decay).append(p)
    out: list[torch.optim.Optimizer] = [torch.optim.AdamW([{"params": decay, "weight_decay": sched.weight_decay},
                                                           {"params": no_decay, "weight_decay": 0.0}], lr=sched.lr)]  # fmt: skip
    if rows:
        out.append(torch.optim.SparseAdam(rows, lr=sched.lr))
    return out


def _sparse(model: TextModel) -> list[nn.Parameter]:
    """The weights of sparse token tables (their gradients are sparse)."""
    return [m.weight for m in model.module.modules() if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad]


def _dense(model: TextModel) -> list[nn.Parameter]:
    """The parameters whose gradients are clipped (a sparse table's rows are not: their norm is not defined)."""
    sparse = {id(p) for p in _sparse(model)}
    return [p for p in model.module.parameters() if p.requires_grad and id(p) not in sparse]


def _step_loss(model: TextModel, batch: dict[str, Tensor], labels: Tensor, t_logits: Tensor | None, obj: Objective,
               teacher: TextModel | None, mapping: list[int] | None, *, rows: int, known: int,
               tokens: int) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """This process's part of the loss of a global batch of ``rows`` texts (``known`` of them labelled, ``tokens``
    tokens in all): every term is normalised by the global batch (per-token terms by its tokens), so the parts of
    all processes add up to the one-process loss."""
    features = (obj.hidden > 0 or obj.attention > 0) and teacher is not None and mapping is not None
    flags = {"hidden": obj.hidden > 0, "attentions": obj.attention > 0}
    out = model.module(**batch, **flags) if features else model.module(**batch)
    logits, s_hidden, s_attn = out if features else (out, None, None)
    share = len(labels) / rows  # the batch-mean terms, weighted by this process's share of the rows
    token_share = float(batch["attention_mask"].sum()) / tokens  # the per-token terms, by its share of the tokens
    parts: dict[str, Tensor] = {}
    if obj.kd and t_logits is not None:
        parts["kd"] = obj.kd * kd_loss(logits, t_logits, temperature=obj.temperature) * share
    mine = labels >= 0  # transfer-set rows (-1) have soft labels only
    if obj.ce and known:
        parts["ce"] = obj.ce * F.cross_entropy(logits[mine].float(), labels[mine], reduction="sum") / known
    if features:
        assert teacher is not None and mapping is not None
        with torch.no_grad():
            _, t_hidden, t_attn = teacher.module(**batch, **flags)
        mask = batch["attention_mask"]
        if s_hidden is not None:
            h = sum(hidden_loss(s_hidden[si + 1], t_hidden[ti + 1], mask) for si, ti in enumerate(mapping))
            parts["hidden"] = obj.hidden * h / len(mapping) * token_share
        if s_attn is not None:
            a = sum(attention_loss(s_attn[si], t_attn[ti], mask) for si, ti in enumerate(mapping))
            parts["attention"] = obj.attention * a / len(mapping) * token_share
    return sum(parts.values(), logits.new_zeros(())), parts


def _term_names(obj: Objective, has_teacher_logits: bool, known: int, features: bool) -> list[str]:
    """The loss terms of a step, the same on every process (a process whose share is empty logs zeros)."""
    on = {"kd": bool(obj.kd) and has_teacher_logits, "ce": bool(obj.ce) and known > 0,
          "hidden": features and obj.hidden > 0, "attention": features and obj.attention > 0}  # fmt: skip
    return [k for k, v in on.items() if v]


def _resume(store: CheckpointStore, model: TextModel, optimizers: list[torch.optim.Optimizer], stats: FitStats,
            desc: str) -> int:  # fmt: skip
    """Load the latest checkpoint into the model and optimizers; the epoch it ended (0: none)."""
    state = store.load_latest()
    if state is None:
        return 0
    try:
        model.module.load_state_dict(state["model"])
        for opt, key in zip(optimizers, ("optimizer", "optimizer_sparse"), strict=False):
            opt.load_state_dict(state[key])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint in {store.folder} does not fit this model ({type(exc).__name__}). "
                              f"Fix: delete {store.folder} to train {desc} afresh.") from None  # fmt: skip
    stats.steps, stats.history, stats.seconds = int(state["step"]), list(state["history"]), float(state["seconds"])
    log.info("  %s: resumed after epoch %d", desc, int(state["epoch"]))
    return int(state["epoch"])


@dataclass
class _Loop:
    """What every step of one fit shares: the data, the objective, the optimizers, this process's place."""

    model: TextModel
    enc: Encoded
    y: Tensor
    tl: Tensor | None
    obj: Objective
    optimizers: list[torch.optim.Optimizer]
    teacher: TextModel | None
    mapping: list[int] | None
    ranks: Ranks
    dense: list[nn.Parameter] = field(default_factory=list)
    sparse: list[nn.Parameter] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dense, self.sparse = _dense(self.model), _sparse(self.model)

    def step(self, idx: list[int], lr: float, desc: str, step_no: int) -> tuple[float, dict[str, float]]:
        """One optimizer step on the global batch ``idx`` (this process's share of it); the global loss and terms."""
        ranks, obj = self.ranks, self.obj
        for group in (g for opt in self.optimizers for g in opt.param_groups):
            group["lr"] = lr
        known = int((self.y[idx] >= 0).sum())
        features = (obj.hidden > 0 or obj.attention > 0) and self.teacher is not None and self.mapping is not None
        names = _term_names(obj, self.tl is not None, known, features)
        mine = ranks.share(np.asarray(idx)).tolist()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        parts: dict[str, Tensor] = {}
        if mine:
            batch = self.enc.batch(mine, self.model.uses_token_types)
            loss, parts = _step_loss(self.model, batch, self.y[mine], self.tl[mine] if self.tl is not None else None,
                                     obj, self.teacher, self.mapping, rows=len(idx), known=known,
                                     tokens=sum(len(self.enc.ids[i]) for i in idx))  # fmt: skip
            loss.backward()
        values = torch.stack([parts[k].detach().float() if k in parts else torch.zeros(()) for k in names]) \
            if names else torch.zeros(0)  # fmt: skip
        values = ranks.sum(values)
        total = float(values.sum())
        if not math.isfinite(total):
            raise TrainingError(f"{desc}: the loss became {total} at step {step_no} (terms: "
                                f"{dict(zip(names, values.tolist()))}). Fix: lower the learning rate (train.lr, or "
                                "teacher.lr while fine-tuning).")  # fmt: skip
        ranks.sum_gradients(self.dense, sparse=self.sparse)
        torch.nn.utils.clip_grad_norm_(self.dense, 1.0)
        for opt in self.optimizers:
            opt.step()
        return total, dict(zip(names, values.tolist()))


def fit(model: TextModel, enc: Encoded, labels: np.ndarray, teacher_logits: np.ndarray | None, obj: Objective,
        sched: Schedule, store: CheckpointStore, *, resume: bool, progress: bool, desc: str,
        teacher: TextModel | None = None, mapping: list[int] | None = None) -> FitStats:  # fmt: skip
    """Train ``model`` in place (see the module docstring); returns what it did. Under ``--nproc N`` every process
    takes its share of each global batch and the gradients are summed (distill.core.distributed); the main one
    writes the checkpoints."""
    stats = FitStats()
    if sched.epochs == 0 or len(enc) == 0:
        return stats
    ranks = Ranks.current()
    progress = progress and ranks.main
    optimizers = _optimizers(model, sched)
    total = math.ceil(len(enc) / sched.batch_size) * sched.epochs
    warm = max(1, round(total * sched.warmup_fraction))
    start_epoch = _resume(store, model, optimizers, stats, desc) if resume else 0
    tl = torch.as_tensor(teacher_logits, dtype=torch.float32) if teacher_logits is not None else None
    loop = _Loop(model, enc, torch.as_tensor(labels, dtype=torch.long), tl, obj, optimizers, teacher, mapping, ranks)
    model.module.train()
    if teacher is not None:
        teacher.module.eval()
    t0 = time.perf_counter() - stats.seconds
    for epoch in range(start_epoch, sched.epochs):
        batches = length_batches(enc.lengths(), sched.batch_size, torch.Generator().manual_seed(sched.seed * 10_007 + epoch))
        bar = _bar(len(batches), f"{desc} epoch {epoch + 1}/{sched.epochs}", progress)
        sums: dict[str, float] = {}
        for idx in batches:
            value, parts = loop.step(list(idx), sched.lr * warmup_linear_decay(stats.steps, total, warm), desc,
                                     stats.steps + 1)  # fmt: skip
            stats.steps += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            late = sched.max_minutes is not None and time.perf_counter() - t0 > sched.max_minutes * 60
            if ranks.any(late):
                stats.stopped_by_time = True
                break
        if bar is not None:
            bar.close()
        _end_epoch(stats, epoch, sched, sums, len(batches), t0, desc)
        if ranks.main:
            opt_states = dict(zip(("optimizer", "optimizer_sparse"), (o.state_dict() for o in optimizers), strict=False))
            store.save(epoch + 1, {"model": model.module.state_dict(), **opt_states, "epoch": epoch + 1,
                                   "step": stats.steps, "history": stats.history, "seconds": stats.seconds})  # fmt: skip
        if stats.stopped_by_time:
            log.info("  %s: stopped by its time budget after %d steps", desc, stats.steps)
            break
    model.module.eval()
    return stats


def _end_epoch(stats: FitStats, epoch: int, sched: Schedule, sums: dict[str, float], n: int, t0: float,
               desc: str) -> None:  # fmt: skip
    n = max(1, n)
    stats.history.append({"epoch": epoch + 1, **{k: round(v / n, 6) for k, v in sums.items()}})
    stats.epochs_done = epoch + 1
    stats.seconds = time.perf_counter() - t0
    log.info("  %s epoch %d/%d: %s (%.0f s)", desc, epoch + 1, sched.epochs,
             ", ".join(f"{k} {v / n:.4f}" for k, v in sums.items()), stats.seconds)  # fmt: skip


def _bar(total: int, desc: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
