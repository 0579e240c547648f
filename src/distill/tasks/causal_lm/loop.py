"""The language-model training loop, written out: steps of gradient-accumulation windows.

One optimizer step = ``grad_accum`` micro-batches. The distillation loss of a micro-batch is the
SUM over its real positions (``token_loss``), divided by the number of real positions in the whole
window, so the result does not depend on how the window is split. Cross-entropy (on data batches)
is normalised the same way by its own count.

Batches are a pure function of (seed, micro-batch index): a resumed run replays exactly the batches
an uninterrupted one would have seen. Checkpoints every ``checkpoint_every`` steps (atomic,
checksummed: :class:`~distill.core.checkpoint.CheckpointStore`).

With N processes (``distill run --nproc N``, DDP through Accelerate), ``train.batch_size`` is per
process: micro-batch ``g`` is the global batch of N·B blocks that one process with batch N·B would
draw, and rank r trains on its r-th share (see :func:`block_batches`). The token counts that normalise
the loss are summed over all ranks, so N processes give the gradient of one process with batch N·B
(up to the order of float additions).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distill.core.checkpoint import CheckpointStore
from distill.losses.chunked import ChunkStats
from distill.core.optim import epoch_generator, make_optimizer, make_scheduler, prepare_for_training
from distill.errors import DataError, TrainingError
from distill.tasks.causal_lm.signal import fused_head, lm_logits, on_policy_sequences

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


def block_batches(blocks: Tensor, batch_size: int, seed: int, mask: Tensor | None = None, *, rank: int = 0,
                  world: int = 1) -> Callable[[int], Batch]:  # fmt: skip
    """Micro-batch ``g`` → this rank's share of the global batch of ``world · batch_size`` blocks (the batch
    one process with that batch size draws: rank ``r`` takes the r-th of ``world`` consecutive slices)."""
    if len(blocks) < world:
        raise DataError(
            f"{len(blocks)} training blocks for {world} processes: each process needs at least one block per "
            "micro-batch. Fix: run with fewer processes (--nproc), or give more data (or a shorter data.block_len)."
        )
    sampler = BlockSampler(len(blocks), batch_size * world, seed)

    def make(g: int) -> Batch:
        rows = sampler.rows(g)
        if world > 1:
            rows = rows.tensor_split(world)[rank]
        ids = blocks.index_select(0, rows)
        m = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.index_select(0, rows)
        return Batch(ids, m, rows)

    return make


def on_policy_batches(
    blocks: Tensor, batch_size: int, seed: int, student: Any, *, fraction: float, prompt_len: int, gen_len: int,
    rank: int = 0, world: int = 1,
) -> Callable[[int], Batch]:
    """GKD: with probability ``fraction`` (a seeded coin per micro-batch) the student continues the
    prompts of the batch's blocks (sampled, no grad); otherwise the data block itself.

    With ``world`` processes the coin is the same on every rank (all generate, or none) and each rank
    samples the continuations of its own share with its own seeded generator (rank 0 with the one a
    single process uses): deterministic, and equal to one process with the global batch in
    distribution, not draw for draw."""
    data = block_batches(blocks, batch_size, seed, rank=rank, world=world)

    def make(g: int) -> Batch:
        b = data(g)
        gen = torch.Generator().manual_seed((seed * 7_919 + g * 104_729 + 17) % (2**63 - 1))
        if float(torch.rand((), generator=gen)) >= fraction:
            return b
        if rank:
            gen = torch.Generator().manual_seed((seed * 7_919 + g * 104_729 + rank * 1_299_709 + 17) % (2**63 - 1))
        ids, mask = on_policy_sequences(student, b.ids, prompt_len, gen_len, gen)
        return Batch(ids, mask, None, data=False)

    return make


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


def _global_counts(window: list[Batch], accelerator: Any) -> tuple[int, int]:
    """The real positions of the window (distillation) and its next-token targets (cross-entropy on data
    batches), summed over every rank's share: the loss of each share is divided by the global count."""
    n_kd = sum(int(b.mask.sum()) for b in window)
    n_ce = sum(int(b.mask[:, :-1].sum()) for b in window if b.data)
    if accelerator.num_processes > 1:
        counts = torch.tensor([n_kd, n_ce], dtype=torch.int64, device=accelerator.device)
        counts = accelerator.reduce(counts, reduction="sum").cpu()
        n_kd, n_ce = int(counts[0]), int(counts[1])
    return n_kd, n_ce


def _rng_states(accelerator: Any) -> list[Tensor]:
    """Every rank's torch RNG state (dropout), rank 0 first. With N processes a collective: all ranks call it."""
    state = torch.get_rng_state()
    if accelerator.num_processes == 1:
        return [state]
    rows = accelerator.gather(state.to(torch.int64)[None].to(accelerator.device)).cpu()
    return [row.to(torch.uint8) for row in rows]


