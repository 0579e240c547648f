"""The students' builders: a plain function per kind (layers, narrow, static, factory, hf), each from the teacher
as it is, and the checks a student must pass before it trains (its output shape, the token limit)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from distill.errors import RecipeError
from distill.models.sentence import pca_basis
from distill.tasks.text_classification.models import (
    Encoded,
    FactoryClassifier,
    HFClassifier,
    StaticClassifier,
    TextModel,
    encode,
    with_head,
)

def layer_list(net: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a Hugging Face model (the ModuleList of ``num_hidden_layers`` entries)."""
    n = getattr(net.config, "num_hidden_layers", None) or getattr(net.config, "n_layers", None)
    for _, m in net.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return m
    raise RecipeError([f"cannot find the {n} transformer layers of {type(net).__name__}; students of kind 'layers' "
                       "need a BERT-like teacher. Fix: use kind static, factory or hf."])  # fmt: skip


def layers_student(teacher: TextModel, keep: list[int]) -> TextModel:
    """The teacher with only the blocks ``keep`` (their weights copied), its embeddings and head: DistilBERT-style."""
    net = copy.deepcopy(teacher.module.net)
    blocks = layer_list(net)
    kept = [blocks[i] for i in keep]
    parent, attr = _parent_of(net, blocks)
    setattr(parent, attr, nn.ModuleList(kept))
    for j, block in enumerate(kept):  # decoder blocks (GPT-2) index their key/value cache by their position
        for m in block.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = j
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(net.config, key):
            setattr(net.config, key, len(keep))
    net.train()
    return TextModel(HFClassifier(net), teacher.tokenizer, "layers")


def narrow_student(teacher: TextModel, num_layers: int, hidden: int, heads: int, num_labels: int) -> TextModel:
    """A smaller transformer of the teacher's family made from a config (``num_layers`` x ``hidden``, ``heads``;
    feed-forward 4 x hidden), on the teacher's tokenizer; its token, position and type embeddings are a PCA
    projection of the teacher's, the rest is newly initialised."""
    from transformers import AutoModelForSequenceClassification

    t_net = teacher.module.net
    width = int(t_net.config.hidden_size)
    if not 1 <= hidden <= width:
        raise RecipeError([f"a narrow student's hidden ({hidden}) must be in 1..{width}, the teacher's width. Fix: "
                           "lower students[].hidden."])  # fmt: skip
    cfg = copy.deepcopy(t_net.config)
    cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads = int(num_layers), int(hidden), int(heads)
    cfg.intermediate_size = 4 * int(hidden)
    cfg.num_labels = num_labels
    net = AutoModelForSequenceClassification.from_config(cfg)
    t_emb = t_net.get_input_embeddings().weight.detach().float()
    comps, mean = pca_basis(t_emb, hidden)
    with torch.no_grad():
        net.get_input_embeddings().weight.copy_((t_emb - mean) @ comps.T)
        t_mods, s_mods = t_net.base_model.embeddings, net.base_model.embeddings
        for name in ("position_embeddings", "token_type_embeddings"):
            if hasattr(t_mods, name) and hasattr(s_mods, name):
                getattr(s_mods, name).weight.copy_(getattr(t_mods, name).weight.detach().float() @ comps.T)
    net.train()
    return TextModel(HFClassifier(net), teacher.tokenizer, "narrow")


