"""Structured pruning of attention heads in BERT-like encoders: whole heads removed, layers shrink.

Heads are ranked per layer by the L1 norm of their columns of the output projection (how much
each head can move the block's output); the same number is kept in every layer. The surgery itself
(:mod:`distill.models.heads`) removes each dropped head's rows of query/key/value and columns of the
output projection, so the matrices really get smaller (latency falls, not only the count of zeros).
transformers 5 no longer ships ``prune_heads``; this does it on the modules themselves.

Saving: the kept heads are recorded in the model's Hugging Face config (``distill_kept_heads``).
distill's own loader (:func:`distill.models.sentence.load_sentence_encoder`) rebuilds the full-size
model from the config, shrinks it to the recorded heads and loads the weights. A plain
``from_pretrained`` (or ``sentence_transformers.SentenceTransformer``) cannot: transformers 5
dropped its ``pruned_heads`` support, so the config's head count describes the unpruned layers.
ONNX export works from memory as for any encoder.
"""

from __future__ import annotations

import copy

from torch import nn

from distill.compress.prune import keep_indices
from distill.errors import ModelError
from distill.models.heads import attention_blocks, head_counts, keep_heads

__all__ = ["attention_blocks", "head_counts", "prune_heads"]


def _record(model: nn.Module, kept: dict[str, list[int]]) -> None:
    """Write the kept heads into every Hugging Face config in ``model`` (``distill_kept_heads``, block names
    relative to that model), so that a saved copy can be rebuilt (:func:`distill.models.heads.apply_kept_heads`)."""
    seen: set[int] = set()
    for prefix, mod in model.named_modules():  # outermost first: the model that save_pretrained writes
        cfg = getattr(mod, "config", None)
        if cfg is None or not hasattr(cfg, "to_dict") or not hasattr(mod, "save_pretrained") or id(cfg) in seen:
            continue
        seen.add(id(cfg))
        start = f"{prefix}." if prefix else ""
        rel = {k[len(start):]: v for k, v in kept.items() if k.startswith(start)}
        if rel:
            cfg.distill_kept_heads = {**(getattr(cfg, "distill_kept_heads", None) or {}), **rel}


def prune_heads(model: nn.Module, amount: float) -> tuple[nn.Module, dict[str, list[int]]]:
    """A copy of ``model`` with ``amount`` (0 <= amount < 1) of each attention block's heads removed
    (at least one kept per block), and the kept head indices per block. ``model`` is not changed.
    The kept heads are also recorded in the Hugging Face configs inside the copy
    (``config.distill_kept_heads``): :func:`distill.models.sentence.load_sentence_encoder` rebuilds a
    saved pruned encoder from it."""
    if not (isinstance(amount, (int, float)) and 0 <= amount < 1):
        raise ModelError(f"amount must be in [0, 1) (the share of heads to remove), got {amount!r}")
    if not attention_blocks(model):
        raise ModelError(
            f"{type(model).__name__} has no BERT-like attention block (a `self` module with query/key/value Linear "
            "layers and `output.dense`). Fix: prune heads of a BERT-like encoder, or use structured pruning of "
            "neurons (compress.prune.kind: structured) for other models."
        )
    pruned = copy.deepcopy(model)
    kept: dict[str, list[int]] = {}
    for name, blk in attention_blocks(pruned):
        size = int(blk.self.attention_head_size)
        w = blk.output.dense.weight.detach().abs()
        heads = keep_indices(w.reshape(w.shape[0], -1, size).sum(dim=(0, 2)), amount)
        keep_heads(blk, heads)
        kept[name] = heads.tolist()
    _record(pruned, kept)
    return pruned, kept
