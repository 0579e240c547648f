"""The Python API without a recipe: a user-defined student distilled from a user-defined teacher on tensors
(and on a DataLoader, and from logits alone), as a notebook would."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import distill


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[:1200], perm[1200:]
    return {"x": x[tr], "y": y[tr], "xv": x[va], "yv": y[va]}


class Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _trained_teacher(d: dict[str, torch.Tensor]) -> nn.Module:
    torch.manual_seed(0)
    teacher = Teacher()
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(teacher(d["x"]), d["y"]).backward()
        opt.step()
    return teacher


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def test_distill_your_own_module_in_a_few_lines(digits: dict[str, torch.Tensor]) -> None:
    teacher = _trained_teacher(digits)
    student = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    state = torch.random.get_rng_state()
    result = distill.distill_module(student, teacher, (digits["x"], digits["y"]), val=(digits["xv"], digits["yv"]),
                                    epochs=8, batch_size=64, lr=1e-2, progress=False)  # fmt: skip
    assert result.student is student and not student.training
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.history[-1]["val_acc"] == pytest.approx(_acc(student, digits["xv"], digits["yv"]), abs=1e-6)
    assert result.teacher_val_acc > 0.9 and result.history[-1]["val_acc"] > 0.85
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left as it was


def test_a_dataloader_and_logits_alone_give_the_same_student(digits: dict[str, torch.Tensor]) -> None:
    teacher = _trained_teacher(digits)
    with torch.no_grad():
        logits = teacher(digits["x"])

    def fresh() -> nn.Module:
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits["x"], digits["y"]), batch_size=100)
    a = distill.distill_module(fresh(), teacher, loader, epochs=2, progress=False).student
    b = distill.distill_module(fresh(), logits, (digits["x"], digits["y"]), epochs=2, progress=False).student
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_bad_inputs_are_distill_errors(digits: dict[str, torch.Tensor]) -> None:
    student = nn.Sequential(nn.Linear(64, 7))
    teacher = _trained_teacher(digits)
    with pytest.raises(distill.ModelError, match=r"it must return \(2, 10\)"):
        distill.distill_module(student, teacher, (digits["x"], digits["y"]), progress=False)
    with pytest.raises(distill.DataError, match="1200 inputs but 5 labels"):
        distill.distill_module(student, teacher, (digits["x"], digits["y"][:5]), progress=False)
    bad = torch.full((1200, 10), float("nan"))
    with pytest.raises(distill.DataError, match="NaN"):
        distill.distill_module(nn.Linear(64, 10), bad, (digits["x"], digits["y"]), progress=False)
    with pytest.raises(distill.RecipeError):
        distill.distill_module(nn.Linear(64, 10), teacher, (digits["x"], digits["y"]), losses=[{"loss": "kdd"}],
                               progress=False)  # fmt: skip


def test_a_registered_loss_of_your_own_trains_like_a_built_in_one(digits: dict[str, torch.Tensor]) -> None:
    from distill import losses

    def my_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        return scale * ((student_logits - teacher_logits) ** 2).mean()

    losses.register("my_mse_test", my_mse, needs=("teacher_logits",), summary="mean (s - t)^2 of the logits",
                    params={"scale": losses.Param(1.0, "a factor", low=0.0)})  # fmt: skip
    try:
        with pytest.raises(distill.RecipeError, match="already a loss"):
            losses.register("my_mse_test", my_mse, needs=("teacher_logits",), summary="again")
        with pytest.raises(distill.RecipeError, match="scale"):
            distill.validate_recipe({"distill": [{"loss": "my_mse_test", "scale": -1}]})
        teacher = _trained_teacher(digits)
        runs = {}
        for loss in ("my_mse_test", "logit_mse"):  # the built-in one is the same function (center 0)
            torch.manual_seed(0)
            student = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
            runs[loss] = distill.distill_module(student, teacher, (digits["x"], digits["y"]), losses=[{"loss": loss}],
                                                epochs=3, lr=3e-2, progress=False).history  # fmt: skip
        mine, builtin = runs["my_mse_test"], runs["logit_mse"]
        assert [h["loss"] for h in mine] == pytest.approx([h["loss"] for h in builtin], rel=1e-5)
        assert mine[-1]["loss"] < 0.8 * mine[0]["loss"]
    finally:
        losses.REGISTRY.pop("my_mse_test", None)
