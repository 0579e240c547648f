"""Multi-process (DDP over gloo, through torchrun) runs match single-process runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distill.core.results import by_role

from .conftest import tiny_recipe


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(write_recipe) -> None:
    # 1,280 training samples: global batch 64 = 2 processes x 32, the same batches in the same order
    raw = tiny_recipe(data={"source": "digits", "seed": 0, "train_limit": 1280})
    p = write_recipe(raw)
    one = _cli("run", str(p), "--no-progress", "-q", "--set", "output.dir=runs/one")
    assert one.returncode == 0, one.stderr
    two = _cli("run", str(p), "--no-progress", "-q", "--nproc", "2", "--set", "output.dir=runs/two",
               "--set", "train.batch_size=32", "--set", "teacher.train.batch_size=32")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads(Path("runs/one/metrics.json").read_text())
    b = json.loads(Path("runs/two/metrics.json").read_text())
    assert "2 processes" in Path("runs/two/run.log").read_text()
    for role in ("teacher", "baseline", "student"):
        assert by_role(b)[role]["test_acc"] == pytest.approx(by_role(a)[role]["test_acc"], abs=1e-6)
        for ha, hb in zip(a["history"][role], b["history"][role]):
            # summed in another order across processes: equal within float tolerance, not bit for bit
            assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-5)
    assert b["teacher_outputs"]["processes"] == 2


@pytest.mark.slow
def test_user_error_in_a_worker_exits_2(write_recipe) -> None:
    raw = tiny_recipe(data={"source": "fashion_mnist", "path": "/nonexistent/fmnist"})
    out = _cli("run", str(write_recipe(raw)), "--no-progress", "--nproc", "2")
    assert out.returncode == 2
    assert "Fashion-MNIST not found" in out.stderr
