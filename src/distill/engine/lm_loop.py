"""The language-model training loop, written out: steps of gradient-accumulation windows.

One optimizer step = ``grad_accum`` micro-batches. The distillation loss of a micro-batch is the
SUM over its real positions (``token_loss``), divided by the number of real positions in the whole
window, so the result does not depend on how the window is split. Cross-entropy (on data batches)
is normalised the same way by its own count.

Batches are a pure function of (seed, micro-batch index): a resumed run replays exactly the batches
an uninterrupted one would have seen. Checkpoints every ``checkpoint_every`` steps (atomic,
checksummed: :class:`~distill.core.checkpoint.CheckpointStore`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distill.core.checkpoint import CheckpointStore
from distill.engine.loop import epoch_generator, make_optimizer, make_scheduler
from distill.errors import TrainingError
from distill.tasks.causal_lm import ce_sum, lm_logits, on_policy_sequences

log = logging.getLogger("distill")


@dataclass
class Batch:
    """One micro-batch: ``ids (B, L)``, the position mask ``(B, L)`` of the positions trained, the
    rows of the training blocks it came from (None when generated), and whether it is data (CE applies)."""

    ids: Tensor
    mask: Tensor
    rows: Tensor | None
    data: bool = True


@dataclass
class Objective:
    """``kd_weight · token_loss(loss) / n + ce_weight · CE / n``; ``teacher(batch)`` gives dense logits
    or a ``TeacherTopK`` (None: no distillation term)."""

    loss: str = "fkl"
    params: dict[str, Any] | None = None
    temperature: float = 1.0
    ce_weight: float = 0.0
    teacher: Callable[[Batch], Any] | None = None

    @property
    def label(self) -> str:
        if self.teacher is None:
            return "ce"
        extra = f" + {self.ce_weight:g}·ce" if self.ce_weight else ""
        return f"{self.loss}{self.params or ''} T={self.temperature:g}{extra}"


class BlockSampler:
    """Micro-batch ``g`` → rows of ``n`` blocks: seeded permutations, one per pass over the blocks."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(n // self.bs, 1)
        self._perm: tuple[int, Tensor] | None = None

    def rows(self, g: int) -> Tensor:
        epoch, i = divmod(g, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=epoch_generator(self.seed, epoch + 1)))
        return self._perm[1][i * self.bs : (i + 1) * self.bs]


def block_batches(blocks: Tensor, batch_size: int, seed: int, mask: Tensor | None = None) -> Callable[[int], Batch]:
    sampler = BlockSampler(len(blocks), batch_size, seed)

    def make(g: int) -> Batch:
        rows = sampler.rows(g)
        ids = blocks.index_select(0, rows)
        m = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.index_select(0, rows)
        return Batch(ids, m, rows)

    return make


def on_policy_batches(
    blocks: Tensor, batch_size: int, seed: int, student: Any, *, fraction: float, prompt_len: int, gen_len: int
) -> Callable[[int], Batch]:
    """GKD: with probability ``fraction`` (a seeded coin per micro-batch) the student continues the
    prompts of the batch's blocks (sampled, no grad); otherwise the data block itself."""
    data = block_batches(blocks, batch_size, seed)

    def make(g: int) -> Batch:
        b = data(g)
        gen = torch.Generator().manual_seed((seed * 7_919 + g * 104_729 + 17) % (2**63 - 1))
        if float(torch.rand((), generator=gen)) >= fraction:
            return b
        ids, mask = on_policy_sequences(student, b.ids, prompt_len, gen_len, gen)
        return Batch(ids, mask, None, data=False)

    return make


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


