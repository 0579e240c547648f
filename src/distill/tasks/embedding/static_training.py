"""Fine-tuning a static sentence-embedding student (:mod:`distill.tasks.embedding.static_embed`) against the
teacher's sentence embeddings: the training loop, written out."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.tasks.embedding import static_model as light
from distill.core.distributed import Ranks
from distill.errors import DataError, TrainingError
from distill.tasks.embedding.static_embed import MIN_WEIGHT, StaticEmbedder


def _gather(ids: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat ids and offsets of the texts ``idx`` (vectorised, no loop per text)."""
    lengths = offsets[idx + 1] - offsets[idx]
    new_off = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_off[1:])
    pos = np.repeat(offsets[idx] - new_off[:-1], lengths) + np.arange(new_off[-1], dtype=np.int64)
    return ids[pos], new_off


def _step_loss(model: StaticEmbedder, ids: np.ndarray, offsets: np.ndarray, idx: np.ndarray, targets: Tensor,
               relational: float, ranks: Ranks) -> tuple[Tensor, float]:  # fmt: skip
    """This rank's loss on its share of the global batch ``idx`` (what it back-propagates), and the loss of the
    whole batch (the same on every rank): ``1 - cos`` per text, normalised by the global batch, plus the
    relational term on every rank's embeddings gathered."""
    mine = ranks.share(idx)
    if len(mine):
        b_ids, b_off = _gather(ids, offsets, mine)
        out = model(torch.from_numpy(b_ids), torch.from_numpy(b_off))
        part = (1.0 - nn.functional.cosine_similarity(out, targets[mine], dim=-1)).mean() * (len(mine) / len(idx))
    else:
        out = targets.new_zeros((0, targets.shape[1]))
        part = targets.new_zeros(())
    shared = targets.new_zeros(())
    if relational:
        unit = nn.functional.normalize(ranks.gather_rows(out, ranks.sizes(len(idx))), dim=-1)
        t = targets[ranks.gathered_order(idx)]
        shared = relational * ((unit @ unit.T - t @ t.T) ** 2).mean()
    value = float(ranks.sum(part.detach()) + shared.detach()) if ranks.many else float((part + shared).detach())
    return part + shared, value


def _check_arguments(model: StaticEmbedder, texts: list[str], targets: Tensor, epochs: Any, lr: Any, table_lr: Any,
                     pair_lr: Any, batch_size: Any, time_budget_s: Any) -> None:  # fmt: skip
    """Every problem with :func:`finetune_static`'s arguments at once, or nothing."""
    if targets.ndim != 2 or targets.shape[0] != len(texts) or targets.shape[1] != model.output_dim:
        raise DataError(
            f"targets must be (N, D) = ({len(texts)}, {model.output_dim}) (one teacher embedding per text), got "
            f"{tuple(targets.shape)}. Fix: encode exactly these texts with the teacher this model was built from."
        )
    problems = []
    if not isinstance(epochs, int) or epochs < 0:
        problems.append(f"epochs must be an integer >= 0 (got {epochs!r})")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        problems.append(f"lr must be a positive number (got {lr!r})")
    if table_lr is not None and not (isinstance(table_lr, (int, float)) and table_lr >= 0 and math.isfinite(table_lr)):
        problems.append(f"table_lr must be a number >= 0 or None (got {table_lr!r})")
    if not (isinstance(pair_lr, (int, float)) and pair_lr >= 0 and math.isfinite(pair_lr)):
        problems.append(f"pair_lr must be a number >= 0 (got {pair_lr!r})")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be an integer >= 1 (got {batch_size!r})")
    if time_budget_s is not None and not time_budget_s > 0:
        problems.append(f"time_budget_s must be > 0 or None (got {time_budget_s!r})")
    if problems:
        raise TrainingError("cannot fine-tune the static model: " + "; ".join(problems) + ".")
    if not torch.isfinite(targets).all():
        raise DataError("targets contain NaN or infinite values. Fix: recompute the teacher embeddings.")



