"""distill.core.distributed: two ranks' shares of a global batch give one process's gradient (dense and sparse,
a per-sentence term and a whole-batch term), through torchrun and gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "distributed" / "gradients.py"


def test_two_ranks_give_the_gradient_of_one_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", str(SCRIPT), str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    ref = torch.load(tmp_path / "one.0.pt")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"two.{rank}.pt")
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        for key in ("head.weight", "head.bias", "table"):
            torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-7)
    assert float(ref["table"].abs().sum()) > 0  # the sparse table did get a gradient
