"""Property tests of the logit losses beyond Hinton KD: DKD, DIST, logit-standardised KD, logit regression."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from distill.losses import REGISTRY, dist_loss, dkd_loss, kd_loss, logit_mse_loss, ls_kd_loss, standardize_logits


def _logits(n: int = 6, c: int = 5, seed: int = 0, scale: float = 3.0) -> Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * scale


def _labels(n: int = 6, c: int = 5, seed: int = 0) -> Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed + 100))


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - ma for x in a], [x - mb for x in b]
    num = sum(x * y for x, y in zip(da, db))
    return num / (math.sqrt(sum(x * x for x in da)) * math.sqrt(sum(y * y for y in db)))


# name -> call(student, teacher, labels, **params)
CALLS = {
    "dkd": lambda s, t, y, **kw: dkd_loss(s, t, y, **kw),
    "dist": lambda s, t, y, **kw: dist_loss(s, t, **kw),
    "ls_kd": lambda s, t, y, **kw: ls_kd_loss(s, t, **kw),
    "logit_mse": lambda s, t, y, temperature=None, **kw: logit_mse_loss(s, t, **kw),  # no temperature
}


# ----------------------------------------------------------------- all three
@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("t", [0.5, 1.0, 4.0])
def test_zero_on_identical_logits(name: str, t: float) -> None:
    z = _logits(n=8, c=5, seed=1)
    value = CALLS[name](z, z.clone(), _labels(8, 5), temperature=t)
    assert value.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("seed", range(5))
def test_non_negative_and_positive_when_different(name: str, seed: int) -> None:
    s, t = _logits(n=16, c=7, seed=seed), _logits(n=16, c=7, seed=seed + 50)
    value = CALLS[name](s, t, _labels(16, 7, seed), temperature=2.0)
    assert torch.isfinite(value)
    assert value.item() > 1e-3


@pytest.mark.parametrize("name", sorted(CALLS))
def test_gradient_reaches_student_not_teacher(name: str) -> None:
    s = _logits(seed=0).requires_grad_(True)
    t = _logits(seed=1).requires_grad_(True)
    CALLS[name](s, t, _labels(), temperature=2.0).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("name", sorted(CALLS))
def test_shape_mismatch_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        CALLS[name](_logits(c=5), _logits(c=4), _labels())
    with pytest.raises(ValueError, match="2-D"):
        CALLS[name](torch.zeros(5), torch.zeros(5), _labels(5))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_two_training_steps_reduce_the_loss(name: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=gen)
    teacher = torch.randn(32, 5, generator=gen) * 3.0
    y = teacher.argmax(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    values = []
    for _ in range(3):  # two steps, then measure
        loss = CALLS[name](model(x), teacher, y, temperature=2.0)
        values.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert values[2] < values[1] < values[0]


def test_registry_entries_defaults_pass_their_checks() -> None:
    for name in ("dkd", "dist", "ls_kd"):
        spec = REGISTRY[name]
        assert spec.summary and "\n" not in spec.summary
        assert spec.needs_teacher
        assert spec.prepare is None and spec.value_and_grad is None  # autograd path only
        for pname, p in spec.params.items():
            assert spec.check(pname, p.default) is None, (name, pname)
        assert spec.check("temperature", 0.0) is not None
        assert spec.check("temperature", "hot") is not None
    assert REGISTRY["dkd"].needs == ("teacher_logits", "labels")
    assert REGISTRY["dist"].needs == ("teacher_logits",)
    assert REGISTRY["ls_kd"].needs == ("teacher_logits",)
    assert REGISTRY["dkd"].check("beta", -1.0) is not None
    assert REGISTRY["dkd"].check("alpha", 0.0) is None
    assert REGISTRY["dist"].check("gamma", -0.5) is not None
    # the existing entries keep their fast path
    assert REGISTRY["kd"].prepare is not None and REGISTRY["kd"].value_and_grad is not None


def test_registry_defaults_are_the_functions_defaults() -> None:
    import inspect

    for name in ("dkd", "dist", "ls_kd", "logit_mse"):
        spec = REGISTRY[name]
        sig = inspect.signature(spec.fn)
        for pname, p in spec.params.items():
            assert sig.parameters[pname].default == p.default, (name, pname)


# ----------------------------------------------------------------------- DKD
def test_dkd_matches_hand_computation() -> None:
    s = [1.0, 2.0, 0.5]
    t = [0.2, 3.0, -1.0]
    gt, T, alpha, beta = 1, 2.0, 0.7, 3.0
    ps, pt = _softmax(s, T), _softmax(t, T)
    tckd = _kl([pt[gt], 1 - pt[gt]], [ps[gt], 1 - ps[gt]])
    rest = [i for i in range(3) if i != gt]
    ns, nt = _softmax([s[i] for i in rest], T), _softmax([t[i] for i in rest], T)
    nckd = _kl(nt, ns)
    expect = T * T * (alpha * tckd + beta * nckd)
    got = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([gt]), alpha=alpha, beta=beta, temperature=T)
    assert got.item() == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_dkd_recovers_hinton_kd_with_the_papers_weights(seed: int) -> None:
    """KD = TCKD + (1 − p_gt^teacher) · NCKD, sample by sample (Zhao et al., eq. 7)."""
    T = 3.0
    s, t = _logits(n=1, c=6, seed=seed), _logits(n=1, c=6, seed=seed + 10)
    y = _labels(1, 6, seed)
    w = 1.0 - torch.softmax(t / T, 1)[0, y[0]].item()
    got = dkd_loss(s, t, y, alpha=1.0, beta=w, temperature=T)
    assert got.item() == pytest.approx(kd_loss(s, t, temperature=T).item(), rel=1e-4)


def test_dkd_terms_separate() -> None:
    """With the target class's probability matched, TCKD is zero and only NCKD (beta) counts."""
    t = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    s = torch.tensor([[2.0, 1.0, 0.0, -1.0]])  # same target logit; the others are a permutation of the teacher's
    y = torch.tensor([0])
    assert dkd_loss(s, t, y, alpha=1.0, beta=0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert dkd_loss(s, t, y, alpha=0.0, beta=1.0).item() > 1e-3


def test_dkd_ignores_unlabelled_rows_and_checks_labels() -> None:
    s, t, y = _logits(n=6), _logits(n=6, seed=1), _labels(6)
    y_partial = y.clone()
    y_partial[[1, 4]] = -100
    keep = y_partial != -100
    assert dkd_loss(s, t, y_partial).item() == pytest.approx(dkd_loss(s[keep], t[keep], y[keep]).item(), rel=1e-6)
    none = torch.full((6,), -100)
    s_req = s.clone().requires_grad_(True)
    value = dkd_loss(s_req, t, none)
    assert value.item() == 0.0
    value.backward()  # still part of the graph
    with pytest.raises(ValueError, match="labels must be shaped"):
        dkd_loss(s, t, y[:3])
    with pytest.raises(ValueError, match=r"lie in \[0, 5\)"):
        dkd_loss(s, t, torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="integer"):
        dkd_loss(s, t, y.float())


def test_dkd_temperature_scale() -> None:
    """The T² factor: at high T the loss (like KD) tends to a T-independent value."""
    s, t, y = _logits(n=32, seed=2, scale=0.5), _logits(n=32, seed=3, scale=0.5), _labels(32)
    a, b = dkd_loss(s, t, y, temperature=50.0).item(), dkd_loss(s, t, y, temperature=100.0).item()
    assert a == pytest.approx(b, rel=0.05)


# ---------------------------------------------------------------------- DIST
def test_dist_matches_hand_computation() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 2.0]]
    t = [[0.2, 3.0, -1.0], [1.0, 0.5, 0.0]]
    T, beta, gamma = 2.0, 0.5, 2.0
    ps = [_softmax(r, T) for r in s]
    pt = [_softmax(r, T) for r in t]
    inter = 1 - sum(_pearson(a, b) for a, b in zip(ps, pt)) / 2
    cols = lambda m: [[r[c] for r in m] for c in range(3)]  # noqa: E731
    intra = 1 - sum(_pearson(a, b) for a, b in zip(cols(ps), cols(pt))) / 3
    expect = T * T * (beta * inter + gamma * intra)
    got = dist_loss(torch.tensor(s), torch.tensor(t), beta=beta, gamma=gamma, temperature=T)
    assert got.item() == pytest.approx(expect, rel=1e-5)


