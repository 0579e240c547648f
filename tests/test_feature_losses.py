"""Feature-based methods: property tests of the pure losses, and end-to-end runs with hooks and adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.errors import RecipeError
from distill.losses import attention_transfer_loss, contrastive_loss, hint_loss, rkd_loss
from distill.losses.feature import attention_map
from distill.core.recipes import validate_recipe

from .conftest import tiny_recipe


def _f(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_hint_is_mse_and_zero_on_identical() -> None:
    a, b = _f(4, 6), _f(4, 6, seed=1)
    assert hint_loss(a, a.clone()).item() == 0.0
    assert hint_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError):
        hint_loss(_f(4, 6), _f(4, 7))


def test_attention_maps_are_unit_norm_and_channel_count_free() -> None:
    s, t = _f(3, 4, 5, 5), _f(3, 16, 5, 5, seed=2)
    assert torch.allclose(attention_map(s).norm(dim=1), torch.ones(3), atol=1e-6)
    assert attention_transfer_loss(s, t).item() > 0
    # scaling a feature map does not change its attention map
    assert attention_transfer_loss(s, 3.0 * s).item() == pytest.approx(0.0, abs=1e-10)
    # different spatial sizes are pooled to the smaller one
    assert attention_transfer_loss(_f(2, 4, 8, 8), _f(2, 4, 4, 4, seed=3)).item() >= 0


def test_rkd_is_invariant_to_scale_and_rotation_of_the_teacher_space() -> None:
    s = _f(8, 5)
    q, _ = torch.linalg.qr(_f(5, 5, seed=4))
    assert rkd_loss(s, 2.5 * s @ q).item() == pytest.approx(0.0, abs=1e-5)
    assert rkd_loss(s, _f(8, 12, seed=5)).item() > 0.01  # dimensions may differ


def test_contrastive_picks_the_own_sample_and_ignores_scale() -> None:
    t = _f(16, 8, seed=6)
    matched = contrastive_loss(t.clone(), t, temperature=0.1).item()
    shuffled = contrastive_loss(t[torch.randperm(16, generator=torch.Generator().manual_seed(0))], t).item()
    # a student that returns each sample's own teacher embedding scores far below a shuffled one, and the
    # loss is at least log(N) away from chance: chance is log(16) = 2.77
    assert matched < 0.5 < 2.0 < shuffled
    assert contrastive_loss(3.0 * t, t).item() == pytest.approx(matched, rel=1e-5)  # only directions count
    # a lower temperature sharpens: the matched loss falls
    assert contrastive_loss(t, t, temperature=0.05).item() < matched
    with pytest.raises(ValueError, match="temperature must be > 0"):
        contrastive_loss(t, t, temperature=0.0)
    with pytest.raises(ValueError, match="student features"):
        contrastive_loss(_f(16, 4), t)


@pytest.mark.parametrize("loss", [hint_loss, attention_transfer_loss, rkd_loss, contrastive_loss])
def test_gradient_reaches_student_not_teacher(loss) -> None:
    s = _f(6, 4, 3, 3).requires_grad_(True)
    t = _f(6, 4, 3, 3, seed=9).requires_grad_(True)
    loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_feature_terms_need_their_layers() -> None:
    with pytest.raises(RecipeError, match="needs student_layer, teacher_layer"):
        validate_recipe({"distill": [{"loss": "hint"}]})


@pytest.mark.parametrize(
    "term",
    [
        {"loss": "hint", "weight": 1.0, "student_layer": "2", "teacher_layer": "2"},  # 8 vs 32 units: linear adapter
        {"loss": "rkd", "weight": 1.0, "student_layer": "2", "teacher_layer": "2"},
        {"loss": "at", "weight": 100.0, "student_layer": "2", "teacher_layer": "2"},
        {"loss": "crd", "weight": 1.0, "student_layer": "2", "teacher_layer": "2"},  # 8 vs 32 units: adapter
    ],
    ids=["hint", "rkd", "at", "crd"],
)
def test_feature_method_trains_end_to_end(term, write_recipe) -> None:
    raw = tiny_recipe(distill=[{"loss": "kd", "weight": 0.5, "temperature": 2.0}, {"loss": "ce", "weight": 0.5}, term])
    raw["eval"]["baseline"] = False
    if term["loss"] == "at":  # attention maps need the same number of units: give the student 32 too
        raw["student"]["params"] = {"hidden": [32]}
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    hist = m["history"]["student"]
    assert f"loss/{term['loss']}" in hist[0]  # logged separately
    assert hist[-1][f"loss/{term['loss']}"] < hist[0][f"loss/{term['loss']}"] or term["loss"] == "at"
    if term["loss"] in ("hint", "crd"):
        assert "feature adapters" in Path("runs/tiny/run.log").read_text()


def test_feature_method_with_cnn_layers_and_a_conv_adapter(idx_dir: Path, write_recipe) -> None:
    raw = tiny_recipe(
        data={"source": "fashion_mnist", "path": str(idx_dir), "val_fraction": 0.2},
        student={"arch": "cnn", "params": {"channels": [2, 4], "hidden": 8, "dropout": 0.0}},
        distill=[{"loss": "ce"}, {"loss": "hint", "weight": 1.0, "student_layer": "6", "teacher_layer": "6"},
                 {"loss": "at", "weight": 10.0, "student_layer": "6", "teacher_layer": "6"}],
    )  # fmt: skip
    raw["teacher"] = {"arch": "cnn", "params": {"channels": [4, 8], "hidden": 16, "dropout": 0.0},
                      "train": {"epochs": 1, "batch_size": 32}}  # fmt: skip
    raw["eval"]["baseline"] = False
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    log = Path("runs/tiny/run.log").read_text()
    assert "Conv2d(4, 8, kernel_size=(1, 1)" in log


def test_unknown_layer_is_a_clear_error(write_recipe, capsys) -> None:
    raw = tiny_recipe(distill=[{"loss": "hint", "student_layer": "9", "teacher_layer": "2"}])
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    assert "the student has no layer '9'. Its layers: 0 (Flatten)" in capsys.readouterr().err


def test_layers_command_lists_module_paths(write_recipe, capsys) -> None:
    assert main(["layers", str(write_recipe(tiny_recipe()))]) == 0
    out = capsys.readouterr().out
    assert "teacher:" in out and "student:" in out and "Linear" in out and "(8,)" in out
