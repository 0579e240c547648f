"""Exported students run on raw inputs: the standardisation is in the ONNX graph, the feature order and class
names are in its metadata and classifier.json, and classifier.py (onnxruntime + numpy) returns class names;
fed raw test rows, it scores what the student scored in the run. Rows in another column order are refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("onnxruntime")

import distill  # noqa: E402
from distill.core.results import by_role  # noqa: E402
from distill.tasks.classification.data import build_data  # noqa: E402
from distill.export.raw_inputs import read_metadata  # noqa: E402
from tests.conftest import tiny_recipe  # noqa: E402


def _load_runtime(folder: Path):
    spec = importlib.util.spec_from_file_location("shipped_classifier", folder / "classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.Classifier(folder)


def _run(tmp_path: Path, data: dict) -> Path:
    raw = tiny_recipe(data=data, eval={"baseline": False, "latency_runs": 3, "warmup_runs": 1, "throughput_runs": 1,
                                       "throughput_batch": 16},
                      train={"epochs": 4, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01}},
                      output={"report": False, "dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    raw["data"] = data
    result = distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
    distill.export(result.run_dir, ["onnx"])
    return Path(result.run_dir)


def test_a_table_student_ships_with_its_feature_order_scaling_and_class_names(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    ds = load_wine(as_frame=True)
    df = ds.frame.drop(columns="target")
    df["label"] = [ds.target_names[i] for i in ds.target]
    df.to_csv(tmp_path / "wine.csv", index=False)
    data_cfg = {"source": "table", "path": str(tmp_path / "wine.csv"), "label_column": "label"}
    run = _run(tmp_path, data_cfg)
    student_acc = by_role(json.loads((run / "metrics.json").read_text()))["student"]["test_acc"]
    export = run / "export"
    meta = read_metadata(export / "student.onnx")
    features = [c for c in df.columns if c != "label"]
    assert meta["inputs"] == "raw" and meta["feature_names"] == features and meta["classes"] == list(ds.target_names)
    assert json.loads((export / "classifier.json").read_text())["feature_names"] == features
    assert "how to call it" in (export / "README.md").read_text()

    model = _load_runtime(export)
    from distill.tasks.classification.recipe import DataConfig

    test_rows = [int(i.split("-")[1]) for i in build_data(DataConfig(**data_cfg)).test.ids]
    rows = df.iloc[test_rows]
    labels = model.predict(rows[features])  # raw values, as in the CSV
    assert np.mean(np.array(labels) == rows["label"].to_numpy()) == pytest.approx(student_acc, abs=1e-6)
    assert student_acc > 0.7
    with pytest.raises(ValueError, match="in this order") as err:
        model.predict(rows[list(reversed(features))])
    assert "alcohol" in str(err.value) and "the same names in another order" in str(err.value)
    with pytest.raises(ValueError, match="missing"):
        model.predict(rows[features[1:]])
    # one row as a pandas Series is read by its names, not by position
    one = rows[features].iloc[0]
    assert model.predict(one) == model.predict(rows[features].iloc[:1])
    with pytest.raises(ValueError, match="the same names in another order"):
        model.predict(one[list(reversed(features))])
    # the int8 file ships the same way
    q8 = _load_runtime(export).__class__(export, file="student.int8.onnx")
    assert np.mean(np.array(q8.predict(rows[features])) == rows["label"].to_numpy()) > 0.7


def test_an_image_student_takes_pixels_as_stored(tmp_path: Path) -> None:
    run = _run(tmp_path, {"source": "digits", "seed": 0})
    student_acc = by_role(json.loads((run / "metrics.json").read_text()))["student"]["test_acc"]
    from distill.tasks.classification.recipe import DataConfig

    data = build_data(DataConfig(source="digits", seed=0))
    pixels = data.to_raw(data.test.x).numpy()  # 0..16, as scikit-learn stores the digits
    assert pixels.max() > 15 and pixels.min() >= 0
    model = _load_runtime(run / "export")
    got = np.array(model.predict(pixels[:, 0]))  # (N, 8, 8): one channel, as images usually come
    want = np.array(data.class_names)[data.test.y.numpy()]
    assert np.mean(got == want) == pytest.approx(student_acc, abs=1e-6)


def test_api_functions_survive_imports_of_their_namesake_packages() -> None:
    """`import distill.export.onnx` (distill's own commands do it) must not turn distill.export(...) into a
    module: each of export, compress, bench and report is a package and the API function at once."""
    import importlib

    for name, sub in (("export", "onnx"), ("compress", "prune"), ("bench", "measure"), ("report", "plots")):
        importlib.import_module(f"distill.{name}.{sub}")
        assert callable(getattr(distill, name)), name
        assert hasattr(getattr(distill, name), sub)  # and the package's modules stay reachable
    with pytest.raises(distill.RunDirError):
        distill.export("/no/such/run")


def test_the_model_card_says_how_to_call_the_exported_files(tmp_path: Path) -> None:
    run = _run(tmp_path, {"source": "digits", "seed": 0})
    distill.report(run)
    card = (run / "README.md").read_text()
    assert "## Use" in card and "export/student.onnx` takes raw samples" in card and "Classifier(" in card


def test_the_version_is_said_once_and_pyproject_agrees() -> None:
    import tomllib
    from pathlib import Path

    from distill.version import __version__

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert distill.__version__ == __version__ == pyproject["project"]["version"]


def test_importing_distill_and_its_cli_loads_no_torch() -> None:
    """`import distill` and `distill --help` stay fast: torch (2 s) loads only when a command needs it."""
    import subprocess
    import sys

    code = "import sys, distill, distill.cli, distill.api; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
