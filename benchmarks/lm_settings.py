"""The LM benchmark's settings, shared by `benchmarks/lm.py` (the benchmark) and `benchmarks/lm_long.py` (its
"trained longer" worker) and the LM experiments: the corpus, the two sizes of run, the learning rates of the
long rows, the recipe, the model builder and the allocator set-up. Not a script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.recipes import load_recipe
from distill.tasks.causal_lm.models import build_causal_lm

ROOT = Path(__file__).resolve().parent
CORPUS = "/usr/share/games/fortunes"

FULL = {"teacher_steps": 1000, "student_steps": 200, "seeds": [0, 1], "eval_blocks": None, "long_steps": 1000}
QUICK = {"teacher_steps": 40, "student_steps": 8, "seeds": [0], "eval_blocks": 64, "long_steps": 8}
# "trained longer" rows: the online student's peak learning rate, chosen on the dev half at 1,000 steps by
# experiments/2026-11-29-lm-learning-rate/lm_lr.py (benchmarks/results/lm_lr.md), and the same for the cache's
# student: only the teacher signal differs. (The cache's own dev choice was 0.01 on one teacher and 0.015 on the
# next, where a second seed at 0.015 diverged to 161: lm_lr.md, BENCHMARKS.md.) Scratch gets its own dev choice.
LONG_LR = {"online": 0.01, "sample": 0.01, "scratch": 0.005}


def large_heap() -> None:
    """glibc serves allocations above its mmap threshold (dynamic, ≤ 32 MB) with fresh mmaps, and every
    page of them faults on first touch: with (8, 64, 8192) float logits that is most of the step time
    (measured: 2-3× slower, half of it system time). Fix the threshold at 32 MB and keep freed memory."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def base_recipe(work: Path, cfg: dict[str, Any], tokenizer_dir: Path | None = None) -> Any:
    tok = {"dir": str(tokenizer_dir)} if tokenizer_dir else {"vocab_size": 8192}
    return load_recipe(raw={
        "task": "causal_lm", "name": "bench-lm",
        "data": {"path": CORPUS, "separator": "%", "tokenizer": tok, "block_len": 64,
                 "val_fraction": 0.05, "seed": 0},
        "teacher": {"model": {"arch": "gpt2", "layers": 4, "width": 192, "heads": 4},
                    "train": {"steps": cfg["teacher_steps"], "batch_size": 8, "grad_accum": 4, "seed": 0,
                              "log_every": 100,
                              "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.01}}},
        "student": {"model": {"arch": "gpt2", "layers": 1, "width": 32, "heads": 2}},
        "distill": {"mode": "offline", "loss": "fkl", "top_k": 32, "temperature": 1.0},
        "train": {"steps": cfg["student_steps"], "batch_size": 8, "grad_accum": 4, "seed": 0, "log_every": 50,
                  "optimizer": {"name": "adamw", "lr": 0.005, "weight_decay": 0.01}},
        "output": {"dir": str(work / "run"), "cache_dir": str(work / "cache")},
    })  # fmt: skip


def build(m: Any, vocab: int, eos: int, seed: int) -> Any:
    return build_causal_lm(vocab_size=vocab, layers=m.layers, width=m.width, heads=m.heads, context=64,
                           arch=m.arch, eos_token_id=eos, seed=seed)  # fmt: skip
