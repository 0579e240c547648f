"""Surgery on BERT-like encoders: find the attention blocks, shrink a block to chosen heads, and
rebuild a saved head-pruned model from what its config records. Which heads to remove is decided
elsewhere (:func:`distill.compress.prune_heads`).

A BERT-like attention block (Hugging Face ``BertAttention`` and its kin: a ``self`` module with
``query``/``key``/``value`` Linear layers and ``attention_head_size``, and ``output.dense``)
computes each head from its own rows of ``query``, ``key`` and ``value`` and feeds the output
projection through its own columns of ``output.dense``. Keeping only some heads keeps only those
rows and columns: the matrices really get smaller, and what the kept heads compute does not change.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from distill.errors import ModelError


def shrink_linear(layer: nn.Linear, *, rows: Tensor | None = None, cols: Tensor | None = None) -> nn.Linear:
    """A new Linear with only the output units ``rows`` and/or the input features ``cols`` of ``layer``
    (same dtype and device; the bias follows the rows)."""
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


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


def keep_heads(block: nn.Module, heads: Tensor) -> None:
    """Shrink one attention block in place to the heads ``heads`` (sorted indices)."""
    sa, size = block.self, int(block.self.attention_head_size)
    idx = (heads[:, None] * size + torch.arange(size)[None, :]).reshape(-1)
    sa.query, sa.key, sa.value = (shrink_linear(m, rows=idx) for m in (sa.query, sa.key, sa.value))
    block.output.dense = shrink_linear(block.output.dense, cols=idx)
    for attr, value in (("num_attention_heads", len(heads)), ("all_head_size", len(heads) * size)):
        if hasattr(sa, attr):
            setattr(sa, attr, value)


def apply_kept_heads(model: nn.Module, kept: dict[str, list[int]]) -> nn.Module:
    """Shrink the blocks of a freshly built (full-size) ``model`` to the recorded heads, in place, so that
    the pruned weights load into it. Raises ModelError when a recorded block is missing."""
    blocks = dict(attention_blocks(model))
    missing = sorted(set(kept) - set(blocks))
    if missing:
        raise ModelError(f"the recorded head pruning names blocks this model does not have: {missing[:3]}. "
                         "Fix: load the weights into the model they were pruned from.")  # fmt: skip
    for name, heads in kept.items():
        keep_heads(blocks[name], torch.tensor(sorted(heads)))
    return model


def load_head_pruned(hf_dir: Path, kept: dict[str, list[int]], *, trust_remote_code: bool = False) -> nn.Module:
    """An encoder saved after attention-head pruning (:func:`distill.compress.prune_heads`): built full-size
    from its config, shrunk to the recorded heads, then its weights loaded (every tensor must fit)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True, trust_remote_code=trust_remote_code)
    model = apply_kept_heads(AutoModel.from_config(config, trust_remote_code=trust_remote_code), kept)
    weights = hf_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{hf_dir}: a head-pruned encoder needs its model.safetensors. Fix: save it with distill.")
    state = load_file(str(weights))
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and all(k.startswith(prefix + ".") for k in state):
        state = {k[len(prefix) + 1 :]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{hf_dir}: the weights do not fit the recorded head pruning: {exc}") from None
    return model