def _resume(model: Any, optimizer: Any, scheduler: Any, checkpoints: CheckpointStore, rank: int,
            role: str, steps: int) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    state = checkpoints.load_latest()
    if state is None:
        return [], 0
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("torch_rng_ranks") or [state["torch_rng"]]
    torch.set_rng_state(ranks[rank] if rank < len(ranks) else ranks[0])
    start = int(state["epoch"])
    log.info("%s: resumed after step %d of %d", role, start, steps)
    return list(state["history"]), start


def _interval(pending: list[list[float]], accelerator: Any) -> tuple[float, float, float]:
    """Over the steps since the last log row, every rank's share added: (Σ step losses, mean true KL per
    position on the steps that measured it, tokens).

    ``pending`` holds per step this rank's [Σ micro-batch losses, Σ KL, KL positions, tokens]; each rank's loss
    is ``world ×`` its share of the global one (DDP averages gradients), hence the ``/ world``."""
    world = accelerator.num_processes
    if world > 1:
        summed = accelerator.reduce(torch.tensor(pending, dtype=torch.float64, device=accelerator.device), "sum")
        pending = summed.cpu().tolist()
    loss = sum(p[0] for p in pending) / world
    positions = sum(p[2] for p in pending)
    return loss, sum(p[1] for p in pending) / max(positions, 1), sum(p[3] for p in pending)


def _micro_loss(model: Any, b: Batch, objective: Objective, accelerator: Any, n_kd: int, n_ce: int,
                stats: Any, fused: tuple[Any, Any] | None) -> Tensor:  # fmt: skip
    """This rank's share of the window loss for micro-batch ``b`` (× world: DDP averages the gradients), in one
    pass over the positions in chunks (:mod:`distill.losses.chunked`): the distillation term and cross-entropy
    together; with ``fused`` the student's full logits are never made. ``stats`` collects the true KL."""
    from distill.losses.chunked import chunked_token_loss, fused_token_loss, next_token_targets

    world, device = accelerator.num_processes, accelerator.device
    ids, mask = b.ids.to(device), b.mask.to(device)
    teacher = objective.teacher(b).to(device) if objective.teacher is not None else None
    ce_weight = 1.0 if teacher is None else objective.ce_weight
    ce_scale = ce_weight * world / n_ce if ce_weight > 0 and b.data and n_ce else 0.0
    kw = dict(temperature=objective.temperature, kd_scale=world / max(n_kd, 1) if teacher is not None else 0.0,
              ce_targets=next_token_targets(ids, mask) if ce_scale else None, ce_scale=ce_scale, stats=stats,
              **(objective.params or {}))  # fmt: skip
    with accelerator.autocast():
        if fused is not None:
            body, head = fused
            hidden = body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state
            return fused_token_loss(objective.loss, hidden, head.weight, head.bias, teacher, mask, **kw)
        return chunked_token_loss(objective.loss, lm_logits(model, ids), teacher, mask, **kw)


def _bar(role: str, start: int, steps: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=start, desc=role, unit="step", leave=False, dynamic_ncols=True)


def _advance(bar: Any, done: int, loss: float | None) -> None:
    bar.update(1)
    if done % 10 == 0 and loss is not None:
        bar.set_postfix(loss=f"{loss:.4f}")


