"""The training loop of transformer sentence-embedding students, written out.

The student learns the teacher's sentence embeddings (precomputed once and cached): a weighted sum of
``1 - cos`` and MSE on the pooled embedding, and, when their weights are set, hidden-state and
attention-map terms against the teacher run on the same batch (learned projections where widths
differ). Batches group sentences of similar length (less padding), in a seeded order; every epoch ends
with an atomic checkpoint (student, projections, optimizer, schedule) that ``resume`` continues from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.core.checkpoint import CheckpointStore
from distill.core.optim import length_batches
from distill.core.optim import warmup_linear_decay as lr_factor
from distill.core.distributed import Ranks
from distill.core.logs import log
from distill.errors import CheckpointError, TrainingError
from distill.models.sentence import SentenceEncoder
from distill.tasks.embedding.recipe import EmbedTrainConfig
from distill.losses.embedding import attention_loss, cosine_loss, hidden_loss, mse_loss, relational_loss

DEFAULT_LR = {"layers": 1e-4, "narrow": 5e-4, "static": 1e-3}


@dataclass
class EmbedFitResult:
    epochs_done: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_by_time: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def _pad(ids: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.as_tensor(x)
        mask[i, : len(x)] = 1
    return input_ids, mask


def layer_map(student_layers: int, teacher_layers: int, kept: Sequence[int] | None = None) -> list[int]:
    """Teacher layer (0-based) matched to each student layer: the kept ones, else evenly spaced ending at the top."""
    if kept is not None:
        return [int(i) for i in kept]
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def _projections(student: SentenceEncoder, teacher: Any, n: int) -> nn.ModuleList:
    """One learned map per mapped layer from the student's hidden size to the teacher's (identity when equal)."""
    hs, ht = student.hidden_size, teacher.hidden_size
    projs = nn.ModuleList([nn.Linear(hs, ht) for _ in range(n)])
    if hs == ht:
        for p in projs:
            nn.init.eye_(p.weight)
            nn.init.zeros_(p.bias)
    return projs


def _batch_loss(cfg: EmbedTrainConfig, out: dict[str, Any] | None, tgt: Tensor, teacher: Any, input_ids: Tensor | None,
                mask: Tensor | None, mapping: list[int], projs: nn.ModuleList, share: "Share") -> tuple[Tensor, Tensor]:  # fmt: skip
    """The weighted loss of one batch: the embedding terms against the teacher's cached embeddings, then the
    hidden-state and attention terms against the teacher run on the batch (mapped layers averaged).

    Returns ``(mine, shared)``: this rank's part of the per-sentence terms (normalised by the global batch,
    so the parts of all ranks sum to the loss of one process) and the whole-batch terms (relational: the
    same on every rank). Their sum is what this rank back-propagates. In one process ``shared`` holds 0."""
    use_hidden, use_attn = cfg.hidden > 0, cfg.attention > 0
    emb = out["embedding"] if out is not None else tgt.new_zeros((0, tgt.shape[-1]))
    frac = share.fraction
    zero = tgt.new_zeros(())
    loss = cfg.cosine * cosine_loss(emb, tgt) * frac if cfg.cosine and len(emb) else zero
    if cfg.mse and len(emb):
        loss = loss + cfg.mse * mse_loss(emb, tgt) * frac
    shared = zero
    if cfg.relational:
        everyone = share.ranks.gather_rows(emb, share.sizes)
        shared = cfg.relational * relational_loss(everyone, share.targets)
    if use_hidden or use_attn:
        tokens = mask.sum() if mask is not None else torch.zeros((), dtype=torch.long)
        token_frac = float(tokens) / max(1.0, float(share.ranks.sum(tokens.double())))
        if out is None:
            return loss, shared
        assert input_ids is not None and mask is not None
        with torch.no_grad():
            t_out = teacher.features(input_ids, mask, hidden_states=use_hidden, attentions=use_attn)
        for si, ti in enumerate(mapping):
            if use_hidden:
                loss = loss + cfg.hidden * hidden_loss(out["hidden_states"][si + 1], t_out["hidden_states"][ti + 1], mask,
                                                       projs[si]) / len(mapping) * token_frac  # fmt: skip
            if use_attn:
                loss = loss + cfg.attention * attention_loss(out["attentions"][si], t_out["attentions"][ti],
                                                             mask) / len(mapping) * token_frac  # fmt: skip
    return loss, shared


@dataclass
class Share:
    """This rank's share of one global batch: the fraction of its sentences here, every rank's row count, and
    the teacher's embeddings of the whole batch in gathered order (for whole-batch terms)."""

    ranks: Ranks
    fraction: float
    sizes: list[int]
    targets: Tensor


