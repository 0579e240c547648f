"""Quiet by default: a warning raised on every batch is logged once, on the console and in run.log."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.cli import main
from tests.conftest import tiny_recipe


@pytest.mark.filterwarnings("always")  # as after a library's catch_warnings resets the once-per-line registry
def test_a_warning_on_every_forward_is_logged_once(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    raw = tiny_recipe(student={"factory": "tests.factories:noisy_mlp", "params": {"hidden": 8}},
                      eval={"baseline": False, "latency_runs": 3, "warmup_runs": 1, "throughput_runs": 1,
                            "throughput_batch": 16})  # fmt: skip
    Path("r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", "r.yaml", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("a library warning on every forward") == 1
    assert "shown once" in err
    assert Path("runs/tiny/run.log").read_text().count("a library warning on every forward") == 1
