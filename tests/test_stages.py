"""compress → export → bench from a finished run directory, through the CLI, and as `distill run` stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distill.cli import main

from .conftest import tiny_recipe


def _cnn_run(idx_dir: Path, write_recipe, **extra) -> Path:
    raw = tiny_recipe(
        data={"source": "fashion_mnist", "path": str(idx_dir), "val_fraction": 0.2},
        student={"arch": "cnn", "params": {"channels": [4, 8], "hidden": 16, "dropout": 0.0}},
    )
    raw["teacher"] = {"arch": "cnn", "params": {"channels": [8, 16], "hidden": 32, "dropout": 0.0},
                      "train": {"epochs": 2, "batch_size": 32}}  # fmt: skip
    raw.update(extra)
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    return Path("runs/tiny")


def test_compress_export_bench_from_the_cli(idx_dir: Path, write_recipe, capsys) -> None:
    run_dir = _cnn_run(idx_dir, write_recipe)
    assert main(["compress", str(run_dir), "--no-progress", "--set", "compress.prune.kind=structured",
                 "--set", "compress.prune.recovery_epochs=1", "--set", "compress.quantize.kind=static"]) == 0  # fmt: skip
    rep = json.loads((run_dir / "compressed" / "compress.json").read_text())
    assert rep["stages"]["pruned"]["parameters"] < rep["stages"]["distilled"]["parameters"]
    assert (run_dir / "compressed" / "int8" / "config.json").exists()
    assert main(["export", str(run_dir), "--format", "onnx", "--format", "torch"]) == 0
    ex = json.loads((run_dir / "export" / "export.json").read_text())
    assert ex["stage"] == "pruned" and ex["parity"]["onnx"]["passed"]
    assert Path(ex["files"]["onnx_int8"]).exists() and Path(ex["files"]["torch"]).exists()
    assert main(["bench", str(run_dir), "--no-memory"]) == 0
    out = capsys.readouterr().out
    for stage in ("teacher", "distilled", "pruned", "int8", "ONNX fp32", "ONNX int8"):
        assert f"| {stage} |" in out, stage
    b = json.loads((run_dir / "bench.json").read_text())
    assert all(s["test_acc"] > 0 for s in b["stages"])


def test_hf_format_of_a_non_hf_student_is_a_clear_error(idx_dir: Path, write_recipe, capsys) -> None:
    run_dir = _cnn_run(idx_dir, write_recipe)
    assert main(["export", str(run_dir), "--format", "hf"]) == 2
    assert "Hugging Face models" in capsys.readouterr().err


def test_compress_without_a_compress_section_says_how(idx_dir: Path, write_recipe, capsys) -> None:
    run_dir = _cnn_run(idx_dir, write_recipe)
    assert main(["compress", str(run_dir)]) == 2
    assert "--set compress.prune.kind=structured" in capsys.readouterr().err


def test_run_with_compress_and_export_sections_runs_them_as_stages(write_recipe) -> None:
    raw = tiny_recipe(
        compress={"prune": {"kind": "magnitude", "amount": 0.5, "recovery_epochs": 1}, "quantize": {"kind": "dynamic"}},
        export={"formats": ["onnx"], "parity": {"int8_min_argmax_agreement": 0.5}},
    )
    raw["eval"]["baseline"] = False
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert m["compress"]["stages"]["pruned"]["sparsity"] >= 0.49
    assert m["export"]["parity"]["onnx"]["passed"]
    assert yaml.safe_load(Path("runs/tiny/recipe.yaml").read_text())["compress"]["quantize"]["kind"] == "dynamic"


@pytest.mark.slow
def test_bench_measures_peak_memory(idx_dir: Path, write_recipe) -> None:
    run_dir = _cnn_run(idx_dir, write_recipe)
    assert main(["bench", str(run_dir)]) == 0
    b = json.loads((run_dir / "bench.json").read_text())
    assert all(s["peak_memory_mib"] is not None and s["peak_memory_mib"] >= 0 for s in b["stages"])
