"""The non-neural baseline of a table run: gradient-boosted trees fitted on the students' training rows,
measured beside the students (accuracy, latency, size on disk), saved with the run, and again in `distill eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

import distill  # noqa: E402
from distill.core.results import by_role  # noqa: E402
from tests.conftest import tiny_recipe  # noqa: E402


def _wine(tmp_path: Path) -> dict:
    from sklearn.datasets import load_wine

    ds = load_wine(as_frame=True)
    df = ds.frame.rename(columns={"target": "label"})
    df.to_csv(tmp_path / "wine.csv", index=False)
    return {"source": "table", "path": str(tmp_path / "wine.csv"), "label_column": "label"}


def _recipe(tmp_path: Path, name: str, **eval_fields) -> dict:
    raw = tiny_recipe(eval={"baseline": False, "latency_runs": 3, "warmup_runs": 1, "throughput_runs": 1,
                            "throughput_batch": 16, **eval_fields},
                      train={"epochs": 3, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01}},
                      output={"report": False, "dir": str(tmp_path / name), "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    raw["data"] = _wine(tmp_path)
    return raw


def test_a_table_run_measures_gradient_boosted_trees_beside_the_students(tmp_path: Path) -> None:
    result = distill.run(distill.load_recipe(raw=_recipe(tmp_path, "run")), progress=False, console=False)
    run = Path(result.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    trees = by_role(metrics)["trees"]
    assert trees["label"] == "gradient-boosted trees"
    assert trees["test_acc"] > 0.8  # wine is easy for trees: a fitted model, not a stub
    assert trees["cost"]["size_bytes"] == (run / "baseline_trees.pkl").stat().st_size > 0
    assert trees["cost"]["latency_ms_p50"] > 0
    summary = metrics["summary"]
    assert summary["gain_over_trees"] == pytest.approx(by_role(metrics)["student"]["test_acc"] - trees["test_acc"])
    assert "gradient-boosted trees" in (run / "comparison.md").read_text()
    # distill eval measures the saved trees again (not refitted: the same predictions)
    again = distill.evaluate(run, console=False)
    assert by_role(again.table)["trees"]["test_acc"] == trees["test_acc"]


def test_the_trees_baseline_is_off_when_the_recipe_says_so(tmp_path: Path) -> None:
    raw = _recipe(tmp_path, "off", trees_baseline=False)
    result = distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
    assert "trees" not in {m["role"] for m in json.loads((Path(result.run_dir) / "metrics.json").read_text())["models"]}
    assert not (Path(result.run_dir) / "baseline_trees.pkl").exists()
