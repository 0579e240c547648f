"""Property tests of the distillation losses."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import REGISTRY, cross_entropy, kd_loss


def _logits(n: int = 6, c: int = 5, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("t", [0.5, 1.0, 4.0, 20.0])
def test_kd_is_zero_on_identical_logits(t: float) -> None:
    z = _logits()
    assert kd_loss(z, z.clone(), temperature=t).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_is_positive_when_logits_differ() -> None:
    assert kd_loss(_logits(seed=0), _logits(seed=1), temperature=2.0).item() > 1e-3


def test_kd_matches_hand_computation() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.2, 3.0, -1.0]])
    T = 2.0
    ps = [math.exp(v / T) for v in s[0].tolist()]
    pt = [math.exp(v / T) for v in t[0].tolist()]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    kl = sum(q * math.log(q / p) for q, p in zip(pt, ps))
    assert kd_loss(s, t, temperature=T).item() == pytest.approx(T * T * kl, rel=1e-5)


def test_kd_is_a_true_kl_not_cross_entropy() -> None:
    """-Σ p log q (a cross-entropy) is not zero on identical inputs; the KL is."""
    z = _logits()
    p = torch.softmax(z, -1)
    cross_ent = -(p * torch.log_softmax(z, -1)).sum(-1).mean()
    assert cross_ent.item() > 0.1
    assert kd_loss(z, z, temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_does_not_reach_teacher() -> None:
    s = _logits(seed=0).requires_grad_(True)
    t = _logits(seed=1).requires_grad_(True)
    kd_loss(s, t, temperature=3.0).backward()
    assert s.grad is not None and t.grad is None


def test_t_squared_keeps_gradient_scale_across_temperatures() -> None:
    """At high T the gradient of the softened KL falls as 1/T²; the T² factor cancels it."""
    s0, t0 = _logits(n=64, seed=2, scale=0.5), _logits(n=64, seed=3, scale=0.5)
    norms = []
    for T in (4.0, 8.0, 16.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t0, temperature=T).backward()
        norms.append(s.grad.norm().item())
    # Without T² these would shrink by 4x per doubling; with it they stay within ~10%
    # (the gradient tends to (s - t) / (C·N·T) · T, i.e. scale ~ 1/T · T² / T = const).
    assert max(norms) / min(norms) < 1.1
    raw = []
    for T in (4.0, 8.0):
        s = s0.clone().requires_grad_(True)
        (kd_loss(s, t0, temperature=T) / (T * T)).backward()
        raw.append(s.grad.norm().item())
    assert raw[0] / raw[1] == pytest.approx(4.0, rel=0.1)


def test_kd_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(_logits(c=5), _logits(c=4), temperature=2.0)


def test_cross_entropy_matches_torch_and_ignores_unlabelled() -> None:
    z = _logits()
    y = torch.tensor([0, 1, 2, 3, 4, -100])
    expect = torch.nn.functional.cross_entropy(z[:5], y[:5])
    assert cross_entropy(z, y).item() == pytest.approx(expect.item(), rel=1e-6)


def test_registry_entries_are_consistent() -> None:
    for name, spec in REGISTRY.items():
        assert spec.summary, name
        assert set(spec.needs) <= {"labels", "teacher_logits", "student_features", "teacher_features"}
        for pname, p in spec.params.items():
            if p.required_text:
                assert spec.check(pname, "2") is None and spec.check(pname, "") is not None
                continue
            assert spec.check(pname, p.default) is None, (name, pname)
    assert REGISTRY["kd"].check("temperature", 0) is not None
    assert REGISTRY["kd"].check("temperature", "hot") is not None


@pytest.mark.parametrize("shape", [(7, 10), (3, 100)])
def test_fast_log_softmax_equals_torch(shape: tuple[int, int]) -> None:
    from distill.losses import log_softmax

    x = _logits(*shape).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    a, b = log_softmax(x), torch.log_softmax(y, -1)
    assert torch.allclose(a, b, atol=1e-6)
    w = torch.randn(shape)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)


@pytest.mark.parametrize("t", [1.0, 2.0, 7.5])
def test_kd_closed_form_matches_autograd_in_value_and_gradient(t: float) -> None:
    from distill.losses import kd_targets, kd_value_and_grad

    teacher = _logits(n=16, c=10, seed=5)
    s = _logits(n=16, c=10, seed=6).requires_grad_(True)
    ref = kd_loss(s, teacher, temperature=t)
    (ref_grad,) = torch.autograd.grad(ref, s)
    prep = kd_targets(teacher, temperature=t)
    value, grad = kd_value_and_grad(s.detach(), **prep, temperature=t)
    assert value.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    # a batch (subset of rows) of the prepared targets gives that batch's loss
    idx = torch.tensor([3, 1, 4])
    sub, _ = kd_value_and_grad(s.detach()[idx], **{k: v[idx] for k, v in prep.items()}, temperature=t)
    assert sub.item() == pytest.approx(kd_loss(s.detach()[idx], teacher[idx], temperature=t).item(), rel=1e-5, abs=1e-6)


def test_cross_entropy_closed_form_matches_autograd() -> None:
    from distill.losses import cross_entropy_value_and_grad

    s = _logits(n=9, c=7, seed=11).requires_grad_(True)
    y = torch.randint(0, 7, (9,), generator=torch.Generator().manual_seed(2))
    ref = cross_entropy(s, y)
    (ref_grad,) = torch.autograd.grad(ref, s)
    value, grad = cross_entropy_value_and_grad(s.detach(), y)
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-7)


@pytest.mark.parametrize("terms", [
    [{"loss": "kd", "weight": 0.6, "temperature": 3.0}, {"loss": "ce", "weight": 0.4}],
    [{"loss": "kd", "weight": 0.5, "temperature": 1.0}, {"loss": "ce", "weight": 0.5}],  # one softmax for both
    [{"loss": "ce"}],
    [{"loss": "kd", "weight": 1.0, "temperature": 4.0}],
    [{"loss": "kd", "weight": 0.3, "temperature": 2.0}, {"loss": "kd", "weight": 0.3, "temperature": 6.0},
     {"loss": "ce", "weight": 0.4}],
])  # fmt: skip
def test_objective_closed_form_matches_autograd_through_a_model(terms: list[dict]) -> None:
    from distill.tasks.classification.recipe import LossTerm
    from distill.tasks.classification.objective import (
        StepGradient, build_objective, closed_form_available, compute_objective, objective_values,
        prepare_teacher_targets,
    )  # fmt: skip

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    x = torch.randn(10, 6)
    y = torch.randint(0, 4, (10,))
    teacher = torch.randn(10, 4) * 2
    objective = build_objective([LossTerm(**t) for t in terms])
    prepared = prepare_teacher_targets(objective, teacher)
    assert closed_form_available(objective, prepared, labels_all_valid=True)
    if any(t["loss"] == "kd" for t in terms):
        assert not closed_form_available(objective, {}, labels_all_valid=True)
    if any(t["loss"] == "ce" for t in terms):
        assert not closed_form_available(objective, prepared, labels_all_valid=False)
    ref_total, ref_values = compute_objective(objective, model(x), y, teacher)
    ref_grads = torch.autograd.grad(ref_total, list(model.parameters()))
    logits = model(x)
    idx = torch.arange(10)
    g = StepGradient(objective, prepared)(logits.detach(), y, idx)
    grads = torch.autograd.grad(logits, list(model.parameters()), grad_outputs=g)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-6)
    # the values, computed later on the rows of several steps at once: the same means
    values = objective_values(objective, logits.detach(), y, prepared, idx)
    assert [t.label for t in objective] == list(ref_values)
    for v, ref in zip(values, ref_values.values()):
        assert v.item() == pytest.approx(ref.item(), rel=1e-5)
    # rows in another order (a shuffled epoch): the teacher's rows follow idx
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    shuffled = objective_values(objective, logits.detach()[perm], y[perm], prepared, perm)
    for v, ref in zip(shuffled, ref_values.values()):
        assert v.item() == pytest.approx(ref.item(), rel=1e-5)
    g_perm = StepGradient(objective, prepared)(logits.detach()[perm], y[perm], perm)
    assert torch.allclose(g_perm, g[perm], atol=1e-7)


def test_cross_entropy_of_a_batch_without_labels_is_zero_not_nan() -> None:
    z = _logits(n=4).requires_grad_(True)
    loss = cross_entropy(z, torch.full((4,), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all()