def _useful_texts(ids: np.ndarray, offsets: np.ndarray, ignored: Tensor) -> np.ndarray:
    """The indices of the texts with at least one token of positive weight (the others carry no signal)."""
    pos_w = (~ignored).numpy()[ids]
    n = len(offsets) - 1
    useful = np.add.reduceat(pos_w.astype(np.int64), offsets[:-1]) if ids.size else np.zeros(n, np.int64)
    useful[np.diff(offsets) == 0] = 0  # reduceat gives a[start] for empty segments
    return np.flatnonzero(useful > 0)


def _decay(optimizers: list[Any], base_lrs: list[float], done: float, start: float, time_budget_s: float | None,
           ranks: Ranks) -> float:  # fmt: skip
    """Set every learning rate to its base × (1 − the share of the run done: of the steps, or of the time budget
    when the clock is further along, by rank 0's clock so that every rank takes the same rate); the factor."""
    if time_budget_s is not None:
        spent = (time.perf_counter() - start) / time_budget_s if ranks.main else 0.0
        done = max(done, float(ranks.sum(torch.tensor(spent))))
    factor = max(0.0, 1.0 - done)
    for o, lr0 in zip(optimizers, base_lrs):
        o.param_groups[0]["lr"] = lr0 * factor
    return factor


def _optimizer_step(model: StaticEmbedder, loss: Tensor, sparse_opt: Any, pair_opt: Any, dense_opt: Any, ranks: Ranks,
                    ignored: Tensor) -> None:  # fmt: skip
    """Backward, the gradients summed over the ranks (the table's and pair rows' sparse), the three optimizers'
    steps, and the token weights kept positive (ignored tokens at 0)."""
    model.embedding.weight.grad = None
    if model.pairs is not None:
        model.pairs.weight.grad = None
    dense_opt.zero_grad()
    if loss.requires_grad:
        loss.backward()
    sparse = [model.embedding.weight] + ([model.pairs.weight] if model.pairs is not None else [])
    ranks.sum_gradients([model.weights, model.proj.weight, model.proj.bias], sparse=sparse)
    if sparse_opt is not None:
        sparse_opt.step()
    if pair_opt is not None and model.pairs.weight.grad is not None:  # no pair in this batch: no gradient
        pair_opt.step()
    dense_opt.step()
    with torch.no_grad():
        model.weights.clamp_(min=MIN_WEIGHT).masked_fill_(ignored, 0.0)