def _backward_window(model: Any, window: list[Batch], objective: Objective, accelerator: Any, kl: Any,
                     fused: tuple[Any, Any] | None) -> tuple[float, int]:  # fmt: skip
    """Forward and backward of every micro-batch of one optimizer step (gradients synchronised on the last one
    only); returns the window's summed loss and its tokens. A non-finite loss raises ``FloatingPointError(loss)``."""
    world = accelerator.num_processes
    n_kd, n_ce = _global_counts(window, accelerator)
    step_loss, tokens = 0.0, 0
    for i, b in enumerate(window):
        last = i == len(window) - 1
        with accelerator.no_sync(model) if world > 1 and not last else contextlib.nullcontext():
            loss = _micro_loss(model, b, objective, accelerator, n_kd, n_ce, kl, fused)
            if not torch.isfinite(loss):
                raise FloatingPointError(loss)
            accelerator.backward(loss)
        step_loss += float(loss.detach())
        tokens += int(b.ids.numel())
    return step_loss, tokens


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
    """Train ``model`` for ``cfg.steps`` optimizer steps; return the logged history (the same on every rank).

    With N processes ``make_batch`` gives this rank's share of each global micro-batch (``block_batches(...,
    rank=, world=)``: ``cfg.batch_size`` blocks per process, N·B per micro-batch in all). Each share's loss is
    divided by the window's real positions counted over all ranks (one all-reduce of two integers per step)
    and multiplied by N, so DDP's mean of the gradients is the gradient of the whole global window: N
    processes with batch B train as one process with batch N·B, up to the order of float additions. The
    gradients are synchronised once per step (the other micro-batches of the window under ``no_sync``);
    the logged loss and true KL are summed over the ranks at each log row; checkpoints (written by the
    main process) keep every rank's RNG state. Dropout is seeded ``train.seed + rank``.
    """
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg, cfg.steps)
    model, optimizer = prepare_for_training(accelerator, model, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    history: list[dict[str, Any]] = []
    start = 0
    if resume and checkpoints is not None:
        history, start = _resume(model, optimizer, scheduler, checkpoints, rank, role, cfg.steps)
    if start == 0:
        torch.manual_seed(cfg.seed + rank)  # dropout: a fit does not depend on what ran before it in the process
    log.info("%s: %d steps × %d micro-batches of %d%s, objective %s", role, cfg.steps, cfg.grad_accum,
             cfg.batch_size, f" per process × {world}" if world > 1 else "", objective.label)  # fmt: skip
    bar = _bar(role, start, cfg.steps) if progress and accelerator.is_main_process and start < cfg.steps else None
    t0, pending = time.perf_counter(), []
    model.train()
    fused = None  # the student's head fused into the loss (one process: DDP must see the model's own forward)
    for step in range(start, cfg.steps):
        window = [make_batch(step * cfg.grad_accum + m) for m in range(cfg.grad_accum)]
        if step == start and world == 1:
            fused = fused_head(model, window[0].ids.to(accelerator.device))
        optimizer.zero_grad(set_to_none=True)
        logging_step = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
        kl = ChunkStats(want_kl=logging_step and objective.teacher is not None)  # measured on logging steps only
        try:
            step_loss, tokens = _backward_window(model, window, objective, accelerator, kl, fused)
        except FloatingPointError as e:
            if bar is not None:
                bar.close()
            raise _diverged(role, e.args[0], step, objective, checkpoints, cfg) from None
        if cfg.grad_clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        pending.append([step_loss, kl.kl_sum, kl.positions if kl.want_kl else 0, tokens])
        done = step + 1
        if bar is not None:
            _advance(bar, done, step_loss if world == 1 else (history[-1]["loss"] if history else None))
        if done % cfg.log_every == 0 or done == cfg.steps:
            history.append(_log_row(role, done, cfg.steps, _interval(pending, accelerator), len(pending),
                                    scheduler, time.perf_counter() - t0, objective.teacher is not None))  # fmt: skip
            t0, pending = time.perf_counter(), []
        if checkpoints is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _checkpoint(checkpoints, done, model, optimizer, scheduler, history, accelerator)
        if stop_after_steps is not None and done - start >= stop_after_steps and done < cfg.steps:
            if bar is not None:
                bar.close()
            raise KeyboardInterrupt(f"stopped after {done} steps (test hook)")
    if bar is not None:
        bar.close()
    _unwrap(model).eval()
    return history


def _diverged(role: str, loss: Tensor, step: int, objective: Objective, checkpoints: CheckpointStore | None,
              cfg: Any) -> TrainingError:  # fmt: skip
    return TrainingError(
        f"{role}: the loss became {float(loss.detach())} at step {step + 1} (objective {objective.label}); "
        f"training stopped. The last good checkpoint (if any) is kept in "
        f"{checkpoints.folder if checkpoints else '(none)'}. Fix: lower train.optimizer.lr "
        f"(now {cfg.optimizer.lr}), keep train.grad_clip set, or check the data."
    )


def _checkpoint(checkpoints: CheckpointStore, done: int, model: Any, optimizer: Any, scheduler: Any,
                history: list[dict[str, Any]], accelerator: Any) -> None:  # fmt: skip
    """Every process calls it (the RNG states are gathered); the main one writes."""
    rng = _rng_states(accelerator)
    if accelerator.is_main_process:
        checkpoints.save(done, {
            "epoch": done,
            "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": rng[0],
            **({"torch_rng_ranks": rng} if accelerator.num_processes > 1 else {}),
            "history": history,
        })  # fmt: skip


def _log_row(role: str, done: int, steps: int, sums: tuple[float, float, float], n: int, scheduler: Any,
             elapsed: float, distilling: bool) -> dict[str, Any]:  # fmt: skip
    loss, kl, tokens = sums
    row = {"step": done, "loss": loss / n, "lr": float(scheduler.get_last_lr()[0]),
           "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1), "seconds": round(elapsed, 3)}  # fmt: skip
    if distilling:
        row["true_kl"] = kl
    extra = f" true KL(teacher‖student)={row['true_kl']:.4f}" if distilling else ""
    log.info("%s step %d/%d: loss=%.4f%s lr=%.2e | %.0f tokens/s", role, done, steps, row["loss"], extra,
             row["lr"], row["tokens_per_s"])  # fmt: skip
    return row