def _parent_of(root: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for _, m in root.named_modules():
        for name, c in m.named_children():
            if c is child:
                return m, name
    raise AssertionError("child not under root")


def static_student(teacher: TextModel, dim: int, num_labels: int, context: tuple[Tensor, Tensor] | None = None,
                   ngram_buckets: int = 0) -> TextModel:  # fmt: skip
    """A token table reduced by PCA to ``dim`` columns (``ngram_buckets`` bigram rows beside, at zero), and a new head. Rows: the teacher's input token vectors, or
    with ``context`` (``(sums (V, H), counts (V,))`` of :func:`token_contexts`) the mean of the teacher's last-layer
    vectors of each token in the training texts (tokens never seen: zero rows)."""
    width = int(teacher.module.net.get_input_embeddings().weight.shape[1])
    if dim > width:
        raise RecipeError([f"a static student's dim ({dim}) is wider than the teacher's token vectors ({width}). Fix: "
                           f"set students[].dim to {width} or less."])  # fmt: skip
    if context is not None:
        sums, counts = context
        seen = counts > 0
        rows = torch.zeros_like(sums)
        rows[seen] = sums[seen] / counts[seen].unsqueeze(1)
        comps, mean = pca_basis(rows[seen], dim)
        table = torch.where(seen.unsqueeze(1), (rows - mean) @ comps.T, torch.zeros(()))  # unseen tokens: zero rows
    else:
        emb = teacher.module.net.get_input_embeddings().weight.detach().float()
        comps, mean = pca_basis(emb, dim)
        table = (emb - mean) @ comps.T
    table = table / table.std().clamp(min=1e-6) * 0.1  # a scale the head's learning rate suits
    pad = teacher.tokenizer.pad_token_id or 0
    return TextModel(StaticClassifier(table, num_labels, pad, ngram_buckets), teacher.tokenizer, "static")


@torch.no_grad()
def token_contexts(teacher: TextModel, enc: Encoded, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Per vocabulary row, the sum of the teacher's last-layer vectors of that token over ``enc``'s texts, and how
    often it occurred: ``(sums (V, H), counts (V,))``."""
    net = teacher.module.net
    vocab, width = net.get_input_embeddings().weight.shape
    sums = torch.zeros(vocab, width)
    counts = torch.zeros(vocab)
    was = teacher.module.training
    teacher.module.eval()
    try:
        for s in range(0, len(enc), batch_size):
            batch = enc.batch(list(range(s, min(s + batch_size, len(enc)))), teacher.uses_token_types)
            _, hidden, _ = teacher.module(**batch, hidden=True)
            m = batch["attention_mask"].bool()
            ids = batch["input_ids"][m]
            sums.index_add_(0, ids, hidden[-1][m].float())
            counts.index_add_(0, ids, torch.ones(len(ids)))
    finally:
        teacher.module.train(was)
    return sums, counts


def factory_student(ref: str, teacher: TextModel, num_labels: int) -> TextModel:
    """``package.module:function(num_labels=, vocab_size=)`` as a student on the teacher's tokens."""
    from distill.core.task import resolve

    try:
        fn = resolve(ref)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RecipeError([f"students[].factory {ref!r} cannot be imported ({type(exc).__name__}: {exc}). Fix: give "
                           "'package.module:function' of an importable module (on PYTHONPATH)."]) from None  # fmt: skip
    vocab = len(teacher.tokenizer)
    net = fn(num_labels=num_labels, vocab_size=vocab)
    if not isinstance(net, nn.Module):
        raise RecipeError([f"students[].factory {ref!r} returned {type(net).__name__}, not a torch nn.Module. Fix: "
                           "return the module."])  # fmt: skip
    return TextModel(FactoryClassifier(net), teacher.tokenizer, "factory")


def hf_student(path: str | Path, names: list[str], *, trust_remote_code: bool = False) -> TextModel:
    """A local Hugging Face classifier folder as the student, with a head for ``names`` (new if its labels differ)."""
    return with_head(path, names, trust_remote_code=trust_remote_code, what="students[].path", kind="hf")


def check_token_limit(model: TextModel, max_length: int, what: str) -> None:
    """``data.max_length`` fits the positions the model has (a longer input would fail inside it)."""
    positions = getattr(getattr(model.module, "net", None), "config", None)
    limit = getattr(positions, "max_position_embeddings", None) if positions is not None else None
    if limit is not None and max_length > int(limit):
        raise RecipeError([f"data.max_length {max_length} is longer than {what} can read: it has {limit} positions. "
                           f"Fix: --set data.max_length={limit} (or less)."])  # fmt: skip


def check_output_shape(model: TextModel, num_labels: int, what: str) -> None:
    """One tiny batch through ``model``: (2, num_labels) logits, or a clear error."""
    enc = encode(model.tokenizer, ["a short text", "another text to check the shape"], 16)
    try:
        with torch.no_grad():
            out = model.module(**enc.batch([0, 1], model.uses_token_types))
    except Exception as exc:  # a user's module can raise anything
        raise RecipeError([f"{what} fails on a batch of token ids: {type(exc).__name__}: {exc}. Fix: its forward must "
                           "take (input_ids (B, T) long, attention_mask (B, T) long) and return (B, C) logits."]) from None  # fmt: skip
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, num_labels):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise RecipeError([f"{what} returns {shape} for a batch of 2 texts; the data has {num_labels} classes, so "
                           f"(2, {num_labels}) logits are needed. Fix: make it return (batch, {num_labels})."])  # fmt: skip