def finetune_static(
    model: StaticEmbedder, texts: list[str], targets: Tensor, *, epochs: int = 3, lr: float = 1e-3,
    batch_size: int = 256, seed: int = 0, time_budget_s: float | None = None, progress: bool = True,
    table_lr: float | None = None, relational: float = 0.0, pair_lr: float = 6e-4, decay: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Train ``model`` in place so that ``model(text)`` points where the teacher's embedding of
    ``text`` (``targets[i]``, (N, D)) does: loss ``1 − cos``. Deterministic for a ``seed`` on CPU.

    ``relational > 0`` adds that weight times the mean squared difference between the student's and the
    teacher's in-batch cosine-similarity matrices (relational KD on similarities: what search and
    Spearman agreement measure, rather than where each vector points).

    ``lr`` is Adam's for the weights and the projection; ``table_lr`` (default: ``lr``; 0 freezes the
    table) is SparseAdam's for the table, ``pair_lr`` (0 freezes them) for the pair rows, if the model has them:
    they start at zero and have many more parameters than texts to fit, so they learn slower (on a validation
    split of WordNet, 4 epochs with decay: Spearman agreement 0.839 at 6e-4, 0.837 at 3e-4 and 1e-3, 0.831
    at 1.5e-4). On MiniLM (dim 256, 20k sentences) lr 1e-3 for 3-6 epochs was best on held-out text; 1e-2
    overfits within a few epochs (the table has V x d parameters).
    ``decay`` (the default): every learning rate falls linearly to 0 over the epochs, or over the time budget
    when the clock is further along, as the transformer students' do (WordNet validation split, with pair
    rows: Spearman agreement 0.833 after 4 epochs, against 0.826 at best with constant rates).
    Stops after ``epochs`` or once ``time_budget_s`` seconds have passed (checked every step). Texts
    without a token of positive weight carry no signal and are skipped. Returns ``{"epochs",
    "steps", "seconds", "initial_loss", "final_loss", "epoch_losses", "texts_used", "stopped_by_budget", "last_lr_factor"}``
    (``final_loss``: mean loss of the last epoch, partial if the budget cut it)."""
    texts = light.check_texts(texts)
    targets = torch.as_tensor(targets)
    _check_arguments(model, texts, targets, epochs, lr, table_lr, pair_lr, batch_size, time_budget_s)
    start = time.perf_counter()
    ids, offsets = light.tokenize_flat(model.tokenizer, texts)
    ignored = model.weights.detach() == 0
    keep = _useful_texts(ids, offsets, ignored)
    targets = nn.functional.normalize(targets.detach().float(), dim=-1)
    stats: dict[str, Any] = {
        "epochs": 0, "steps": 0, "seconds": 0.0, "initial_loss": None, "final_loss": None, "epoch_losses": [],
        "texts_used": len(keep), "stopped_by_budget": False, "last_lr_factor": 1.0,
    }  # fmt: skip
    if len(keep) == 0 or epochs == 0:
        stats["seconds"] = time.perf_counter() - start
        return stats

    table_lr = lr if table_lr is None else float(table_lr)
    sparse_opt = torch.optim.SparseAdam([model.embedding.weight], lr=table_lr) if table_lr > 0 else None
    pair_opt = torch.optim.SparseAdam([model.pairs.weight], lr=pair_lr) if model.pairs is not None and pair_lr > 0 else None
    dense_opt = torch.optim.Adam([model.weights, model.proj.weight, model.proj.bias], lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    ranks = Ranks.current()  # under --nproc N each rank takes its share of every global batch
    progress = progress and ranks.main
    steps_per_epoch = math.ceil(len(keep) / batch_size)
    optimizers = [o for o in (sparse_opt, pair_opt, dense_opt) if o is not None]
    base_lrs = [o.param_groups[0]["lr"] for o in optimizers]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc="static fine-tune", unit="step", leave=False, dynamic_ncols=True)
    model.train()
    try:
        for epoch in range(epochs):
            order = keep[torch.randperm(len(keep), generator=gen).numpy()]
            total, seen = 0.0, 0
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                if decay:
                    done = stats["steps"] / (epochs * steps_per_epoch)
                    stats["last_lr_factor"] = _decay(optimizers, base_lrs, done, start, time_budget_s, ranks)
                loss, value = _step_loss(model, ids, offsets, idx, targets, relational, ranks)
                if not math.isfinite(value):
                    raise TrainingError(
                        f"static fine-tuning diverged at epoch {epoch}, step {stats['steps']} (loss {value}). "
                        f"Fix: lower lr (now {lr})."
                    )
                _optimizer_step(model, loss, sparse_opt, pair_opt, dense_opt, ranks, ignored)
                if stats["initial_loss"] is None:
                    stats["initial_loss"] = value
                total += value * len(idx)
                seen += len(idx)
                stats["steps"] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4f}")
                if time_budget_s is not None and ranks.any(time.perf_counter() - start > time_budget_s):
                    stats["stopped_by_budget"] = True
                    break
            stats["epoch_losses"].append(total / seen)
            stats["final_loss"] = total / seen
            if stats["stopped_by_budget"]:
                stats["epochs"] = epoch + seen / len(order)
                break
            stats["epochs"] = epoch + 1
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    stats["seconds"] = time.perf_counter() - start
    return stats


# ------------------------------------------------------------- save / load