def test_dist_is_bounded_and_terms_are_weighted() -> None:
    s, t = _logits(n=10, seed=4), _logits(n=10, seed=5)
    inter = dist_loss(s, t, beta=1.0, gamma=0.0).item()
    intra = dist_loss(s, t, beta=0.0, gamma=1.0).item()
    assert 0.0 < inter <= 2.0 and 0.0 < intra <= 2.0
    assert dist_loss(s, t, beta=2.0, gamma=3.0).item() == pytest.approx(2 * inter + 3 * intra, rel=1e-6)
    assert dist_loss(s, t, beta=1.0, gamma=1.0, temperature=3.0).item() == pytest.approx(
        9.0 * (dist_loss(s * 1 / 3, t * 1 / 3, beta=1.0, gamma=1.0).item()), rel=1e-5
    )


def test_dist_anticorrelated_prediction_is_worse_than_random() -> None:
    t = _logits(n=8, seed=6)
    assert dist_loss(-t, t).item() > dist_loss(_logits(n=8, seed=7), t).item()


# --------------------------------------------------------------------- LS-KD
@pytest.mark.parametrize("a,b", [(1.0, 0.0), (0.3, 5.0), (7.0, -2.0), (100.0, 1000.0)])
def test_ls_kd_is_invariant_to_positive_affine_maps_of_the_student(a: float, b: float) -> None:
    t = _logits(n=8, c=10, seed=8)
    assert ls_kd_loss(a * t + b, t, temperature=2.0).item() == pytest.approx(0.0, abs=1e-5)
    s = _logits(n=8, c=10, seed=9)
    assert ls_kd_loss(a * s + b, t).item() == pytest.approx(ls_kd_loss(s, t).item(), rel=1e-4)


