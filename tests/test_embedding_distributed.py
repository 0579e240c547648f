"""`distill run EMBEDDING_RECIPE --nproc 2` (torchrun, gloo) matches the one-process run: each process trains
its share of every global batch, whole-batch terms see the gathered embeddings, gradients are summed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.embed_helpers import make_tiny_sentence_model

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "small", "red", "blue", "house"]


def _cli(*args: str, timeout: int = 420) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distill", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    r = random.Random(0)
    Path("corpus.txt").write_text("\n".join(" ".join(r.choice(WORDS) for _ in range(r.randint(3, 12)))
                                            for _ in range(150)) + "\n")  # fmt: skip
    make_tiny_sentence_model(tmp_path / "teacher", dropout=0.0)  # no dropout: the runs can agree to the digit
    raw = {
        "task": "embedding", "name": "emb",
        "data": {"corpus": "corpus.txt", "held_out": 40},
        "teacher": {"path": str(tmp_path / "teacher")},
        "students": [
            {"name": "l1", "kind": "layers", "layers": [0]},
            {"name": "narrow", "kind": "narrow", "num_layers": 1, "hidden": 8, "heads": 2},
            {"name": "static", "kind": "static", "dim": 8, "train": {"epochs": 2, "batch_size": 15, "relational": 0.5}},
        ],
        # 15 sentences per step: shares of 8 and 7; relational and hidden-state terms besides the cosine
        "train": {"epochs": 2, "batch_size": 15, "relational": 0.5, "hidden": 0.5},
        "eval": {"pairs": 100, "queries": 8, "speed_sentences": 16, "latency_sentences": 2},
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
    for name in ("l1", "narrow"):
        la, lb = (json.loads(Path(f"runs/{n}/students/{name}.train.json").read_text()) for n in ("one", "two"))
        for ha, hb in zip(la["history"], lb["history"], strict=True):
            assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-5, abs=1e-7)
        wa = load_file(f"runs/one/students/{name}/model.safetensors")
        wb = load_file(f"runs/two/students/{name}/model.safetensors")
        assert wa.keys() == wb.keys() and max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 5e-5
    narrow = json.loads(Path("runs/one/students/narrow.train.json").read_text())["history"]
    assert narrow[0]["loss"] > 0.05  # a student far from the teacher: the comparison means something
    sa, sb = (json.loads(Path(f"runs/{n}/students/static.train.json").read_text()) for n in ("one", "two"))
    assert sb["final_loss"] == pytest.approx(sa["final_loss"], rel=1e-5)
    import numpy as np

    for part in ("embeddings.npy", "projection.npy", "weights.npy"):  # the static table, fine-tuned sparse
        ta, tb = (np.load(f"runs/{n}/students/static/{part}").astype(np.float32) for n in ("one", "two"))
        assert float(np.abs(ta - tb).max()) < 5e-5, part
    ra, rb = ({m["name"]: m for m in x["models"]} for x in (a, b))
    for name in ("l1", "narrow", "static"):
        assert rb[name]["spearman"] == pytest.approx(ra[name]["spearman"], abs=1e-4)
        assert rb[name]["cosine"] == pytest.approx(ra[name]["cosine"], abs=1e-5)
    assert (Path("runs/two/comparison.md").read_text().splitlines()[0]
            == Path("runs/one/comparison.md").read_text().splitlines()[0])  # fmt: skip
