"""Every class of the error tree through the real CLI: exit code 2, the first line of the message, no
traceback; and with --debug the same input raises that class (so the message comes from the class the tree
says). Each case makes its bad input from a tiny real run or recipe."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from distill import errors
from distill.cli import main
from tests.conftest import tiny_recipe


def _write(raw: dict, name: str = "r.yaml") -> str:
    Path(name).write_text(yaml.safe_dump(raw))
    return name


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny classification run (with its ONNX/torch export section), made once."""
    import distill

    root = tmp_path_factory.mktemp("errors")
    raw = tiny_recipe(eval={"baseline": False, "latency_runs": 3, "warmup_runs": 1, "throughput_runs": 1,
                            "throughput_batch": 16},
                      output={"report": False, "dir": str(root / "run"), "cache_dir": str(root / "cache")})  # fmt: skip
    distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
    return root / "run"


def _copy(run: Path) -> str:
    shutil.copytree(run, "run")
    return "run"


def recipe_error(_: Path) -> list[str]:
    return ["run", _write(tiny_recipe(train={"epochs": -1}))]


def data_error(_: Path) -> list[str]:
    return ["run", _write(tiny_recipe(data={"source": "table", "path": "missing.csv", "label_column": "y"}))]


def teacher_error(_: Path) -> list[str]:
    from safetensors.torch import save_file

    from distill.models import build

    state = {k: v.clone() for k, v in build("mlp", (1, 8, 8), 10, {"hidden": [32]}).state_dict().items()}
    next(iter(state.values())).fill_(float("nan"))
    save_file(state, "t.safetensors")
    return ["run", _write(tiny_recipe(teacher={"arch": "mlp", "params": {"hidden": [32]}, "checkpoint": "t.safetensors"}))]


def preflight_error(_: Path) -> list[str]:
    """Two independent problems (a teacher checkpoint with NaN weights, a student factory that is not there):
    both reported at once."""
    teacher_error(_)
    raw = yaml.safe_load(Path("r.yaml").read_text())
    raw["student"] = {"factory": "tests.factories:nowhere"}
    return ["run", _write(raw)]


def model_error(_: Path) -> list[str]:
    return ["run", _write(tiny_recipe(student={"factory": "tests.factories:nowhere"}))]


def checkpoint_error(run: Path) -> list[str]:
    target = Path(_copy(run))
    (target / "student.safetensors").unlink()  # so that --resume trains the student from its checkpoints
    (target / "checkpoints" / "student" / "latest.json").write_text("{not json")
    raw = yaml.safe_load((target / "recipe.yaml").read_text())
    raw["output"]["dir"] = str(target)
    return ["run", _write(raw), "--resume", "--no-progress"]


def training_error(_: Path) -> list[str]:
    return ["run", _write(tiny_recipe(train={"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 1e30}})),
            "--no-progress"]  # fmt: skip


def run_dir_error(run: Path) -> list[str]:
    raw = yaml.safe_load((run / "recipe.yaml").read_text())
    return ["run", _write(raw)]


def storage_error(run: Path) -> list[str]:
    target = _copy(run)
    Path(target, "export").write_text("a file where export/ goes")
    return ["export", target, "--format", "torch"]


def export_error(run: Path) -> list[str]:
    return ["export", _copy(run), "--format", "hf"]


def unsupported_error(_: Path) -> list[str]:
    raw = tiny_recipe(student={"factory": "tests.factories:small_mlp", "params": {"hidden": 8}},
                      output={"report": False, "dir": "factory-run"})  # fmt: skip
    assert main(["run", _write(raw, "f.yaml"), "--no-progress", "-q"]) == 0
    return ["compress", "factory-run", "--set", "compress.prune.kind=structured"]


def cache_error(_: Path) -> list[str]:
    from tests.test_task_matrix import lm_raw

    raw = lm_raw(Path(".").resolve())
    raw["distill"]["mode"] = "offline"
    raw["output"] = {"dir": "lm-a", "cache_dir": "cache", "report": False}
    assert main(["run", _write(raw, "a.yaml"), "--no-progress", "-q"]) == 0
    # a cache folder whose index says it was built with other settings (another version wrote it, or a hand
    # edit): it is never used, and never silently replaced
    index = next(Path("cache").rglob("index.json"))
    meta = json.loads(index.read_text())
    meta["k"] = int(meta["k"]) + 1
    index.write_text(json.dumps(meta))
    raw["output"]["dir"] = "lm-b"  # a second run looks for the same cache
    return ["run", _write(raw), "--no-progress"]


CASES: list[tuple[Callable[[Path], list[str]], type[errors.DistillError], str]] = [
    (recipe_error, errors.RecipeError, "error: 1 problem in the recipe in r.yaml:"),
    (data_error, errors.DataError, "error: table file not found: missing.csv. Fix: check data.path."),
    (teacher_error, errors.TeacherError, "error: the teacher from teacher.checkpoint t.safetensors gives NaN"),
    (preflight_error, errors.PreflightError, "error: 2 problems found before anything was written"),
    (model_error, errors.ModelError, "error: cannot build the student (student.factory 'tests.factories:nowhere'"),
    (cache_error, errors.CacheError, "error: the folder cache/lm-"),
    (checkpoint_error, errors.CheckpointError, "error: run/checkpoints/student/latest.json is unreadable"),
    (training_error, errors.TrainingError, "error: baseline: the loss became nan"),
    (run_dir_error, errors.RunDirError, "error: the run directory"),
    (storage_error, errors.StorageError, "error: cannot write"),
    (export_error, errors.ExportError, "error: format 'hf' writes Hugging Face models with save_pretrained"),
    (unsupported_error, errors.UnsupportedError, "error: compress.prune.kind structured rebuilds the student"),
]


@pytest.mark.parametrize("make, cls, first", CASES, ids=[c[1].__name__ for c in CASES])
def test_every_error_class_exits_2_with_its_message(finished: Path, make: Callable[[Path], list[str]],
                                                    cls: type[errors.DistillError], first: str,
                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    argv = make(finished)
    capsys.readouterr()
    before = sorted(str(p) for p in Path(".").rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = next((x for x in err.splitlines() if x.startswith("error: ")), "")
    assert line.startswith(first) and err.count("error: ") == 1, err
    assert "Traceback" not in err and "Fix" in err[err.index("error: "):], err
    again = argv + (["--overwrite"] if argv[0] == "run" and "--resume" not in argv and cls is not errors.RunDirError else [])
    with pytest.raises(cls):  # the same input, with the traceback: the class the tree names
        main(["--debug", *again])
    if cls in (errors.RecipeError, errors.DataError, errors.TeacherError, errors.ModelError, errors.PreflightError):
        # found by the validation or the preflight: no run directory was made
        assert sorted(str(p) for p in Path(".").rglob("*")) == before
        assert not Path("runs").exists()
    if cls is errors.TrainingError:
        status = json.loads(Path("runs/tiny/status.json").read_text())
        assert status["state"] == "failed" and "the loss became" in status["reason"]