def test_ls_kd_per_row_affine_maps_and_negative_scale() -> None:
    t = _logits(n=4, c=6, seed=10)
    a = torch.tensor([[0.5], [2.0], [10.0], [1.0]])
    b = torch.tensor([[1.0], [-3.0], [0.0], [42.0]])
    assert ls_kd_loss(a * t + b, t).item() == pytest.approx(0.0, abs=1e-5)
    assert ls_kd_loss(-t, t).item() > 0.1  # a < 0 reverses the ranking: not invariant


def test_ls_kd_matches_hand_computation() -> None:
    s = [1.0, 2.0, 0.5, -1.0]
    t = [0.2, 3.0, -1.0, 0.0]
    T = 2.0

    def z(row: list[float]) -> list[float]:
        m = sum(row) / len(row)
        sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
        return [(v - m) / (sd + 1e-7) for v in row]

    expect = T * T * _kl(_softmax(z(t), T), _softmax(z(s), T))
    assert ls_kd_loss(torch.tensor([s]), torch.tensor([t]), temperature=T).item() == pytest.approx(expect, rel=1e-5)


def test_standardize_logits_rows() -> None:
    z = standardize_logits(_logits(n=5, c=9, seed=11))
    assert torch.allclose(z.mean(1), torch.zeros(5), atol=1e-6)
    assert torch.allclose(z.std(1), torch.ones(5), atol=1e-5)
    assert torch.equal(standardize_logits(torch.full((2, 3), 4.0)), torch.zeros(2, 3))


def test_ls_kd_rejects_a_single_class() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        ls_kd_loss(torch.zeros(3, 1), torch.zeros(3, 1))


# ------------------------------------------------------------ logit regression
def test_logit_mse_matches_hand_computation_and_centring() -> None:
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 2.0, 6.0]])
    assert logit_mse_loss(s, t).item() == pytest.approx((1 + 0 + 9) / 3)
    # centred: only the differences count: s - mean = (-1, 0, 1), t - mean = (-1.33, -1.33, 2.67)
    assert logit_mse_loss(s, t, center=1).item() == pytest.approx(((1 / 3) ** 2 + (4 / 3) ** 2 + (5 / 3) ** 2) / 3)
    z = _logits(n=8, c=5, seed=3)
    shift = torch.randn(8, 1) * 10
    assert logit_mse_loss(z + shift, z, center=1).item() == pytest.approx(0.0, abs=1e-5)
    assert logit_mse_loss(z + shift, z).item() > 1.0  # raw logits: the offset is an error
    spec = REGISTRY["logit_mse"]
    assert spec.needs == ("teacher_logits",) and spec.check("center", 1) is None
    assert spec.check("center", 2) is not None and spec.check("center", 0.5) is not None


def test_logit_mse_is_hinton_kd_at_high_temperature() -> None:
    """Hinton et al. 2015, section 2.1: as T grows, T² · KL tends to half the mean squared difference of
    the centred logits (1/(2C) · sum over classes)."""
    s, t = _logits(n=16, c=10, seed=4, scale=1.0), _logits(n=16, c=10, seed=5, scale=1.0)
    half_mse = 0.5 * logit_mse_loss(s, t, center=1).item()
    assert kd_loss(s, t, temperature=200.0).item() == pytest.approx(half_mse, rel=1e-2)
    assert abs(kd_loss(s, t, temperature=1.0).item() - half_mse) > 0.05 * half_mse


@pytest.mark.parametrize("name", ["logit_mse", "dkd"])
def test_logit_method_trains_end_to_end_from_the_cli(name: str, write_recipe, monkeypatch, tmp_path) -> None:
    import json
    from pathlib import Path

    from distill.cli import main

    from .conftest import tiny_recipe

    monkeypatch.chdir(tmp_path)
    term = {"loss": name, "weight": 1.0, **({"center": 1} if name == "logit_mse" else {"temperature": 2.0})}
    raw = tiny_recipe(distill=[term, {"loss": "ce", "weight": 0.5}])
    raw["eval"]["baseline"] = False
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    hist = json.loads(Path("runs/tiny/metrics.json").read_text())["history"]["student"]
    assert hist[-1][f"loss/{name}"] < hist[0][f"loss/{name}"]  # logged separately, and it falls
