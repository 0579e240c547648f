"""Chunked and fused token losses equal the unchunked ones (value and gradient, to float tolerance) for every
divergence, dense and top-k teachers, a teacher given as hidden states + head, with cross-entropy mixed in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.losses.chunked import (
    ChunkStats,
    HeadLogits,
    chunk_rows,
    chunked_token_loss,
    fused_token_loss,
    next_token_targets,
)
from distill.losses.token import TOKEN_LOSSES, dense_topk, token_loss, true_kl

B, S, H, V = 3, 7, 5, 11


def _world(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, S, H, generator=g)
    weight = torch.randn(V, H, generator=g)
    bias = torch.randn(V, generator=g)
    t_hidden = torch.randn(B, S, H + 2, generator=g)
    t_weight = torch.randn(V, H + 2, generator=g)
    ids = torch.randint(0, V, (B, S), generator=g)
    mask = torch.rand(B, S, generator=g) > 0.25
    return hidden, weight, bias, t_hidden, t_weight, ids, mask


def _reference(name, logits, teacher, mask, ids, t, kd_scale, ce_scale, params):
    loss = kd_scale * token_loss(name, logits, teacher, mask, temperature=t, **params)
    targets = next_token_targets(ids, mask)
    keep = mask & (targets >= 0)
    if ce_scale and bool(keep.any()):
        loss = loss + ce_scale * F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
    return loss


@pytest.mark.parametrize("name", list(TOKEN_LOSSES))
@pytest.mark.parametrize("teacher_kind", ["dense", "head", "topk"])
def test_chunked_and_fused_equal_the_unchunked_loss(name: str, teacher_kind: str) -> None:
    hidden, weight, bias, t_hidden, t_weight, ids, mask = _world()
    t_logits = t_hidden @ t_weight.T
    temperature = 2.0
    if teacher_kind == "topk":
        if name == "rkl":
            pytest.skip("rkl is infinite on a coarsened top-k teacher only where p = 0; covered by token_loss tests")
        teacher = dense_topk(t_logits, 4, temperature)
    else:
        teacher = t_logits if teacher_kind == "dense" else HeadLogits(t_hidden, t_weight)
    params = TOKEN_LOSSES[name].defaults()
    kd_scale, ce_scale = 0.37, 0.21
    ref_teacher = teacher if teacher_kind != "head" else t_logits

    # the reference: full logits, token_loss + cross-entropy, autograd
    h1, w1, b1 = (x.clone().requires_grad_(True) for x in (hidden, weight, bias))
    ref = _reference(name, h1 @ w1.T + b1, ref_teacher, mask, ids, temperature, kd_scale, ce_scale, params)
    ref.backward()

    targets = next_token_targets(ids, mask)
    # chunked on the logits (chunk of 4 positions: several chunks and a ragged last one)
    h2, w2, b2 = (x.clone().requires_grad_(True) for x in (hidden, weight, bias))
    got = chunked_token_loss(name, h2 @ w2.T + b2, teacher, mask, temperature=temperature, kd_scale=kd_scale,
                             ce_targets=targets, ce_scale=ce_scale, chunk=4, **params)  # fmt: skip
    got.backward()
    # fused: hidden states and the head, the student's logits never made in full
    h3, w3, b3 = (x.clone().requires_grad_(True) for x in (hidden, weight, bias))
    fused = fused_token_loss(name, h3, w3, b3, teacher, mask, temperature=temperature, kd_scale=kd_scale,
                             ce_targets=targets, ce_scale=ce_scale, chunk=4, **params)  # fmt: skip
    fused.backward()
    for value, (h, w, b) in ((got, (h2, w2, b2)), (fused, (h3, w3, b3))):
        torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-5)
        for mine, want in ((h, h1), (w, w1), (b, b1)):
            torch.testing.assert_close(mine.grad, want.grad, rtol=1e-4, atol=1e-5)


def test_the_logged_kl_is_the_true_kl_and_ce_only_works() -> None:
    hidden, weight, bias, t_hidden, t_weight, ids, mask = _world(1)
    logits = hidden @ weight.T
    t_logits = t_hidden @ t_weight.T
    stats = ChunkStats(want_kl=True)
    for name in ("fkl", "jsd"):
        stats = ChunkStats(want_kl=True)
        chunked_token_loss(name, logits, t_logits, mask, temperature=1.5, chunk=5, stats=stats)
        assert stats.positions == int(mask.sum())
        assert stats.kl_sum / stats.positions == pytest.approx(float(true_kl(logits, t_logits, mask, 1.5)), rel=1e-5)
    # no teacher: the cross-entropy alone, with its gradient
    x = logits.clone().requires_grad_(True)
    targets = next_token_targets(ids, mask)
    ce = chunked_token_loss("fkl", x, None, mask, kd_scale=0.0, ce_targets=targets, ce_scale=1.0, chunk=3)
    ce.backward()
    y = logits.clone().requires_grad_(True)
    keep = mask & (targets >= 0)
    want = F.cross_entropy(y[keep], targets[keep], reduction="sum")
    want.backward()
    torch.testing.assert_close(ce, want.detach())
    torch.testing.assert_close(x.grad, y.grad)


def test_chunks_stay_under_the_mmap_threshold() -> None:
    assert chunk_rows(8192) * 8192 * 4 <= 8 << 20 and chunk_rows(32000) >= 1
    assert chunk_rows(8192) == 256
