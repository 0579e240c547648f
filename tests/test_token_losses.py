"""Properties of the token-level divergences (distill.losses.token)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.losses.token import (
    TOKEN_LOSSES,
    TeacherTopK,
    coarsen,
    dense_sample,
    dense_topk,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    token_loss,
    total_variation,
    true_kl,
)

NAMES = list(TOKEN_LOSSES)
HYP = settings(max_examples=25, deadline=None)


def _logits(seed: int, b: int = 2, s: int = 5, v: int = 11, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, s, v, generator=g) * scale


def _pair(seed: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    return _logits(2 * seed, **kw), _logits(2 * seed + 1, **kw)


def _full_mask(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool)


def test_registry_lists_every_loss_with_summary_paper_and_defaults():
    assert set(TOKEN_LOSSES) == {"fkl", "rkl", "jsd", "skew_fkl", "skew_rkl", "tvd"}
    for spec in TOKEN_LOSSES.values():
        assert spec.summary and spec.paper
    assert TOKEN_LOSSES["jsd"].defaults()["beta"] == 0.5
    assert TOKEN_LOSSES["skew_fkl"].defaults() == {"alpha": 0.1}
    assert TOKEN_LOSSES["skew_rkl"].defaults() == {"alpha": 0.1}


@pytest.mark.parametrize("name", NAMES)
@HYP
@given(seed=st.integers(0, 10_000), t=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_zero_on_identical_and_nonnegative(name, seed, t):
    s, te = _pair(seed)
    mask = _full_mask(s)
    same = token_loss(name, s, s.clone(), mask, temperature=t)
    assert abs(float(same)) < 1e-5
    assert float(token_loss(name, s, te, mask, temperature=t)) >= -1e-6
    # per position too, through the coarsened path
    topk = dense_topk(te, 4, t)
    assert float(token_loss(name, s, topk, mask, temperature=t)) >= -1e-6


@HYP
@given(seed=st.integers(0, 10_000))
def test_jsd_endpoints_are_the_two_kls_and_scaled_jsd_is_continuous(seed):
    s, te = _pair(seed, scale=1.0)  # moderate ratios p/q: the O(β χ²) remainder stays small
    mask = _full_mask(s)
    fkl = token_loss("fkl", s, te, mask)
    rkl = token_loss("rkl", s, te, mask)
    torch.testing.assert_close(token_loss("jsd", s, te, mask, beta=0.0), fkl)
    torch.testing.assert_close(token_loss("jsd", s, te, mask, beta=1.0), rkl)
    # scaled JSD tends to the KLs; unscaled ≈ β·KL near β = 0 (TRL convention, documented)
    near0 = token_loss("jsd", s, te, mask, beta=1e-3, scaled=True)
    near1 = token_loss("jsd", s, te, mask, beta=1 - 1e-3, scaled=True)
    assert math.isclose(float(near0), float(fkl), rel_tol=2e-2)
    assert math.isclose(float(near1), float(rkl), rel_tol=2e-2)
    assert math.isclose(float(token_loss("jsd", s, te, mask, beta=1e-3)) / 1e-3, float(fkl), rel_tol=2e-2)


def test_jsd_half_is_the_symmetric_jensen_shannon_divergence_bounded_by_log2():
    s, te = _pair(3, scale=8.0)
    sl, tl = F.log_softmax(s, -1), F.log_softmax(te, -1)
    p, q = tl.exp(), sl.exp()
    m = 0.5 * (p + q)
    expected = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    torch.testing.assert_close(generalized_jsd(sl, tl, 0.5), expected)
    torch.testing.assert_close(generalized_jsd(sl, tl, 0.5), generalized_jsd(tl, sl, 0.5))
    assert float(expected.max()) <= math.log(2) + 1e-6


@pytest.mark.parametrize("name", ["skew_fkl", "skew_rkl"])
def test_skew_alpha_zero_is_the_plain_kl_and_alpha_one_is_zero(name):
    s, te = _pair(5)
    mask = _full_mask(s)
    plain = "fkl" if name == "skew_fkl" else "rkl"
    torch.testing.assert_close(token_loss(name, s, te, mask, alpha=0.0), token_loss(plain, s, te, mask))
    assert abs(float(token_loss(name, s, te, mask, alpha=1.0))) < 1e-5
    # bounded: skew KL ≤ log(1/alpha)
    n = int(mask.sum())
    assert float(token_loss(name, s, te, mask, alpha=0.1)) <= n * math.log(10) + 1e-4


def test_skew_matches_its_formula():
    s, te = _pair(6)
    sl, tl = F.log_softmax(s, -1), F.log_softmax(te, -1)
    p, q, a = tl.exp(), sl.exp(), 0.3
    m = a * p + (1 - a) * q
    torch.testing.assert_close(TOKEN_LOSSES["skew_fkl"].fn(sl, tl, alpha=a), (p * (p / m).log()).sum(-1))
    m2 = (1 - a) * p + a * q
    torch.testing.assert_close(TOKEN_LOSSES["skew_rkl"].fn(sl, tl, alpha=a), (q * (q / m2).log()).sum(-1))


@HYP
@given(seed=st.integers(0, 10_000))
def test_tvd_bounded_and_symmetric(seed):
    s, te = _pair(seed, scale=10.0)
    sl, tl = F.log_softmax(s, -1), F.log_softmax(te, -1)
    d = total_variation(sl, tl)
    assert float(d.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(d, total_variation(tl, sl))


def test_forward_kl_hand_computed():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    # KL(p‖q) = 0.5 ln 2 + 0 + 0 + 0 (the p = 0 token adds nothing)
    value = forward_kl(q.log(), p.log())
    assert math.isclose(float(value), 0.5 * math.log(2), rel_tol=1e-6)
    # reverse: Σ q ln(q/p) = inf when p = 0 somewhere q > 0
    assert math.isinf(float(reverse_kl(q.log(), p.log())))
    # through token_loss with logits, T = 1
    t_logits = torch.tensor([[[math.log(2.0), 0.0, 0.0]]])
    s_logits = torch.zeros(1, 1, 3)
    pp = torch.tensor([0.5, 0.25, 0.25])
    expected = float((pp * (pp / (1 / 3)).log()).sum())
    got = token_loss("fkl", s_logits, t_logits, torch.ones(1, 1, dtype=torch.bool))
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    # not cross-entropy: the teacher entropy is not included
    assert not math.isclose(float(got), float(-(pp * math.log(1 / 3)).sum()), rel_tol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_mask_excludes_positions_values_and_gradients(name):
    s, te = _pair(7)
    mask = torch.ones(s.shape[:2], dtype=torch.bool)
    mask[0, :2] = False
    mask[1, -1] = False
    s1 = s.clone().requires_grad_(True)
    loss1 = token_loss(name, s1, te, mask, temperature=2.0)
    loss1.backward()
    s2 = s.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), s.shape[-1]) * 50
    s2[0, 0, 0] = float("nan")  # a NaN at a masked position must not leak
    te2 = te.clone()
    te2[~mask] = 0.0
    s2.requires_grad_(True)
    loss2 = token_loss(name, s2, te2, mask, temperature=2.0)
    loss2.backward()
    torch.testing.assert_close(loss1, loss2)
    torch.testing.assert_close(s1.grad, s2.grad)
    assert float(s1.grad[~mask].abs().sum()) == 0.0
    # top-k teacher too
    s3 = s.clone().requires_grad_(True)
    token_loss(name, s3, dense_topk(te, 3, 2.0), mask, temperature=2.0).backward()
    assert float(s3.grad[~mask].abs().sum()) == 0.0


def test_empty_mask_gives_zero_connected_to_the_graph():
    s, te = _pair(8)
    s.requires_grad_(True)
    loss = token_loss("fkl", s, te, torch.zeros(s.shape[:2], dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    assert loss.requires_grad
    loss.backward()
    assert float(s.grad.abs().sum()) == 0.0
    assert float(true_kl(s.detach(), te, torch.zeros(s.shape[:2], dtype=torch.bool))) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_splitting_a_batch_and_summing_equals_the_whole(name):
    s, te = _pair(9, b=4, s=6)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    whole = token_loss(name, s, te, mask, temperature=2.0)
    halves = token_loss(name, s[:2], te[:2], mask[:2], temperature=2.0) + token_loss(
        name, s[2:], te[2:], mask[2:], temperature=2.0
    )
    torch.testing.assert_close(whole, halves)
    # normalised by the real tokens of the whole window: mean per real token
    per_token = whole / mask.sum()
    uneven = (
        token_loss(name, s[:1], te[:1], mask[:1], temperature=2.0)
        + token_loss(name, s[1:], te[1:], mask[1:], temperature=2.0)
    ) / mask.sum()
    torch.testing.assert_close(per_token, uneven)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("drop", [0, 1])
def test_coarsened_with_k_covering_the_vocab_equals_dense(name, drop):
    s, te = _pair(10, v=9)
    mask = _full_mask(s)
    topk = dense_topk(te, 9 - drop, 1.5)
    dense = token_loss(name, s, te, mask, temperature=1.5)
    coarse = token_loss(name, s, topk, mask, temperature=1.5)
    torch.testing.assert_close(coarse, dense, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@HYP
@given(seed=st.integers(0, 10_000), k=st.integers(1, 10))
def test_coarsened_is_a_lower_bound_of_dense(name, seed, k):
    s, te = _pair(seed, v=12)
    sl, tl = coarsen(s, dense_topk(te, k, 1.0), 1.0)
    assert sl.shape == (2, 5, k + 1) and tl.shape == (2, 5, k + 1)
    torch.testing.assert_close(sl.exp().sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(tl.exp().sum(-1), torch.ones(2, 5))
    fn = TOKEN_LOSSES[name].fn
    dense = fn(F.log_softmax(s, -1), F.log_softmax(te, -1))
    assert bool((fn(sl, tl) <= dense + 1e-5).all())


@HYP
@given(seed=st.integers(0, 10_000), t=st.sampled_from([0.5, 1.0, 2.0, 5.0]))
def test_fkl_gradient_closed_form(seed, t):
    s, te = _pair(seed)
    mask = _full_mask(s)
    s.requires_grad_(True)
    token_loss("fkl", s, te, mask, temperature=t).backward()
    q = torch.softmax(s.detach() / t, -1)
    p = torch.softmax(te / t, -1)
    torch.testing.assert_close(s.grad, t * (q - p), rtol=1e-4, atol=1e-5)


def test_temperature_scaling_and_t_squared_factor():
    s, te = _pair(11)
    mask = _full_mask(s)
    t = 3.0
    value = token_loss("fkl", s, te, mask, temperature=t)
    expected = t * t * forward_kl(F.log_softmax(s / t, -1), F.log_softmax(te / t, -1)).sum()
    torch.testing.assert_close(value, expected)
    # softening identical-up-to-scale logits: T applied to both
    torch.testing.assert_close(
        token_loss("rkl", s * 2, te * 2, mask, temperature=2.0), 4.0 * token_loss("rkl", s, te, mask)
    )
    # higher T → softer distributions → smaller KL (without T²)
    assert float(true_kl(s, te, mask, 4.0)) < float(true_kl(s, te, mask, 1.0))


def test_true_kl_is_the_mean_forward_kl_per_real_token():
    s, te = _pair(12)
    mask = _full_mask(s)
    mask[0, 0] = False
    expected = token_loss("fkl", s, te, mask) / mask.sum()
    torch.testing.assert_close(true_kl(s, te, mask), expected)
    assert not true_kl(s.requires_grad_(True), te, mask).requires_grad


def test_dense_topk_fields():
    te = _logits(13, v=20)
    topk = dense_topk(te, 5, 2.0)
    assert topk.indices.shape == (2, 5, 5) and topk.indices.dtype == torch.int64
    assert topk.logprobs.shape == (2, 5, 5) and topk.tail.shape == (2, 5)
    logp = F.log_softmax(te / 2.0, -1)
    torch.testing.assert_close(topk.logprobs, logp.gather(-1, topk.indices))
    assert bool((topk.logprobs[..., :-1] >= topk.logprobs[..., 1:]).all())
    mass = topk.logprobs.exp().sum(-1) + topk.tail.exp()
    torch.testing.assert_close(mass, torch.ones(2, 5))
    full = dense_topk(te, 20, 1.0)
    assert torch.isfinite(full.tail).all()  # floored, never -inf


def test_bad_inputs_raise_clear_value_errors():
    s, te = _pair(14)
    mask = _full_mask(s)
    with pytest.raises(ValueError, match="unknown token loss 'kl'.*fkl"):
        token_loss("kl", s, te, mask)
    with pytest.raises(ValueError, match="differ in shape"):
        token_loss("fkl", s, te[..., :-1], mask)
    with pytest.raises(ValueError, match="mask must be shaped"):
        token_loss("fkl", s, te, mask[:, :-1])
    with pytest.raises(ValueError, match="bool"):
        token_loss("fkl", s, te, mask.long())
    with pytest.raises(ValueError, match="3-D"):
        token_loss("fkl", s[0], te[0], mask[0])
    with pytest.raises(ValueError, match=r"beta must be in \[0.0, 1.0\].*1.5"):
        token_loss("jsd", s, te, mask, beta=1.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        token_loss("skew_fkl", s, te, mask, alpha=-0.1)
    with pytest.raises(ValueError, match="alpha must be in"):
        token_loss("skew_rkl", s, te, mask, alpha=float("nan"))
    with pytest.raises(ValueError, match="no parameter beta"):
        token_loss("fkl", s, te, mask, beta=0.5)
    with pytest.raises(ValueError, match="temperature"):
        token_loss("fkl", s, te, mask, temperature=0.0)
    topk = dense_topk(te, 3, 1.0)
    with pytest.raises(ValueError, match="re-tempered"):
        token_loss("fkl", s, topk, mask, temperature=2.0)
    with pytest.raises(ValueError, match="vocabular"):
        token_loss("fkl", s[..., :5], TeacherTopK(topk.indices + 8, topk.logprobs, topk.tail), mask)
    with pytest.raises(ValueError, match="k must be"):
        dense_topk(te, 0, 1.0)


# --------------------------------------------------------------------------- sampled teacher (random-sampling KD)


def test_dense_sample_is_an_empirical_distribution_of_distinct_ids():
    te = _logits(21, v=30)
    n = 16
    smp = dense_sample(te, n, 1.0, generator=torch.Generator().manual_seed(0))
    assert smp.indices.shape == (2, 5, n) and smp.logprobs.shape == (2, 5, n) and smp.tail.shape == (2, 5)
    # distinct ids per position, counts are multiples of 1/n summing to 1, most frequent first
    assert all(len(set(row.tolist())) == n for row in smp.indices.reshape(-1, n))
    p = smp.logprobs.exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(p * n, (p * n).round())
    assert bool((smp.logprobs[..., :-1] >= smp.logprobs[..., 1:]).all())
    assert bool(torch.isneginf(smp.logprobs).any())  # unused slots carry no mass
    # seeded: the same generator seed gives the same draws
    again = dense_sample(te, n, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.indices, smp.indices) and torch.equal(again.logprobs, smp.logprobs)


def test_dense_sample_is_unbiased_where_topk_is_not():
    """The mean of many sampled targets converges to the teacher's distribution (and so does the
    forward-KL gradient q − p̂); the top-k target puts the whole tail in one bucket."""
    torch.manual_seed(0)
    te = torch.randn(1, 1, 40) * 1.5
    p = torch.softmax(te, -1).reshape(-1)
    g = torch.Generator().manual_seed(1)
    mean = torch.zeros(40)
    reps = 2000
    for _ in range(reps):
        smp = dense_sample(te, 8, 1.0, generator=g)
        mean.scatter_add_(0, smp.indices.reshape(-1), smp.logprobs.exp().reshape(-1))
    mean /= reps
    assert float((mean - p).abs().max()) < 0.01
    top = dense_topk(te, 8).logprobs.exp().reshape(-1)
    assert float(top.sum()) < 0.99  # the top-8 alone misses part of the mass the samples cover on average
    # the gradient of fkl on a sampled target is q − p̂ (at T = 1)
    s = torch.randn(1, 1, 40, requires_grad=True)
    smp = dense_sample(te, 8, 1.0, generator=g)
    token_loss("fkl", s, smp, torch.ones(1, 1, dtype=torch.bool)).backward()
    p_hat = torch.zeros(40).scatter_add_(0, smp.indices.reshape(-1), smp.logprobs.exp().reshape(-1))
    torch.testing.assert_close(s.grad.reshape(-1), torch.softmax(s.detach(), -1).reshape(-1) - p_hat, atol=1e-5, rtol=1e-4)


def test_systematic_draws_are_unbiased_and_keep_every_count_within_one_of_n_p():
    """Systematic draws: E[p̂] = p as with independent draws, but each token's count is ⌊n p⌋ or ⌈n p⌉
    (a token with p ≥ 1/n is never missed), so the target's variance is lower at the same size."""
    torch.manual_seed(0)
    te = torch.randn(3, 2, 40) * 1.5
    p = torch.softmax(te, -1)
    n = 8
    g = torch.Generator().manual_seed(1)
    mean, sq = {}, {}
    reps = 1500
    for how in ("systematic", "multinomial"):
        acc, acc2 = torch.zeros_like(p), torch.zeros_like(p)
        for _ in range(reps):
            smp = dense_sample(te, n, 1.0, generator=g, draws=how)
            hat = torch.zeros_like(p).scatter_add_(-1, smp.indices, smp.logprobs.exp())
            acc += hat
            acc2 += hat**2
            if how == "systematic":
                assert bool(((hat * n - n * p).abs() < 1 + 1e-5).all())
                assert bool((hat[p >= 1 / n] > 0).all())
        mean[how], sq[how] = acc / reps, acc2 / reps
    assert float((mean["systematic"] - p).abs().max()) < 0.01
    var = {h: float((sq[h] - mean[h] ** 2).sum()) for h in mean}
    assert var["systematic"] < 0.6 * var["multinomial"]
    with pytest.raises(ValueError, match="draws must be one of"):
        dense_sample(te, n, draws="stratified")


