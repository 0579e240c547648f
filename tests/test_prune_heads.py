"""Attention-head pruning of BERT-like encoders (compress/heads.py) on a tiny random BERT built from a config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.compress import head_counts, prune_heads
from distill.errors import ModelError


def tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=32, attn_implementation="eager")  # fmt: skip
    return BertModel(cfg).eval()


def encode(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


IDS = torch.randint(0, 120, (3, 11), generator=torch.Generator().manual_seed(1))


def test_prune_heads_really_shrinks_the_layers_and_still_runs():
    model = tiny_bert()
    pruned, kept = prune_heads(model, 0.5)
    assert head_counts(model) == {"encoder.layer.0.attention": 4, "encoder.layer.1.attention": 4}  # input unchanged
    assert head_counts(pruned) == {"encoder.layer.0.attention": 2, "encoder.layer.1.attention": 2}
    att = pruned.encoder.layer[0].attention
    assert att.self.query.weight.shape == (16, 32) and att.self.value.weight.shape == (16, 32)
    assert att.output.dense.weight.shape == (32, 16)
    assert all(len(v) == 2 for v in kept.values())
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert encode(pruned, IDS).shape == encode(model, IDS).shape


def test_removing_dead_heads_changes_nothing():
    model = tiny_bert()
    size = 8
    with torch.no_grad():  # heads 1 and 3 of every layer write nothing to the output
        for layer in model.encoder.layer:
            w = layer.attention.output.dense.weight
            for h in (1, 3):
                w[:, h * size : (h + 1) * size] = 0
    pruned, kept = prune_heads(model, 0.5)
    assert set(kept.values().__iter__().__next__()) == {0, 2}
    torch.testing.assert_close(encode(pruned, IDS), encode(model, IDS), rtol=1e-5, atol=1e-5)


def test_pruned_model_trains(tmp_path):
    pruned, _ = prune_heads(tiny_bert(), 0.25)
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned.train()
    before = pruned.encoder.layer[0].attention.self.query.weight.detach().clone()
    pruned(input_ids=IDS).last_hidden_state[:, :, 0].sum().backward()  # (a squared norm after LayerNorm has no gradient)
    opt.step()
    assert not torch.equal(before, pruned.encoder.layer[0].attention.self.query.weight)


def test_head_pruned_sentence_encoder_exports_to_onnx_with_parity(tmp_path):
    from distill.export.onnx_encoder import export_encoder_onnx
    from distill.models.sentence import load_sentence_encoder

    from .embed_helpers import SENTENCES, make_tiny_sentence_model

    enc = load_sentence_encoder(make_tiny_sentence_model(tmp_path / "m", heads=4, hidden=16))
    pruned, kept = prune_heads(enc, 0.5)
    assert sum(head_counts(pruned).values()) == sum(head_counts(enc).values()) // 2
    report = export_encoder_onnx(pruned, tmp_path / "onnx", SENTENCES, int8=False)  # raises when parity breaks
    assert report["max_abs_diff"] <= 1e-4
    assert not torch.allclose(torch.from_numpy(pruned.encode(SENTENCES)), torch.from_numpy(enc.encode(SENTENCES)))


def test_prune_heads_says_what_it_cannot_do():
    with pytest.raises(ModelError, match="amount must be in"):
        prune_heads(tiny_bert(), 1.0)
    with pytest.raises(ModelError, match="no BERT-like attention block"):
        prune_heads(nn.Sequential(nn.Linear(4, 4)), 0.5)
    one_left, kept = prune_heads(tiny_bert(), 0.99)  # at least one head per block
    assert all(len(v) == 1 for v in kept.values())
    assert encode(one_left, IDS).shape == (3, 11, 32)


def test_head_pruned_sentence_encoder_saves_and_reloads_to_identical_embeddings(tmp_path):
    import json

    from distill.models.sentence import load_sentence_encoder, save_sentence_encoder

    from .embed_helpers import SENTENCES, make_tiny_sentence_model

    enc = load_sentence_encoder(make_tiny_sentence_model(tmp_path / "m", heads=4, hidden=16))
    pruned, kept = prune_heads(enc, 0.5)
    out = save_sentence_encoder(pruned, tmp_path / "pruned")
    assert json.loads((out / "config.json").read_text())["distill_kept_heads"] == {
        k.removeprefix("backbone."): v for k, v in kept.items()}  # fmt: skip
    again = load_sentence_encoder(out)
    assert head_counts(again) == head_counts(pruned)
    np.testing.assert_array_equal(again.encode(SENTENCES), pruned.encode(SENTENCES))
