"""Shared fixtures: tiny generated data, tiny recipes, an isolated working folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own folder, so runs/ and the cache never leak between tests."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c = a bright square at one of 10 positions, plus noise: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    cell = size // 4
    for i, c in enumerate(y):
        r, col = divmod(int(c), 4)
        x[i, r * cell : (r + 1) * cell, col * cell : (col + 1) * cell] = 200
    return x, y


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A tiny Fashion-MNIST-shaped folder of IDX .gz files (16x16 images)."""
    from distill.data.idx import write_idx

    folder = tmp_path / "fmnist"
    folder.mkdir()
    tx, ty = make_images(300, 16, 0)
    vx, vy = make_images(100, 16, 1)
    write_idx(folder / "train-images-idx3-ubyte.gz", tx)
    write_idx(folder / "train-labels-idx1-ubyte.gz", ty)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", vx)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", vy)
    return folder


def tiny_recipe(**sections: Any) -> dict[str, Any]:
    """A recipe that trains in seconds: digits, width-8 models, 2 epochs, few timing runs."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"source": "digits", "seed": 0},
        "teacher": {
            "arch": "mlp",
            "params": {"hidden": [32]},
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        },
        "student": {"arch": "mlp", "params": {"hidden": [8]}},
        "distill": [{"loss": "kd", "weight": 0.7, "temperature": 2.0}, {"loss": "ce", "weight": 0.3}],
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.01}},
        "eval": {"baseline": True, "latency_runs": 5, "warmup_runs": 1, "throughput_runs": 2, "throughput_batch": 32},
        # the report (matplotlib, ~2 s) has its own tests in test_report.py
        "output": {"report": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture
def write_recipe(tmp_path: Path):
    import yaml

    def _write(raw: dict[str, Any], name: str = "recipe.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(raw, sort_keys=False))
        return p

    return _write
