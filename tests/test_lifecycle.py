"""The run directory is all or nothing at the start, and a failed run resumes once its input is fixed;
a student of the user's own (``student.factory``) goes through every command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import distill
from distill.cli import main
from distill.core.results import by_role
from tests.conftest import tiny_recipe


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"student": {"arch": "mlp", "params": {"hidden": [0]}}}, "student"),
        ({"student": {"factory": "tests.factories:nowhere"}}, "has no callable 'nowhere'"),
        ({"student": {"factory": "no_such_package.models:f"}}, "cannot import module 'no_such_package.models'"),
        ({"data": {"source": "table", "path": "missing.csv", "label_column": "y"}}, "missing.csv"),
        ({"distill": [{"loss": "hint", "student_layer": "nope", "teacher_layer": "net.0"}]}, "nope"),
        ({"transfer": {"exclude_classes": [42]}}, "42"),
    ],
)
def test_what_the_preflight_finds_leaves_no_run_directory(tmp_path: Path, change: dict, message: str,
                                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    raw = tiny_recipe(**change)
    assert main(["run", str(_write(tmp_path / "r.yaml", raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not Path("runs").exists()


def test_a_failed_run_is_marked_and_resumes_with_the_corrected_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the student passes the preflight (one sample) and fails in the evaluation after training (batch 1024)
    raw = tiny_recipe(student={"factory": "tests.factories:fragile_mlp", "params": {"hidden": 8, "fail_above": 100}})
    recipe = _write(tmp_path / "r.yaml", raw)
    assert main(["run", str(recipe), "--no-progress", "-q"]) == 1
    err = capsys.readouterr().err
    assert "unexpected ValueError: this student refuses batches of more than 100" in err and "Traceback" not in err
    status = json.loads(Path("runs/tiny/status.json").read_text())
    assert status["state"] == "failed" and "refuses batches" in status["reason"]
    teacher = Path("runs/tiny/teacher.safetensors")
    kept = teacher.read_bytes()
    assert not Path("runs/tiny/metrics.json").exists()
    # a plain rerun names the failure; eval says the run did not finish
    assert main(["run", str(recipe), "--no-progress"]) == 2
    assert "holds a failed run (ValueError: this student refuses" in capsys.readouterr().err
    assert main(["eval", "runs/tiny"]) == 2
    assert "did not finish (failed: ValueError" in capsys.readouterr().err
    # with the same recipe, --resume continues (and fails again the same way, still marked)
    raw["student"]["params"]["fail_above"] = 0
    assert main(["run", str(_write(recipe, raw)), "--resume", "--no-progress", "-q"]) == 0
    out = capsys.readouterr()
    assert "student, distilled" in out.out
    assert json.loads(Path("runs/tiny/status.json").read_text())["state"] == "done"
    assert teacher.read_bytes() == kept  # the teacher's recipe did not change: it was kept, not trained again
    log = Path("runs/tiny/run.log").read_text()
    assert "resuming a failed run with a changed recipe: student.params.fail_above" in log
    assert "student: depends on student.params.fail_above, so it is trained again" in log
    assert yaml.safe_load(Path("runs/tiny/recipe.yaml").read_text())["student"]["params"]["fail_above"] == 0


def test_an_interrupted_run_still_resumes_only_with_its_own_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tiny_recipe()
    distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
    raw["train"]["epochs"] = 3
    assert main(["run", str(_write(tmp_path / "r.yaml", raw)), "--resume"]) == 2
    assert "the recipe differs from the one the run started with (changed: train.epochs)" in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_refused_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").write_text("mine")
    raw = tiny_recipe(output={"report": False, "dir": str(tmp_path / "taken")})
    assert main(["run", str(_write(tmp_path / "r.yaml", raw))]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_factory_student_trains_compresses_exports_and_benches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tiny_recipe(student={"factory": "tests.factories:small_mlp", "params": {"hidden": 12}})
    recipe = _write(tmp_path / "r.yaml", raw)
    assert main(["run", str(recipe), "--no-progress", "-q"]) == 0
    metrics = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert by_role(metrics)["student"]["test_acc"] > 0.5
    assert main(["export", "runs/tiny", "--format", "torch"]) == 0
    config = json.loads(Path("runs/tiny/export/torch/config.json").read_text())
    assert config["builder"]["factory"] == "tests.factories:small_mlp"
    assert main(["compress", "runs/tiny", "--set", "compress.prune.kind=structured"]) == 2
    assert "factory 'tests.factories:small_mlp', which distill cannot rebuild smaller" in capsys.readouterr().err
    assert main(["compress", "runs/tiny", "--set", "compress.quantize.kind=dynamic", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["bench", "runs/tiny", "--no-memory"]) == 0
    assert "int8" in capsys.readouterr().out


def test_an_optional_package_a_stage_needs_is_named_with_its_extra() -> None:
    from distill.core.context import require
    from distill.errors import DistillError

    require({"json": "core"}, "nothing")  # present: no error
    with pytest.raises(DistillError, match=r"export.formats onnx needs no_such_module_xyz, which is not installed. "
                                           r"Fix: pip install 'distill\[onnx\]'"):
        require({"no_such_module_xyz": "onnx"}, "export.formats onnx")


@pytest.mark.parametrize("where", ["under_a_file", "cache_is_a_file", "read_only"])
def test_places_that_cannot_be_written_are_refused_before_anything(tmp_path: Path, where: str,
                                                                  capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import os

    (tmp_path / "a_file").write_text("mine")
    output = {"report": False}
    if where == "under_a_file":
        output["dir"] = str(tmp_path / "a_file" / "run")
        expected = f"output.dir {tmp_path / 'a_file' / 'run'} lies under {tmp_path / 'a_file'}, which is a file"
    elif where == "cache_is_a_file":
        output["cache_dir"] = str(tmp_path / "a_file")
        expected = f"output.cache_dir {tmp_path / 'a_file'} is a file, not a folder"
    else:
        if os.geteuid() == 0:  # root may write to any mode-0500 folder; /proc refuses it too
            output["dir"] = "/proc/distill-test-run"
            expected = "cannot write the run directory /proc/distill-test-run"
        else:
            ro = tmp_path / "ro"
            ro.mkdir()
            ro.chmod(0o500)
            output["dir"] = str(ro / "run")
            expected = "is read-only or you may not write there"
    raw = tiny_recipe(output=output)
    assert main(["run", str(_write(tmp_path / "r.yaml", raw))]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert (tmp_path / "a_file").read_text() == "mine" and not Path("runs").exists()


def test_a_recipe_that_would_be_silently_wrong_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import distill

    table = tiny_recipe(data={"source": "table", "path": "t.csv", "label_column": "y", "feature_columns": ["a", "y"]})
    with pytest.raises(distill.RecipeError, match="feature_columns lists 'y', the label column"):
        distill.validate_recipe(table)
    with pytest.raises(distill.RecipeError, match="every term has weight 0"):
        distill.validate_recipe(tiny_recipe(distill=[{"loss": "kd", "weight": 0}, {"loss": "ce", "weight": 0}]))
    # a term with weight 0 is off: kd at 0 needs no teacher outputs and trains on ce alone
    raw = tiny_recipe(distill=[{"loss": "kd", "weight": 0, "temperature": 2.0}, {"loss": "ce", "weight": 1}])
    assert main(["run", str(_write(tmp_path / "r.yaml", raw)), "--no-progress", "-q"]) == 0
    history = json.loads(Path("runs/tiny/metrics.json").read_text())["history"]["student"]
    assert "loss/ce" in history[-1] and "loss/kd" not in history[-1]
    # fm on a table: one problem in the message, not one per character
    from distill.errors import RecipeError

    assert str(RecipeError("one problem")).startswith("1 problem in the recipe:")


def test_a_teacher_checkpoint_with_nan_weights_is_named_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch
    from safetensors.torch import save_file

    from distill.models import build

    teacher = build("mlp", (1, 8, 8), 10, {"hidden": [32]})
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    first = next(iter(state))
    state[first][0, 0] = float("nan")
    save_file(state, str(tmp_path / "t.safetensors"))
    raw = tiny_recipe(teacher={"arch": "mlp", "params": {"hidden": [32]}, "checkpoint": str(tmp_path / "t.safetensors")})
    assert main(["run", str(_write(tmp_path / "r.yaml", raw))]) == 2
    err = capsys.readouterr().err
    assert f"the teacher from teacher.checkpoint {tmp_path / 't.safetensors'} gives NaN or infinite outputs" in err
    assert f"non-finite weights in {first}" in err and "lower train.optimizer.lr" not in err
    assert not Path("runs").exists() and not Path(".distill-cache").exists()
    assert torch.isnan(state[first]).any()


def test_a_teacher_at_chance_stops_the_run_with_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import save_file

    from distill.models import build

    save_file(build("mlp", (1, 8, 8), 10, {"hidden": [32]}).state_dict(), str(tmp_path / "untrained.safetensors"))
    raw = tiny_recipe(teacher={"arch": "mlp", "params": {"hidden": [32]}, "checkpoint": str(tmp_path / "untrained.safetensors")})
    assert main(["run", str(_write(tmp_path / "r.yaml", raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: the teacher scores \d+\.\d% on the validation split \(143 samples\), no better than "
                     r"chance \(the most frequent class alone: \d+\.\d%; 10 classes\)", err), err  # fmt: skip
    assert "eval.allow_chance_teacher: true" in err
    assert json.loads(Path("runs/tiny/status.json").read_text())["state"] == "failed"
    assert not Path("runs/tiny/student.safetensors").exists()  # stopped before any student trained
