"""Why the static student of benchmarks/embeddings.py stops near Spearman 0.66: more epochs, the
relational term, a frozen table, more (shorter) targets, and the same model trained on the very
sentences it is measured on. Not a test.

Uses the embeddings benchmark's corpus, split and teacher-embedding cache (run benchmarks/embeddings.py
first, or this computes the teacher's embeddings of the training sentences, ~3 minutes). Everything
here is measured on a *validation* split: the last 2,000 of the benchmark's training sentences,
held out of training (except in the memorisation row, where they are the training data on purpose).
The benchmark's held-out text is never touched. One thread.

    .venv/bin/python experiments/2026-11-29-static-student-fortunes/static_probe.py

Writes benchmarks/results/static_probe.{json,md}.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))

import embeddings as bench  # noqa: E402 - the benchmark's own recipe

from distill.tasks.embedding.cache import cached_embeddings, teacher_fingerprint  # noqa: E402
from distill.tasks.embedding.pipeline import default_teacher_path, load_texts  # noqa: E402
from distill.tasks.embedding.static_training import finetune_static  # noqa: E402
from distill.models.sentence import load_sentence_encoder  # noqa: E402
from distill.tasks.embedding.static_build import build_static  # noqa: E402
from distill.core.recipes import validate_recipe  # noqa: E402
from distill.tasks.embedding.metrics import quality  # noqa: E402
from results_io import header, table, title_lines, write  # noqa: E402

VAL = 2000
EPOCHS, EVERY = 12, 3


def spans_of(texts: list[str], seed: int = 0) -> list[str]:
    """Two random word windows (2-8 words) of every sentence of 4 words or more, deduplicated."""
    rng, out = random.Random(seed), []
    for s in texts:
        w = s.split()
        for _ in range(2):
            if len(w) < 4:
                break
            n = rng.randint(2, min(8, len(w) - 1))
            a = rng.randint(0, len(w) - n)
            out.append(" ".join(w[a : a + n]))
    return list(dict.fromkeys(out))


@dataclass
class Setup:
    """The embeddings benchmark's teacher and training sentences, split into ``train`` and the last ``VAL`` as
    ``val``, with the teacher's embeddings of both (cached), and what it takes to encode more (cached too)."""

    teacher: Any
    encode: Callable[[list[str]], np.ndarray]
    fingerprint: str
    cache: Path
    train: list[str]
    val: list[str]
    t_train: np.ndarray
    t_val: np.ndarray


def setup() -> Setup:
    """:class:`Setup` of the embeddings benchmark's recipe. Shared with static_data.py (beside this file)."""
    recipe = validate_recipe(bench.recipe(False))
    texts = load_texts(recipe)
    path = default_teacher_path()
    teacher = load_sentence_encoder(path)
    fp = teacher_fingerprint(path, teacher)
    cache = Path(recipe.output.cache_dir)

    def encode(xs: list[str]) -> np.ndarray:
        return teacher.encode(xs, batch_size=64)

    t_all = cached_embeddings(encode, texts.train, cache, fp, "the training text")
    n = len(texts.train) - VAL
    return Setup(teacher, encode, fp, cache, texts.train[:n], texts.train[n:], t_all[:n], t_all[n:])


def spearman(model: Any, texts: list[str], targets: np.ndarray) -> float:
    """Spearman agreement with the teacher over 5,000 random pairs of ``texts`` (seed 0)."""
    return float(quality(model.encode(texts), targets, n_pairs=5000, n_queries=500, k=10, seed=0)["spearman"])


def main() -> int:
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    s = setup()
    teacher, train, val, t_train, t_val, n = s.teacher, s.train, s.val, s.t_train, s.t_val, len(s.train)
    base = build_static(teacher, dim=256, weighting="sif", corpus=train, progress=False)
    t0 = time.perf_counter()
    spans = spans_of(train)
    t_spans = teacher.encode(spans, batch_size=64)
    span_seconds = time.perf_counter() - t0

    variants = {
        "1 - cos, lr 1e-3 (the benchmark's objective)": (train, t_train, {}),
        "+ relational term, weight 1": (train, t_train, {"relational": 1.0}),
        "table frozen (weights and projection trained)": (train, t_train, {"table_lr": 0.0}),
        f"+ {len(spans):,} word windows of the training sentences as extra targets":
            (train + spans, np.concatenate([t_train, t_spans]), {}),
        "memorisation: trained on the validation sentences too (an upper bound, not a student)":
            (train + val, np.concatenate([t_train, t_val]), {}),
    }  # fmt: skip
    rows = []
    for name, (xs, ts, extra) in variants.items():
        m, curve, secs = copy.deepcopy(base), [], 0.0
        for e in range(0, EPOCHS, EVERY):
            st = finetune_static(m, xs, torch.from_numpy(ts), epochs=EVERY, lr=1e-3, seed=e, progress=False, **extra)
            secs += st["seconds"]
            curve.append(round(spearman(m, val, t_val), 4))
        rows.append({"variant": name, "texts": len(xs), "spearman_by_epochs": curve, "seconds": round(secs, 1)})
        print(name, curve, flush=True)
    out = header("static_probe", train_sentences=n, val_sentences=VAL, untrained_spearman=spearman(base, val, t_val),
                 spans=len(spans), span_teacher_seconds=round(span_seconds, 1), rows=rows,
                 wall_seconds=round(time.perf_counter() - t_all, 1))  # fmt: skip
    cols = [f"{e} epochs" for e in range(EVERY, EPOCHS + 1, EVERY)]
    md = [
        *title_lines("Static student: what limits it (validation split)", out),
        f"Command: `{out['command']}`. The embeddings benchmark's static student (token vectors through "
        f"all-MiniLM-L6-v2, PCA to 256, SIF weights; untrained: Spearman {out['untrained_spearman']:.3f}), "
        f"fine-tuned on {n:,} of its training sentences, measured on the other {VAL:,} (Spearman agreement with "
        "the teacher over 5,000 random pairs). Adam restarts every 3 epochs (each column continues the previous "
        f"one). The word windows cost {span_seconds:.0f} s of teacher time.",
        "",
        *table(["variant", "texts", *cols, "fine-tune s"], (
            f"| {r['variant']} | {r['texts']:,} | " + " | ".join(f"{v:.3f}" for v in r["spearman_by_epochs"])
            + f" | {r['seconds']:.0f} |" for r in rows)),
    ]  # fmt: skip
    write(out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
