"""`distill run LM_RECIPE --nproc 2` (DDP over gloo, through torchrun) matches the one-process run.

With N processes ``train.batch_size`` is per process: 2 processes × 4 blocks train on the global
micro-batches of 8 blocks that one process with batch 8 draws, rank r on the r-th half, each half's
loss divided by the window's positions counted over both ranks. So the two runs compute the same
gradients up to the order of float32 additions (each rank sums its half, DDP adds the halves):
measured on this tiny recipe, the logged losses, true KL and the student's held-out perplexity agree
to ~1e-7 relative and the weights to ~1.5e-6 absolute after 6 Adam steps (Adam divides by √v, so
components with tiny gradients carry the rounding noise furthest). The tolerances below, rel 1e-5 and
abs 5e-5 on weights (5% of one lr-sized step), leave a margin of ~30-100x for other BLAS/thread
layouts; a real sharding or normalisation bug moves them by 1e-2 or more.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from distill.tasks.causal_lm.loop import block_batches
from distill.errors import DataError

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "small", "red", "blue", "house",
         "tree", "under", "over", "quickly", "slowly"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated corpus, and a tiny random GPT-2 teacher folder with its tokenizer (vocab 300)."""
    from distill.tasks.causal_lm.text import train_tokenizer
    from distill.tasks.causal_lm.models import build_causal_lm

    root = tmp_path_factory.mktemp("lm_ddp")
    r = random.Random(0)
    docs = [" ".join(r.choice(WORDS) for _ in range(r.randint(5, 20))).capitalize() + "." for _ in range(160)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n%\n".join(docs) + "\n")
    tok = train_tokenizer(docs, 300)
    teacher = build_causal_lm(vocab_size=len(tok), layers=2, width=16, heads=2, context=32,
                              eos_token_id=tok.eos_token_id, seed=0)  # fmt: skip
    teacher.save_pretrained(str(root / "teacher"))
    tok.save_pretrained(str(root / "teacher"))
    return {"root": root, "corpus": corpus, "teacher": root / "teacher"}


def lm_recipe(world: dict[str, Path], mode: str) -> dict[str, Any]:
    return {
        "task": "causal_lm",
        "name": f"ddp-{mode}",
        "data": {"path": str(world["corpus"]), "separator": "%", "block_len": 32, "val_fraction": 0.1},
        "teacher": {"dir": str(world["teacher"])},
        "student": {"model": {"layers": 1, "width": 16, "heads": 2}},
        "distill": {"mode": mode, "loss": "fkl", "ce_weight": 0.5, "prompt_len": 8, "gen_len": 8, "num_prompts": 16},
        "train": {"steps": 6, "batch_size": 8, "grad_accum": 2, "checkpoint_every": 2, "log_every": 2},
        "eval": {"max_blocks": 4, "samples": 1, "sample_len": 4, "speed_batches": 1, "batch_size": 4},
        "output": {"cache_dir": str(world["root"] / "cache")},
    }


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distill", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["online", "offline", "sequence"])
def test_two_processes_match_one(world: dict[str, Path], mode: str) -> None:
    # sequence: the examples' masks differ row by row, so the two halves hold different numbers of
    # positions; only a loss normalised by the count over both ranks matches the one-process run
    from safetensors.torch import load_file

    Path("r.yaml").write_text(yaml.safe_dump(lm_recipe(world, mode)))
    one = _cli("run", "r.yaml", "--no-progress", "-q", "--set", "output.dir=runs/one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli("run", "r.yaml", "--no-progress", "-q", "--nproc", "2", "--set", "output.dir=runs/two",
               "--set", "train.batch_size=4")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads(Path("runs/one/metrics.json").read_text())
    b = json.loads(Path("runs/two/metrics.json").read_text())
    assert (a["processes"], b["processes"]) == (1, 2)
    run = Path("runs/two")
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    for name in ("comparison.md", "comparison.json", "samples.md", "history/student.json", "student/model.safetensors",
                 "student/tokenizer.json"):  # fmt: skip
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints" / "student").iterdir()) == [
        "epoch-0004.pt", "epoch-0006.pt", "latest.json"]  # fmt: skip
    log = (run / "run.log").read_text()
    # one process writes the log: each line once
    assert "2 processes" in log and "batch size 4 per process (8 per micro-batch in all)" in log
    assert log.count("student step 6/6") == 1 and log.count("run directory:") == 1
    assert [h["step"] for h in b["history"]["student"]] == [2, 4, 6]
    for ha, hb in zip(a["history"]["student"], b["history"]["student"], strict=True):
        assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-5)
        if mode != "sequence":
            assert hb["true_kl"] == pytest.approx(ha["true_kl"], rel=1e-5)
    pa, pb = ({r["model"]: r for r in m["comparison"]} for m in (a, b))
    assert pb["teacher"]["perplexity"] == pa["teacher"]["perplexity"]  # the same loaded teacher
    assert pb["student"]["perplexity"] == pytest.approx(pa["student"]["perplexity"], rel=1e-5)
    wa, wb = load_file("runs/one/student/model.safetensors"), load_file(str(run / "student" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 5e-5
    if mode == "offline":  # one cache, built by the main process, read by both
        assert b["signal"]["cache_dir"] == a["signal"]["cache_dir"]
    if mode == "sequence":
        assert (run / "sequence_data.safetensors").is_file() and b["signal"]["examples"] == a["signal"]["examples"]


def test_ranks_share_the_global_batch_of_one_process() -> None:
    blocks = torch.arange(40).reshape(10, 4)
    one = block_batches(blocks, 6, seed=3)
    halves = [block_batches(blocks, 3, seed=3, rank=r, world=2) for r in range(2)]
    for g in range(7):  # several passes over the blocks
        assert torch.equal(torch.cat([h(g).rows for h in halves]), one(g).rows)
        assert torch.equal(torch.cat([h(g).ids for h in halves]), one(g).ids)


def test_fewer_blocks_than_processes_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"1 training blocks for 2 processes.*Fix"):
        block_batches(torch.zeros(1, 4, dtype=torch.long), 4, seed=0, rank=0, world=2)