def _share(ranks: Ranks, batch: np.ndarray, targets: Tensor) -> tuple[np.ndarray, Share]:
    mine = ranks.share(batch)
    order = ranks.gathered_order(batch)
    return mine, Share(ranks, len(mine) / len(batch), ranks.sizes(len(batch)), targets[torch.as_tensor(order)])


def _resume(state: dict[str, Any], store: CheckpointStore, student: Any, projs: nn.ModuleList, opt: Any,
            sched: Any) -> EmbedFitResult:  # fmt: skip
    """Load a checkpoint's student, projections, optimizer, schedule and generator; the fit's progress so far."""
    try:
        student.load_state_dict(state["student"])
        projs.load_state_dict(state["projs"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
    except (RuntimeError, KeyError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {store.folder}: {exc}. Fix: delete it to start this student again.") from None
    if "rng" in state:  # dropout draws continue where they stopped: resume is bit-exact
        torch.set_rng_state(state["rng"])
    log.info("resumed %s after epoch %d", store.folder.name, int(state["epoch"]))
    return EmbedFitResult(epochs_done=int(state["epoch"]), steps=int(state["steps"]), seconds=float(state["seconds"]),
                          history=list(state.get("history", [])))  # fmt: skip


def fit_encoder(
    student: SentenceEncoder,
    texts: Sequence[str],
    targets: np.ndarray,
    cfg: EmbedTrainConfig,
    *,
    kind: str,
    teacher: SentenceEncoder | None = None,
    kept_layers: Sequence[int] | None = None,
    checkpoint: CheckpointStore | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> EmbedFitResult:
    """Train ``student`` so that its embeddings of ``texts`` approach ``targets`` (N, D). Under ``--nproc N``
    each process takes its share of every global batch of ``cfg.batch_size`` (:mod:`distill.core.distributed`)."""
    torch.manual_seed(cfg.seed)
    fit = _Fit.setup(student, texts, targets, cfg, kind=kind, teacher=teacher, kept_layers=kept_layers)
    store = None if checkpoint is None else checkpoint if isinstance(checkpoint, CheckpointStore) else CheckpointStore(checkpoint)
    state = store.load_latest() if store is not None and resume else None
    if state is not None:
        assert store is not None
        fit.result = _resume(state, store, student, fit.projs, fit.opt, fit.sched)
    result = fit.result
    fit.deadline = time.perf_counter() + cfg.max_minutes * 60 - result.seconds if cfg.max_minutes else None
    student.train()
    if teacher is not None:
        teacher.eval()
    for epoch in range(result.epochs_done, cfg.epochs):
        loss = fit.epoch(epoch, progress=progress and fit.ranks.main)
        log.info("  epoch %d: loss %.4f (%.0f s)", epoch + 1, loss, result.seconds)
        if result.stopped_by_time:
            log.info("  stopped after %.1f minutes (train.max_minutes)", result.seconds / 60)
            break
        result.epochs_done = epoch + 1
        if store is not None and fit.ranks.main:
            store.save(epoch + 1, {"student": student.state_dict(), "projs": fit.projs.state_dict(),
                                   "opt": fit.opt.state_dict(), "sched": fit.sched.state_dict(), "epoch": epoch + 1,
                                   "steps": result.steps, "seconds": result.seconds, "history": result.history,
                                   "rng": torch.get_rng_state()})  # fmt: skip
    student.eval()
    return result


@dataclass
class _Fit:
    """One student's training, set up: tokenised text, targets, layer mapping, optimizer and schedule."""

    student: SentenceEncoder
    teacher: SentenceEncoder | None
    cfg: EmbedTrainConfig
    ids: list[list[int]]
    targets: Tensor
    mapping: list[int]
    projs: nn.ModuleList
    params: list[nn.Parameter]
    opt: Any
    sched: Any
    lr: float
    clock: dict[str, float]
    ranks: Ranks
    result: EmbedFitResult = field(default_factory=EmbedFitResult)
    deadline: float | None = None

    @classmethod
    def setup(cls, student: SentenceEncoder, texts: Sequence[str], targets: np.ndarray, cfg: EmbedTrainConfig, *,
              kind: str, teacher: SentenceEncoder | None, kept_layers: Sequence[int] | None) -> "_Fit":  # fmt: skip
        enc = student.tokenizer(list(texts), truncation=True, max_length=student.max_seq_length,
                                return_attention_mask=False, return_token_type_ids=False)  # fmt: skip
        ids: list[list[int]] = enc["input_ids"]
        use_hidden, use_attn = cfg.hidden > 0, cfg.attention > 0
        if (use_hidden or use_attn) and teacher is None:
            raise TrainingError("hidden/attention terms need the teacher; pass it to fit_encoder")
        mapping = layer_map(student.num_layers, teacher.num_layers, kept_layers) if teacher is not None else []
        projs = _projections(student, teacher, len(mapping)) if use_hidden else nn.ModuleList()
        if use_attn:
            for m in (student, teacher):
                m.backbone.config._attn_implementation = "eager"  # attention maps need the eager kernel
        params = [p for p in student.parameters() if p.requires_grad] + list(projs.parameters())
        lr = cfg.lr or DEFAULT_LR[kind]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # fmt: skip
        opt = torch.optim.AdamW(groups, lr=lr)
        total = max(1, math.ceil(len(ids) / cfg.batch_size) * cfg.epochs)
        warm = max(1, int(cfg.warmup_fraction * total))
        clock = {"spent": 0.0}  # share of train.max_minutes used so far (stays 0 without a time cap)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, clock["spent"]))
        target_t = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        return cls(student, teacher, cfg, ids, target_t, mapping, projs, params, opt, sched, lr, clock, Ranks.current())

    def epoch(self, epoch: int, *, progress: bool) -> float:
        """One pass over the text in seeded batches of similar length; returns its mean loss."""
        cfg, result = self.cfg, self.result
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        batches = length_batches([len(x) for x in self.ids], cfg.batch_size, gen)
        it: Any = batches
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        total_loss, seen = 0.0, 0
        for b in it:
            value = self.step(b)
            if self.deadline is not None:  # a time cap: the rate decays with the budget spent too, so it anneals
                spent = (result.seconds + time.perf_counter() - t0) / (cfg.max_minutes * 60)  # type: ignore[operator]
                self.clock["spent"] = float(self.ranks.sum(torch.tensor(spent if self.ranks.main else 0.0)))
            self.sched.step()
            result.steps += 1
            total_loss += value * len(b)
            seen += len(b)
            if progress:
                it.set_postfix(loss=f"{total_loss / seen:.4f}")
            if self.deadline is not None and self.ranks.any(time.perf_counter() > self.deadline):
                result.stopped_by_time = True
                break
        result.seconds += time.perf_counter() - t0
        result.history.append({"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "seconds": result.seconds})
        return total_loss / max(seen, 1)

    def step(self, batch: np.ndarray) -> float:
        """One optimizer step on a global batch (this rank's share of it); returns the batch's loss."""
        cfg, ranks = self.cfg, self.ranks
        use_hidden, use_attn = cfg.hidden > 0, cfg.attention > 0
        mine, share = _share(ranks, batch, self.targets)
        out, input_ids, mask = None, None, None
        if len(mine):
            input_ids, mask = _pad([self.ids[i] for i in mine], self.student.tokenizer.pad_token_id or 0)
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                out = self.student.features(input_ids, mask, hidden_states=use_hidden, attentions=use_attn)
            if cfg.precision == "bf16":  # the losses in float32: the embedding, hidden states, attention maps
                out = {k: v.float() if isinstance(v, Tensor) else tuple(t.float() for t in v) for k, v in out.items()}
        part, shared = _batch_loss(cfg, out, self.targets[torch.as_tensor(mine)], self.teacher, input_ids, mask,
                                   self.mapping, self.projs, share)  # fmt: skip
        loss = part + shared
        value = float(ranks.sum(part.detach()) + shared.detach()) if ranks.many else float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at step {self.result.steps + 1}. Fix: lower train.lr (now {self.lr:g})."
            )
        self.opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        ranks.sum_gradients(self.params)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return value