def fit_lm(
    model: Any,
    cfg: Any,
    *,
    role: str,
    make_batch: Callable[[int], Batch],
    objective: Objective,
    accelerator: Any,
    checkpoints: CheckpointStore | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``cfg.steps`` optimizer steps; return the logged history."""
    from distill.losses.token import token_loss, true_kl

    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg, cfg.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    history: list[dict[str, Any]] = []
    start = 0
    if resume and checkpoints is not None:
        state = checkpoints.load_latest()
        if state is not None:
            _unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            history = list(state["history"])
            start = int(state["epoch"])
            log.info("%s: resumed after step %d of %d", role, start, cfg.steps)
    if start == 0:
        torch.manual_seed(cfg.seed)  # dropout: a fit does not depend on what ran before it in the process
    log.info("%s: %d steps × %d micro-batches of %d, objective %s", role, cfg.steps, cfg.grad_accum,
             cfg.batch_size, objective.label)  # fmt: skip
    bar = None
    if progress and accelerator.is_main_process and start < cfg.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=role, unit="step", leave=False, dynamic_ncols=True)
    device = accelerator.device
    params = objective.params or {}
    t0, tokens, sums = time.perf_counter(), 0, {"loss": 0.0, "kl": 0.0, "n": 0}
    model.train()
    for step in range(start, cfg.steps):
        window = [make_batch(step * cfg.grad_accum + m) for m in range(cfg.grad_accum)]
        n_kd = sum(int(b.mask.sum()) for b in window)
        n_ce = sum(int(b.mask[:, :-1].sum()) for b in window if b.data)
        optimizer.zero_grad(set_to_none=True)
        step_loss, kl_sum, kl_n = 0.0, 0.0, 0
        for b in window:
            ids, mask = b.ids.to(device), b.mask.to(device)
            with accelerator.autocast():
                logits = lm_logits(model, ids)
                loss = logits.float().sum() * 0.0
                if objective.teacher is not None:
                    teacher = objective.teacher(b)
                    teacher = teacher.to(device)
                    kd = token_loss(objective.loss, logits, teacher, mask, temperature=objective.temperature, **params)
                    loss = loss + kd / max(n_kd, 1)
                    if b.mask.any():
                        kl_sum += float(true_kl(logits.detach(), teacher, mask, objective.temperature)) * int(b.mask.sum())
                        kl_n += int(b.mask.sum())
                if (objective.teacher is None or objective.ce_weight > 0) and b.data and n_ce:
                    ce, _ = ce_sum(logits, ids, mask)
                    w = 1.0 if objective.teacher is None else objective.ce_weight
                    loss = loss + w * ce / n_ce
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise TrainingError(
                    f"{role}: the loss became {float(loss.detach())} at step {step + 1} (objective {objective.label}); "
                    f"training stopped. The last good checkpoint (if any) is kept in "
                    f"{checkpoints.folder if checkpoints else '(none)'}. Fix: lower train.optimizer.lr "
                    f"(now {cfg.optimizer.lr}), keep train.grad_clip set, or check the data."
                )
            accelerator.backward(loss)
            step_loss += float(loss.detach())
            tokens += int(b.ids.numel())
        if cfg.grad_clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        sums["loss"] += step_loss
        sums["kl"] += kl_sum / max(kl_n, 1)
        sums["n"] += 1
        done = step + 1
        if bar is not None:
            bar.update(1)
            if done % 10 == 0:
                bar.set_postfix(loss=f"{step_loss:.4f}")
        if done % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - t0
            row = {"step": done, "loss": sums["loss"] / sums["n"], "lr": float(scheduler.get_last_lr()[0]),
                   "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1), "seconds": round(elapsed, 3)}  # fmt: skip
            if objective.teacher is not None:
                row["true_kl"] = sums["kl"] / sums["n"]
            history.append(row)
            kl = f" true KL(teacher‖student)={row['true_kl']:.4f}" if "true_kl" in row else ""
            log.info("%s step %d/%d: loss=%.4f%s lr=%.2e | %.0f tokens/s", role, done, cfg.steps, row["loss"], kl,
                     row["lr"], row["tokens_per_s"])  # fmt: skip
            t0, tokens, sums = time.perf_counter(), 0, {"loss": 0.0, "kl": 0.0, "n": 0}
        if checkpoints is not None and accelerator.is_main_process and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            checkpoints.save(done, {
                "epoch": done,
                "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
            })  # fmt: skip
        if stop_after_steps is not None and done - start >= stop_after_steps and done < cfg.steps:
            if bar is not None:
                bar.close()
            raise KeyboardInterrupt(f"stopped after {done} steps (test hook)")
    if bar is not None:
        bar.close()
    _unwrap(model).eval()
    return history
