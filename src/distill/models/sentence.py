"""Sentence encoders: a Hugging Face encoder with the pooling, dense layers and normalisation of a
sentence-transformers folder, loaded offline, and the students built from one.

The encoder, and the loading and saving of sentence-transformers folders (:func:`load_sentence_encoder`,
:func:`save_sentence_encoder`), are in :mod:`distill.models.sentence_encoder`; this module re-exports
them and builds the students.

Students (all use the teacher's tokenizer):

* :func:`layer_selected_student`: the teacher with only the chosen layers kept, weights copied
  (DistilBERT-style initialisation).
* :func:`narrow_student`: fewer layers and a smaller hidden size; token, position and type embeddings
  initialised from a PCA projection of the teacher's, and a final dense layer back to the teacher's
  dimension (initialised as the PCA inverse transform), so the student's embeddings live in the
  teacher's space and cosine to the teacher is defined.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.errors import ModelError
from distill.models.heads import shrink_linear
from distill.models.sentence_encoder import (
    POOLING_MODES,
    DenseLayer,
    SentenceEncoder,
    encoder_layers,
    inference_batches,
    load_sentence_encoder,
    pool,
    save_sentence_encoder,
)

__all__ = [
    "POOLING_MODES",
    "DenseLayer",
    "SentenceEncoder",
    "count_parameters",
    "encoder_layers",
    "inference_batches",
    "layer_selected_student",
    "load_sentence_encoder",
    "pca_basis",
    "narrow_student",
    "pool",
    "save_sentence_encoder",
]


# ---------------------------------------------------------------- students
def layer_selected_student(teacher: SentenceEncoder, layers: Sequence[int], *, ffn_keep: float = 1.0) -> SentenceEncoder:
    """A copy of ``teacher`` keeping only the blocks ``layers`` (0-based, in order), weights copied.

    ``ffn_keep < 1`` also keeps only that share of each kept block's feed-forward neurons (the ones
    with the largest ``|w_in| * |w_out|``), so the blocks really shrink (the feed-forward part is about
    two thirds of a BERT block's compute)."""
    n = teacher.num_layers
    bad = [i for i in layers if not 0 <= int(i) < n]
    if not layers or bad or len(set(layers)) != len(layers):
        raise ModelError(
            f"layer selection {list(layers)}: the teacher has layers 0..{n - 1}; give distinct indices in that range "
            "(e.g. [0, 5] keeps the first and the last)."
        )
    student = copy.deepcopy(teacher)
    blocks = encoder_layers(student.backbone)
    kept = nn.ModuleList([blocks[int(i)] for i in layers])
    parent = student.backbone.encoder if hasattr(student.backbone, "encoder") else None
    if parent is None or getattr(parent, "layer", None) is not blocks:
        raise ModelError(f"layer selection needs a BERT-like encoder (encoder.layer); {type(teacher.backbone).__name__} has none")
    parent.layer = kept
    student.backbone.config.num_hidden_layers = len(kept)
    for i, block in enumerate(kept):  # attention implementations may carry their index
        attn = getattr(getattr(block, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = i
    if ffn_keep < 1.0:
        if not 0.0 < ffn_keep:
            raise ModelError(f"ffn_keep must be in (0, 1] (got {ffn_keep})")
        for block in kept:
            _shrink_ffn(block, ffn_keep)
        student.backbone.config.intermediate_size = int(kept[0].intermediate.dense.out_features)
    return student


def _shrink_ffn(block: nn.Module, keep: float) -> None:
    """Keep the ``keep`` share of a BERT block's feed-forward neurons with the largest |w_in|·|w_out|."""
    fc_in, fc_out = getattr(getattr(block, "intermediate", None), "dense", None), getattr(getattr(block, "output", None), "dense", None)
    if not isinstance(fc_in, nn.Linear) or not isinstance(fc_out, nn.Linear):
        raise ModelError(f"ffn_keep needs BERT-like blocks (intermediate.dense, output.dense); {type(block).__name__} has none")
    n = fc_in.out_features
    k = max(1, round(n * keep))
    score = fc_in.weight.detach().norm(dim=1) * fc_out.weight.detach().norm(dim=0)
    idx = torch.sort(torch.topk(score, k).indices).values
    new_in, new_out = shrink_linear(fc_in, rows=idx), shrink_linear(fc_out, cols=idx)
    block.intermediate.dense, block.output.dense = new_in, new_out


def pca_basis(matrix: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(components (k, H), mean (H,)) of the rows of ``matrix``."""
    x = matrix.detach().double()
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    return vh[:k].float(), mean.float()


def narrow_student(
    teacher: SentenceEncoder, *, layers: int, hidden: int, heads: int, intermediate: int | None = None, seed: int = 0
) -> SentenceEncoder:
    """A smaller encoder of the teacher's family (same tokenizer), ``layers`` x ``hidden``, with its
    embeddings from a PCA projection of the teacher's and a dense layer back to the teacher's dimension."""
    cfg = copy.deepcopy(teacher.backbone.config)
    problems = []
    if layers < 1:
        problems.append(f"layers must be >= 1 (got {layers})")
    if not 1 <= hidden <= teacher.hidden_size:
        problems.append(f"hidden must be in 1..{teacher.hidden_size} (the teacher's width; got {hidden})")
    if heads < 1 or hidden % heads:
        problems.append(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if problems:
        raise ModelError("narrow student: " + "; ".join(problems) + ". Fix: change student.layers/hidden/heads.")
    cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads = int(layers), int(hidden), int(heads)
    cfg.intermediate_size = int(intermediate or 4 * hidden)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        backbone = type(teacher.backbone)(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    t_emb = teacher.backbone.get_input_embeddings().weight
    comps, mean = pca_basis(t_emb, hidden)
    with torch.no_grad():
        backbone.get_input_embeddings().weight.copy_((t_emb - mean) @ comps.T)
        t_mods, s_mods = teacher.backbone.embeddings, backbone.embeddings
        for name in ("position_embeddings", "token_type_embeddings"):
            if hasattr(t_mods, name) and hasattr(s_mods, name):
                getattr(s_mods, name).weight.copy_(getattr(t_mods, name).weight @ comps.T)
    backbone.eval()
    dense = DenseLayer(hidden, teacher.dim, bias=True)
    with torch.no_grad():
        if teacher.dim == teacher.hidden_size and not teacher.dense:
            dense.linear.weight.copy_(comps.T)
            dense.linear.bias.copy_(mean)
        else:
            nn.init.xavier_uniform_(dense.linear.weight)
            dense.linear.bias.zero_()
    return SentenceEncoder(
        backbone, teacher.tokenizer, pooling=teacher.pooling, dense=[dense],
        normalize=teacher.normalize, max_seq_length=teacher.max_seq_length,
    )  # fmt: skip


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