@pytest.mark.parametrize("name", ["fkl", "skew_fkl", "skew_rkl", "jsd", "tvd"])
def test_sampled_targets_give_finite_losses_and_gradients(name):
    s, te = _pair(22)
    smp = dense_sample(te, 4, 1.0, generator=torch.Generator().manual_seed(0))
    s.requires_grad_(True)
    value = token_loss(name, s, smp, _full_mask(s))
    value.backward()
    assert torch.isfinite(value) and float(value.detach()) >= 0 and torch.isfinite(s.grad).all()


def test_rkl_on_a_sampled_target_is_refused_with_a_fix():
    s, te = _pair(23)
    smp = dense_sample(te, 4, 1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="rkl.*infinite.*Fix"):
        token_loss("rkl", s, smp, _full_mask(s))
    with pytest.raises(ValueError, match="infinite"):
        token_loss("jsd", s, smp, _full_mask(s), beta=1.0)
    with pytest.raises(ValueError, match="n must be in"):
        dense_sample(te, 0)


@pytest.mark.parametrize("peak", [0.0, 5.0, 12.0, 30.0])
def test_coarsen_rest_bucket_matches_the_exact_logsumexp(peak):
    """coarsen takes log(1 − Σ top) where that is accurate and the exact logsumexp elsewhere: both agree
    with the direct computation, from a flat student to one whose top-k holds all but 1e-13 of its mass."""
    torch.manual_seed(0)
    s = torch.randn(3, 4, 50)
    s[..., :5] += peak
    top = TeacherTopK(torch.arange(5).expand(3, 4, 5), torch.full((3, 4, 5), math.log(0.15)),
                      torch.full((3, 4), math.log(0.25)))  # fmt: skip
    s_logp, _ = coarsen(s, top)
    full = F.log_softmax(s, -1)
    expected_rest = full[..., 5:].logsumexp(-1).clamp_min(math.log(1e-12))
    expected = F.log_softmax(torch.cat([full[..., :5], expected_rest.unsqueeze(-1)], -1), -1)
    torch.testing.assert_close(s_logp, expected, atol=1e-5, rtol=1e-5)
