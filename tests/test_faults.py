"""A real `distill run` killed mid-epoch (SIGKILL, SIGINT) resumes to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distill.core.results import by_role

from .conftest import tiny_recipe


def _recipe() -> dict:
    # batch 8 on ~1,300 samples: ~160 steps an epoch, so a kill lands mid-epoch
    raw = tiny_recipe(train={"epochs": 12, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 0.003}})
    raw["eval"]["baseline"] = False
    return raw


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler: give the child the default disposition, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(recipe: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "distill", "run", str(recipe), "--no-progress", "-q", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)  # also closes the pipes
    return proc.returncode, err


def _wait_for_epoch(run_dir: Path, epoch: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    index = run_dir / "checkpoints" / "student" / "latest.json"
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {_finish(proc)[1]}")
        try:
            if json.loads(index.read_text())["checkpoints"][-1]["epoch"] >= epoch:
                return
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    pytest.fail("no checkpoint appeared in time")


def _final(run_dir: str) -> tuple:
    m = json.loads(Path(run_dir, "metrics.json").read_text())
    return by_role(m)["student"]["test_acc"], [round(h["loss"], 6) for h in m["history"]["student"]]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_resumes_to_the_same_final_metrics(sig: signal.Signals, write_recipe) -> None:
    p = write_recipe(_recipe())
    code, err = _finish(_start(p, "--set", "output.dir=runs/full"))
    assert code == 0, err

    proc = _start(p, "--set", "output.dir=runs/killed")
    _wait_for_epoch(Path("runs/killed"), 3, proc)
    time.sleep(0.05)  # into the next epoch
    proc.send_signal(sig)
    code, err = _finish(proc, timeout=60)
    assert code != 0
    if sig == signal.SIGINT:
        assert code == 130 and "--resume" in err
    assert not Path("runs/killed/student.safetensors").exists()
    assert not list(Path("runs/killed").rglob("*.tmp")) or sig == signal.SIGKILL  # SIGKILL may leave a temp file
    code, err = _finish(_start(p, "--set", "output.dir=runs/killed", "--resume"))
    assert code == 0, err
    assert "resumed after epoch" in Path("runs/killed/run.log").read_text()
    assert _final("runs/killed") == _final("runs/full")
    assert Path("runs/killed/student.safetensors").read_bytes() == Path("runs/full/student.safetensors").read_bytes()


def _limit_file_size() -> None:  # runs in the child before exec
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def test_out_of_disk_while_writing_the_cache_is_a_clear_error(write_recipe) -> None:
    """A file-size limit makes the 52 kB teacher-output cache unwritable, as a full disk would."""
    from safetensors.torch import save_file

    from distill.models import mlp

    save_file(mlp((1, 8, 8), 10, hidden=[32]).state_dict(), "teacher.safetensors")
    raw = tiny_recipe()
    raw["teacher"]["checkpoint"] = "teacher.safetensors"
    raw["eval"]["baseline"] = False
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "distill", "run", str(write_recipe(raw)), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env, preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot write" in out.stderr and "File too large" in out.stderr and "Traceback" not in out.stderr
    assert not list(Path(".distill-cache").glob("*")), "no partial cache entry may remain"
    assert not list(Path("runs").rglob("*.tmp"))
