"""Structured pruning of attention heads in BERT-like encoders: whole heads removed, layers shrink.

A BERT-like attention block (Hugging Face ``BertAttention`` and its kin: a ``self`` module with
``query``/``key``/``value`` Linear layers and ``attention_head_size``, and ``output.dense``)
computes each head from its own rows of ``query``, ``key`` and ``value`` and feeds the output
projection through its own columns of ``output.dense``. Removing a head removes those rows and
columns: the matrices really get smaller (latency falls, not only the count of zeros), and what the
other heads compute does not change. transformers 5 no longer ships ``prune_heads``; this does it
on the modules themselves.

Heads are ranked per layer by the L1 norm of their columns of the output projection (how much
each head can move the block's output); the same number is kept in every layer.

Saving: the kept heads are recorded in the model's Hugging Face config (``distill_kept_heads``).
distill's own loader (:func:`distill.models.sentence.load_sentence_encoder`) rebuilds the full-size
model from the config, shrinks it to the recorded heads and loads the weights. A plain
``from_pretrained`` (or ``sentence_transformers.SentenceTransformer``) cannot: transformers 5
dropped its ``pruned_heads`` support, so the config's head count describes the unpruned layers.
ONNX export works from memory as for any encoder.
"""

from __future__ import annotations

import copy
import torch
from torch import nn

from distill.errors import ModelError


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every BERT-like attention block of ``model`` as (name, module), in module order."""
    out = []
    for name, mod in model.named_modules():
        sa, o = getattr(mod, "self", None), getattr(getattr(mod, "output", None), "dense", None)
        if (isinstance(sa, nn.Module) and isinstance(o, nn.Linear) and hasattr(sa, "attention_head_size")
                and all(isinstance(getattr(sa, p, None), nn.Linear) for p in ("query", "key", "value"))):  # fmt: skip
            out.append((name, mod))
    return out


def head_counts(model: nn.Module) -> dict[str, int]:
    """Heads per attention block (by the shapes, so a pruned model reports what it really has)."""
    return {name: blk.self.query.out_features // blk.self.attention_head_size for name, blk in attention_blocks(model)}


def _rows(layer: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(layer.in_features, len(keep), bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[keep])
    return new.to(layer.weight.dtype)


def _cols(layer: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(keep), layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new.to(layer.weight.dtype)


def _keep(blk: nn.Module, heads: torch.Tensor) -> None:
    """Shrink one attention block in place to the heads ``heads`` (sorted indices)."""
    sa, size = blk.self, int(blk.self.attention_head_size)
    idx = (heads[:, None] * size + torch.arange(size)[None, :]).reshape(-1)
    sa.query, sa.key, sa.value = _rows(sa.query, idx), _rows(sa.key, idx), _rows(sa.value, idx)
    blk.output.dense = _cols(blk.output.dense, idx)
    for attr, value in (("num_attention_heads", len(heads)), ("all_head_size", len(heads) * size)):
        if hasattr(sa, attr):
            setattr(sa, attr, value)


def _record(model: nn.Module, kept: dict[str, list[int]]) -> None:
    """Write the kept heads into every Hugging Face config in ``model`` (``distill_kept_heads``, block names
    relative to that model), so that a saved copy can be rebuilt: see :func:`apply_kept_heads`."""
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


def apply_kept_heads(model: nn.Module, kept: dict[str, list[int]]) -> nn.Module:
    """Shrink the blocks of a freshly built (full-size) ``model`` to the recorded heads, in place, so that
    the pruned weights load into it. Raises ModelError when a recorded block is missing."""
    blocks = dict(attention_blocks(model))
    missing = sorted(set(kept) - set(blocks))
    if missing:
        raise ModelError(f"the recorded head pruning names blocks this model does not have: {missing[:3]}. "
                         "Fix: load the weights into the model they were pruned from.")  # fmt: skip
    for name, heads in kept.items():
        _keep(blocks[name], torch.tensor(sorted(heads)))
    return model


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
        n = blk.self.query.out_features // size
        n_keep = max(1, n - int(round(amount * n)))
        score = blk.output.dense.weight.detach().abs().reshape(blk.output.dense.out_features, n, size).sum(dim=(0, 2))
        heads = torch.sort(torch.topk(score, n_keep).indices).values
        _keep(blk, heads)
        kept[name] = heads.tolist()
    _record(pruned, kept)
    return pruned, kept
