"""End-to-end: the real CLI on tiny models over digits and a tiny generated IDX folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import main
from distill.tasks.classification.pipeline import run
from distill.core.recipes import validate_recipe
from distill.core.results import by_role

from .conftest import tiny_recipe


def test_help_of_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["--help"], ["run", "--help"], ["demo", "--help"], ["eval", "--help"], ["recipe", "--help"],
                ["report", "--help"], ["layers", "--help"], ["compress", "--help"], ["export", "--help"],
                ["bench", "--help"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(cmd)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "soft labels" in out and "--set KEY=VALUE" in out and "--resume" in out


def test_recipe_example_and_check(write_recipe, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "--example"]) == 0
    example = capsys.readouterr().out
    p = write_recipe(yaml.safe_load(example))
    assert main(["recipe", "--check", str(p), "--schema-only", "--set", "train.epochs=2"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 2


def test_methods_and_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "kd " in out and "temperature" in out and "mlp" in out and "channels" in out


def test_run_writes_a_complete_run_directory(write_recipe, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_recipe(tiny_recipe())
    assert main(["run", str(p), "--no-progress", "--set", "train.epochs=3"]) == 0
    d = Path("runs/tiny")
    for name in ("recipe.yaml", "run.log", "teacher.safetensors", "student.safetensors", "baseline.safetensors",
                 "metrics.json", "comparison.md", "comparison.json", "history/student.json"):  # fmt: skip
        assert (d / name).exists(), name
    assert list((d / "checkpoints" / "student").glob("epoch-*.pt"))
    resolved = yaml.safe_load((d / "recipe.yaml").read_text())
    assert resolved["train"]["epochs"] == 3
    metrics = json.loads((d / "metrics.json").read_text())
    assert set(by_role(metrics)) == {"teacher", "baseline", "student"}
    assert len(metrics["history"]["student"]) == 3
    for role in ("teacher", "baseline", "student"):
        assert 0.0 <= by_role(metrics)[role]["test_acc"] <= 1.0
    s = metrics["summary"]
    assert 0 < s["cost_reduction"] < 1 and s["retention"] > 0
    assert metrics["teacher_outputs"]["cache"] == "miss"
    table = (d / "comparison.md").read_text()
    for row in ("parameters", "size on disk", "FLOPs / sample", "latency, batch 1", "throughput", "test accuracy"):
        assert row in table
    err = capsys.readouterr().err
    assert "| teacher |" in err or "| teacher |" in (d / "run.log").read_text()


def test_teacher_cache_is_reused_across_runs(write_recipe) -> None:
    raw = tiny_recipe()
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    # the teacher is retrained deterministically -> same fingerprint -> cache hit
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q", "--set", "output.dir=runs/second"]) == 0
    m = json.loads(Path("runs/second/metrics.json").read_text())
    assert m["teacher_outputs"]["cache"] == "hit"


def test_eval_reproduces_the_run(write_recipe) -> None:
    assert main(["run", str(write_recipe(tiny_recipe())), "--no-progress", "-q"]) == 0
    assert main(["eval", "runs/tiny", "-q"]) == 0
    ev = json.loads(Path("runs/tiny/eval.json").read_text())
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    for e in ev["models"]:
        assert e["test_acc"] == pytest.approx(by_role(m)[e["role"]]["test_acc"])


def test_run_on_a_generated_idx_folder_with_a_cnn_teacher(idx_dir: Path, write_recipe) -> None:
    raw = tiny_recipe(
        data={"source": "fashion_mnist", "path": str(idx_dir), "val_fraction": 0.2},
        teacher={"arch": "cnn", "params": {"channels": [4, 8], "hidden": 16, "dropout": 0.0},
                 "train": {"epochs": 2, "batch_size": 32}},
    )  # fmt: skip
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert m["data"]["source"] == "fashion_mnist" and m["data"]["train"] == 240


def test_existing_run_dir_is_not_overwritten(write_recipe, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_recipe(tiny_recipe(eval={"baseline": False}))
    assert main(["run", str(p), "--no-progress", "-q"]) == 0
    before = Path("runs/tiny/student.safetensors").read_bytes()
    assert main(["run", str(p), "--no-progress", "-q"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert Path("runs/tiny/student.safetensors").read_bytes() == before
    assert main(["run", str(p), "--no-progress", "-q", "--overwrite"]) == 0


def _metrics(path: str) -> dict:
    m = json.loads(Path(path).read_text())
    return {role: (v["val_acc"], v["test_acc"]) for role, v in by_role(m).items()}


def test_resume_after_interruption_gives_the_same_final_metrics() -> None:
    raw = tiny_recipe(train={"epochs": 4, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.01}})
    full = validate_recipe({**raw, "output": {"dir": "runs/full"}})
    run(full, progress=False, console=False)
    part = validate_recipe({**raw, "output": {"dir": "runs/part"}})
    with pytest.raises(KeyboardInterrupt):
        # stop in the middle of the distilled student's third epoch (20 steps/epoch)
        run(part, progress=False, console=False, _stop_after_steps={"student": 50})
    assert not Path("runs/part/student.safetensors").exists()
    ck = json.loads(Path("runs/part/checkpoints/student/latest.json").read_text())
    assert ck["checkpoints"][-1]["epoch"] == 2
    run(part, resume=True, progress=False, console=False)
    assert _metrics("runs/part/metrics.json") == _metrics("runs/full/metrics.json")
    a = Path("runs/part/student.safetensors").read_bytes()
    b = Path("runs/full/student.safetensors").read_bytes()
    assert a == b


def test_resume_with_a_changed_recipe_is_refused(write_recipe, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_recipe(tiny_recipe(eval={"baseline": False}))
    assert main(["run", str(p), "--no-progress", "-q"]) == 0
    assert main(["run", str(p), "--no-progress", "-q", "--resume", "--set", "train.epochs=5"]) == 2
    assert "changed: train.epochs" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_clear_error(write_recipe, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tiny_recipe(train={"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 1e12}})
    raw["eval"]["baseline"] = False
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert "the loss became" in err and "lower train.optimizer.lr" in err
    assert not Path("runs/tiny/student.safetensors").exists()


BAD_INPUTS = [
    ("unknown key", {"trian": {}}, "trian: unknown key"),
    ("wrong type", {"train": {"epochs": "ten"}}, "train.epochs"),
    ("missing data path", {"data": {"source": "fashion_mnist", "path": "/nonexistent/fmnist"}}, "Fashion-MNIST not found"),
    ("table without label column", {"data": {"source": "table", "path": "TABLE", "label_column": "nope"}}, "label column 'nope'"),
    ("empty table", {"data": {"source": "table", "path": "EMPTY", "label_column": "y"}}, "has no rows"),
]


@pytest.mark.parametrize("name,patch,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_and_writes_nothing(name, patch, message, write_recipe, tmp_path: Path, capsys) -> None:
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n2,2,1\n")
    (tmp_path / "e.csv").write_text("a,b,y\n")
    raw = tiny_recipe()
    for section, value in patch.items():
        if isinstance(value, dict):
            value = {k: (str(tmp_path / "t.csv") if v == "TABLE" else str(tmp_path / "e.csv") if v == "EMPTY" else v)
                     for k, v in value.items()}  # fmt: skip
            raw[section] = {**raw.get(section, {}), **value} if section != "data" else value
        else:
            raw[section] = value
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_class_count_mismatch_between_teacher_checkpoint_and_data(write_recipe, tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    from distill.models import mlp

    teacher = mlp((1, 8, 8), 3, hidden=[32])  # 3 classes; digits has 10
    save_file(teacher.state_dict(), str(tmp_path / "t3.safetensors"))
    raw = tiny_recipe(teacher={"arch": "mlp", "params": {"hidden": [32]}, "checkpoint": str(tmp_path / "t3.safetensors")})
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_module_factory_teacher_with_checkpoint(write_recipe, tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import save_file

    pkg = tmp_path / "myteachers.py"
    pkg.write_text(
        "import torch\n"
        "def wide(num_classes, width=64):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(),"
        " torch.nn.Linear(width, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("myteachers")
    torch.manual_seed(0)
    save_file(mod.wide(10, width=48).state_dict(), str(tmp_path / "wide.safetensors"))
    raw = tiny_recipe()
    raw["teacher"] = {"factory": "myteachers:wide", "params": {"width": 48}, "checkpoint": str(tmp_path / "wide.safetensors")}
    raw["eval"]["baseline"] = False
    # an untrained checkpoint scores at chance: refused with the numbers, unless the recipe says it is intended
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 2
    raw["eval"]["allow_chance_teacher"] = True
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q", "--overwrite"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert m["teacher"]["source"] == "checkpoint"


def test_teacher_output_width_mismatch_with_data(write_recipe, tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "five.py").write_text(
        "import torch\ndef five():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = tiny_recipe()
    raw["teacher"] = {"factory": "five:five", "train": {"epochs": 1}}
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    assert "outputs 5 classes but the data has 10" in capsys.readouterr().err


def test_augmented_run_uses_an_online_teacher(write_recipe) -> None:
    raw = tiny_recipe()
    raw["train"]["augment"] = True
    raw["teacher"]["train"]["augment"] = True
    raw["eval"]["baseline"] = False
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert "online" in m["teacher_outputs"]["cache"]
    assert "runs online" in Path("runs/tiny/run.log").read_text()


def test_console_script_runs_as_a_subprocess(write_recipe) -> None:
    p = write_recipe(tiny_recipe(eval={"baseline": False}))
    out = subprocess.run(
        [sys.executable, "-m", "distill", "run", str(p), "--no-progress", "-q"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "| test accuracy |" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "distill", "run", "missing.yaml"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "file not found" in bad.stderr


def test_teacher_checkpoint_problems(write_recipe, tmp_path: Path, capsys) -> None:
    (tmp_path / "t.pt").write_bytes(b"\x80\x04 pickled")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    cases = {
        str(tmp_path / "t.pt"): "not a .safetensors file",
        str(tmp_path / "bad.safetensors"): "corrupt or truncated",
        str(tmp_path / "absent.safetensors"): "checkpoint not found",
    }
    for ckpt, message in cases.items():
        raw = tiny_recipe()
        raw["teacher"]["checkpoint"] = ckpt
        assert main(["run", str(write_recipe(raw)), "--no-progress", "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_teacher_factory_that_cannot_be_imported(write_recipe, capsys) -> None:
    raw = tiny_recipe()
    raw["teacher"] = {"factory": "no_such_package.models:big", "train": {"epochs": 1}}
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    assert "cannot import module 'no_such_package.models'" in capsys.readouterr().err


def test_eval_of_a_missing_or_unfinished_run_dir(capsys) -> None:
    assert main(["eval", "runs/none"]) == 2
    assert "run directory not found" in capsys.readouterr().err
    Path("runs/half").mkdir(parents=True)
    Path("runs/half/recipe.yaml").write_text(yaml.safe_dump(tiny_recipe()))
    assert main(["eval", "runs/half"]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_baseline_has_its_own_training_settings(write_recipe) -> None:
    raw = tiny_recipe()
    raw["eval"]["baseline_train"] = {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01}, "seed": 5}
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert len(m["history"]["baseline"]) == 1 and len(m["history"]["student"]) == 2


def test_omitted_class_transfer_with_bias_correction(write_recipe) -> None:
    raw = tiny_recipe(transfer={"exclude_classes": [3]})
    raw["train"]["epochs"] = 3
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    t = m["transfer"]
    assert t["exclude_classes"] == [3] and t["train_samples"] < m["data"]["train"]
    for role in ("baseline", "student"):
        r = t["bias_correction"][role]
        assert 0 <= r["test_acc_on_classes_before"] <= r["test_acc_on_classes_after"] + 1e-9 or r["bias"] == 0
    assert "never-seen classes [3]" in Path("runs/tiny/comparison.md").read_text()


def test_scarce_labels_transfer_set(write_recipe) -> None:
    raw = tiny_recipe(transfer={"labeled_fraction": 0.1, "seed": 1})
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    t = m["transfer"]
    assert t["labeled_samples"] == round(0.1 * t["train_samples"])
    assert "keep their hard label" in Path("runs/tiny/run.log").read_text()


def test_a_run_does_not_depend_on_what_ran_before_it_in_the_process() -> None:
    raw = tiny_recipe()
    raw["teacher"]["params"] = {"hidden": [32], "dropout": 0.3}
    raw["student"]["params"] = {"hidden": [8], "dropout": 0.2}
    first = run(validate_recipe({**raw, "output": {"dir": "runs/a", "report": False}}), progress=False, console=False)
    torch.rand(1000)  # move the global generator
    second = run(validate_recipe({**raw, "output": {"dir": "runs/b", "report": False}}), progress=False, console=False)
    assert first.metrics["teacher"]["fingerprint"] == second.metrics["teacher"]["fingerprint"]
    assert Path("runs/a/student.safetensors").read_bytes() == Path("runs/b/student.safetensors").read_bytes()
