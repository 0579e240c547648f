"""Function matching / consistent teaching (Beyer et al. 2022): the views, the loss, the recipe
rules, the frozen online teacher, and training where teacher and student see the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.cli import main
from distill.data.augment import shift_mixup_views
from distill.errors import RecipeError, TrainingError
from distill.losses import REGISTRY, function_matching_loss, kd_loss
from distill.core.recipes import validate_recipe
from tests.conftest import tiny_recipe


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_views_are_deterministic_and_keep_the_shape() -> None:
    x = torch.randn(16, 1, 8, 8)
    a = shift_mixup_views(x, _gen(3), shift=2, mixup_alpha=1.0)
    b = shift_mixup_views(x, _gen(3), shift=2, mixup_alpha=1.0)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, shift_mixup_views(x, _gen(4), shift=2, mixup_alpha=1.0))


def test_no_shift_no_mixup_is_the_identity() -> None:
    x = torch.randn(5, 1, 6, 6)
    assert torch.equal(shift_mixup_views(x, _gen(), shift=0, mixup_alpha=0.0), x)


def test_mixup_gives_convex_combinations_of_two_samples_of_the_batch() -> None:
    # sample i is the constant image i: a mixed view is a constant image between two of them
    n = 32
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    v = shift_mixup_views(x, _gen(1), shift=0, mixup_alpha=1.0)
    flat = v.flatten(1)
    assert torch.allclose(flat, flat[:, :1].expand_as(flat))  # one lambda per sample
    assert float(flat.min()) >= 0.0 and float(flat.max()) <= n - 1
    assert not torch.allclose(v, x)  # Beta(1, 1) mixes almost surely
    # the batch mean is kept: each sample is used once as itself and once as a partner
    lam_free = shift_mixup_views(torch.ones(n, 3), _gen(2), shift=0, mixup_alpha=0.5)
    assert torch.allclose(lam_free, torch.ones(n, 3))  # mixing equal rows changes nothing


def test_flip_mirrors_about_half_of_the_images_and_nothing_else() -> None:
    x = torch.randn(64, 1, 6, 6)
    v = shift_mixup_views(x, _gen(5), shift=0, mixup_alpha=0.0, flip=1)
    mirrored = [bool(torch.allclose(v[i], x[i].flip(-1), atol=1e-6)) for i in range(64)]
    kept = [bool(torch.allclose(v[i], x[i], atol=1e-6)) for i in range(64)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 16 < sum(mirrored) < 48


def test_views_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="need image batches"):
        shift_mixup_views(torch.randn(4, 3), _gen(), shift=0, mixup_alpha=0.0, flip=1)
    with pytest.raises(ValueError, match="flip must be 0"):
        shift_mixup_views(torch.randn(4, 1, 4, 4), _gen(), shift=0, mixup_alpha=0.0, flip=2)
    with pytest.raises(ValueError, match="need image batches"):
        shift_mixup_views(torch.randn(4, 3), _gen(), shift=1, mixup_alpha=0.0)
    with pytest.raises(ValueError, match="whole number"):
        shift_mixup_views(torch.randn(4, 1, 4, 4), _gen(), shift=1.5, mixup_alpha=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mixup_alpha"):
        shift_mixup_views(torch.randn(4, 1, 4, 4), _gen(), shift=0, mixup_alpha=-1.0)


def test_loss_is_kd_on_the_view_and_only_the_student_gets_gradients() -> None:
    s = torch.randn(6, 5, generator=_gen(0), requires_grad=True)
    t = torch.randn(6, 5, generator=_gen(1), requires_grad=True)
    for temp in (1.0, 3.0):
        v = function_matching_loss(s, t, temperature=temp, mixup_alpha=0.3, shift=1)
        assert torch.allclose(v, kd_loss(s, t, temperature=temp))
    assert float(function_matching_loss(t.detach(), t.detach())) == pytest.approx(0.0, abs=1e-6)
    function_matching_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_registry_entry_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    spec = REGISTRY["fm"]
    assert spec.views == ("shift", "mixup_alpha", "flip") and spec.needs_teacher
    assert spec.check("flip", 2) and spec.check("flip", 0.5) and spec.check("flip", 1) is None
    assert spec.check("shift", 1.5) and spec.check("shift", -1) and spec.check("mixup_alpha", -0.1)
    assert spec.check("shift", 2) is None and spec.check("mixup_alpha", 0) is None
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "fm " in out and "Beyer et al. 2022" in out and "mixup_alpha" in out


def test_recipe_rules() -> None:
    assert validate_recipe({"distill": [{"loss": "fm", "mixup_alpha": 0.5}]}).distill[0].loss == "fm"
    with pytest.raises(RecipeError, match="no single hard label"):
        validate_recipe({"distill": [{"loss": "fm"}, {"loss": "ce", "weight": 0.5}]})
    with pytest.raises(RecipeError, match="no single hard label"):
        validate_recipe({"distill": [{"loss": "fm"}, {"loss": "dkd"}]})
    # shifted views without mixing keep their labels
    validate_recipe({"distill": [{"loss": "fm", "mixup_alpha": 0}, {"loss": "ce"}]})
    with pytest.raises(RecipeError, match="at most one term"):
        validate_recipe({"distill": [{"loss": "fm"}, {"loss": "fm", "temperature": 2.0}]})
    with pytest.raises(RecipeError, match="whole number"):
        validate_recipe({"distill": [{"loss": "fm", "shift": 0.5}]})


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    ).eval()


def test_online_teacher_is_frozen_and_matches_the_module() -> None:
    from distill.tasks.classification.teachers import TorchTeacher

    teacher = TorchTeacher(_cnn(), 10)
    online = teacher.online()
    for n in (16, 3):  # traced on the first batch, then other batch sizes
        x = torch.randn(n, 1, 8, 8)
        assert torch.allclose(online(x), teacher.logits(x), atol=1e-5)


def test_online_teacher_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    from distill.tasks.classification.teachers import TorchTeacher

    class Pair(nn.Module):  # returns (logits, extra): TorchTeacher takes the first, a traced copy would not
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.lin(x), x.sum(1)

    teacher = TorchTeacher(Pair(), 3)
    x = torch.randn(5, 4)
    with caplog.at_level("INFO", logger="distill"):
        out = teacher.online()(x)
    assert torch.equal(out, teacher.logits(x))
    assert "runs eagerly" in caplog.text


def test_teacher_and_student_see_the_same_view_and_two_steps_train() -> None:
    from accelerate import Accelerator

    from distill.data import Split
    from distill.tasks.classification.loop import fit
    from distill.tasks.classification.recipe import TrainConfig
    from distill.tasks.classification.objective import build_objective

    g = _gen(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    train = Split(x=x, y=y, ids=[str(i) for i in range(64)]) if "ids" in Split.__dataclass_fields__ else Split(x=x, y=y)
    teacher = _cnn()
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    seen_teacher: list[torch.Tensor] = []
    seen_student: list[torch.Tensor] = []
    student.register_forward_pre_hook(lambda m, args: seen_student.append(args[0].detach().clone()) if m.training else None)

    def online(v: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seen_teacher.append(v.clone())
        with torch.no_grad():
            return teacher(v), {}

    objective = build_objective(validate_recipe({"distill": [{"loss": "fm", "shift": 1, "mixup_alpha": 1.0}]}).distill)
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer={"name": "adam", "lr": 0.05})
    with pytest.raises(KeyboardInterrupt):
        fit(student, train, objective, cfg, accelerator=Accelerator(cpu=True), role="student",
            eval_splits={}, online_teacher=online, progress=False, stop_after_steps=2)  # fmt: skip
    assert len(seen_teacher) == 2 and len(seen_student) == 2
    for t_in, s_in in zip(seen_teacher, seen_student):
        assert torch.equal(t_in, s_in)  # consistent teaching: the very same images
    assert not any(torch.equal(v, x[: len(v)]) for v in seen_student)  # and they are new views, not the data
    # without an online teacher the term is refused with a fix
    with pytest.raises(TrainingError, match="needs the teacher online"):
        fit(student, train, objective, cfg, accelerator=Accelerator(cpu=True), role="student",
            eval_splits={}, teacher_logits=torch.zeros(64, 10), progress=False)  # fmt: skip


def test_a_run_with_function_matching(write_recipe) -> None:
    raw = tiny_recipe(distill=[{"loss": "fm", "shift": 1, "mixup_alpha": 1.0, "temperature": 2.0}], eval={"baseline": False})
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert "fm views" in m["teacher_outputs"]["cache"]
    hist = m["history"]["student"]
    assert len(hist) == 2 and all("loss/fm" in h for h in hist)
    assert hist[-1]["loss/fm"] < hist[0]["loss/fm"]
    assert "frozen TorchScript copy" in Path("runs/tiny/run.log").read_text()


def test_function_matching_with_a_precomputed_teacher_is_refused(write_recipe, tmp_path: Path, capsys) -> None:
    import numpy as np

    from distill.tasks.classification.data import build_data

    data = build_data(validate_recipe(tiny_recipe()).data)
    ids = [*data.train.ids, *data.val.ids, *data.test.ids]
    np.savez(tmp_path / "t.npz", ids=np.array(ids, dtype=str), logits=np.zeros((len(ids), 10), dtype=np.float32))
    raw = tiny_recipe(distill=[{"loss": "fm", "shift": 0}], eval={"baseline": False})
    raw["teacher"] = {"kind": "precomputed", "path": str(tmp_path / "t.npz")}
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 2
    assert "function matching" in capsys.readouterr().err
