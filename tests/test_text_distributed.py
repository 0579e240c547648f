"""`distill run TEXT_RECIPE --nproc 2` (torchrun, gloo) matches the one-process run: each process trains its
share of every global batch (the teacher's fine-tuning and the students'), every term normalised by the global
batch, gradients summed (dense and the static tables' sparse ones); the main process computes the teacher's
logits once, the other reads them from the run, and only the main one measures and writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.embed_helpers import make_tiny_sentence_model
from tests.text_helpers import labelled_rows, write_csv


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distill", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "texts.csv", labelled_rows(90))
    (tmp_path / "transfer.txt").write_text("\n".join(t for t, _ in labelled_rows(40, seed=2)))
    make_tiny_sentence_model(tmp_path / "encoder", hidden=16, dropout=0.0)  # no dropout: the runs agree to the digit
    raw = {
        "task": "text_classification", "name": "tc",
        "data": {"source": "texts.csv", "max_length": 32, "transfer": "transfer.txt"},
        "teacher": {"kind": "finetune", "path": str(tmp_path / "encoder"), "epochs": 2, "lr": 5e-3, "batch_size": 15},
        "students": [
            {"name": "l1", "kind": "layers", "layers": [1], "train": {"epochs": 2, "batch_size": 15, "hidden": 0.5}},
            {"name": "static", "kind": "static", "dim": 8, "ngram_buckets": 32,
             "train": {"epochs": 2, "batch_size": 15, "lr": 1e-2}},
        ],
        # 15 texts a step: shares of 8 and 7; the static student also trains on the transfer set (KD only)
        "eval": {"speed_texts": 8, "latency_texts": 2, "allow_chance_teacher": True, "baseline": False},
        "export": {"onnx": False},
        "output": {"report": False, "cache_dir": str(tmp_path / "cache")},
    }  # fmt: skip
    Path("r.yaml").write_text(yaml.safe_dump(raw))
    one = _cli("run", "r.yaml", "--no-progress", "-q", "--set", "output.dir=runs/one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli("run", "r.yaml", "--no-progress", "-q", "--nproc", "2", "--set", "output.dir=runs/two")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads(Path(f"runs/{n}/metrics.json").read_text()) for n in ("one", "two"))
    assert (a["processes"], b["processes"]) == (1, 2)
    assert json.loads(Path("runs/two/status.json").read_text())["state"] == "done"
    log = Path("runs/two/run.log").read_text()
    assert "2 processes" in log and log.count("student l1 (layers)") == 1  # one process tells the story
    for name in ("teacher/train.json", "students/l1.train.json", "students/static.train.json"):
        ha, hb = (json.loads(Path(f"runs/{n}/{name}").read_text())["history"] for n in ("one", "two"))
        assert len(ha) == len(hb) > 0
        for ea, eb in zip(ha, hb, strict=True):
            assert ea.keys() == eb.keys()
            for k in ea:
                assert eb[k] == pytest.approx(ea[k], rel=1e-5, abs=2e-6), (name, k)  # histories are rounded to 1e-6
    assert json.loads(Path("runs/one/students/static.train.json").read_text())["transfer_texts"] > 0
    from safetensors.torch import load_file

    for folder in ("teacher", "students/l1"):
        wa, wb = (load_file(f"runs/{n}/{folder}/model.safetensors") for n in ("one", "two"))
        # weights within 1e-3: Adam divides by sqrt(v), so rounding in tiny gradients moves their steps
        assert wa.keys() == wb.keys() and max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-3, folder
    sa, sb = (torch.load(f"runs/{n}/students/static/model.pt", weights_only=True) for n in ("one", "two"))
    assert max(float((sa[k] - sb[k]).abs().max()) for k in sa) < 1e-3  # the sparse tables, summed across ranks
    ra, rb = ({m["name"]: m for m in x["models"]} for x in (a, b))
    for name in ra:
        assert rb[name]["accuracy"] == pytest.approx(ra[name]["accuracy"], abs=1e-9), name
