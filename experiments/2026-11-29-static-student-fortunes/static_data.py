"""Does the static student of benchmarks/embeddings.py need more training text? Adds up to 160k
WordNet texts (definitions and usage examples, `builtin:wordnet`, `apt-get install wordnet-base`) to
its fortunes training sentences and measures on two validation splits. Not a test.

Validation: the last 2,000 of the embeddings benchmark's training sentences (as in
static_probe.py, beside this file) and 2,000 WordNet texts that no variant trains on; the benchmark's
held-out text is never touched. The teacher's embeddings of all 181k WordNet texts are computed
once and cached (about 6.5 minutes on 2 threads, 11 on one); training and measuring use one thread.

    .venv/bin/python experiments/2026-11-29-static-student-fortunes/static_data.py

Writes benchmarks/results/static_data.{json,md}.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # static_probe, beside it

from static_probe import VAL, setup, spearman  # noqa: E402 - the same split, teacher and measure

from distill.data.corpus import read_corpus  # noqa: E402
from distill.tasks.embedding.cache import cached_embeddings  # noqa: E402
from distill.tasks.embedding.static_training import finetune_static  # noqa: E402
from distill.tasks.embedding.static_build import build_static  # noqa: E402
from results_io import header, table, title_lines, write  # noqa: E402

EPOCHS = (2, 4, 6)
# (WordNet texts added, build_static overrides, finetune_static overrides)
VARIANTS = [
    (0, {}, {}),
    (40_000, {}, {}),
    (160_000, {}, {}),
    (40_000, {"dim": 384}, {}),
    (40_000, {"extend_vocab": 20_000}, {}),
    (40_000, {"weighting": "none"}, {}),
    (40_000, {}, {"lr": 3e-3}),
    (40_000, {}, {"lr": 3e-4}),
]


def main() -> int:
    t_all = time.perf_counter()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    s = setup()
    train, val, t_train, t_val, n = s.train, s.val, s.t_train, s.t_val, len(s.train)
    wordnet = read_corpus("builtin:wordnet")
    t_wn = cached_embeddings(s.encode, wordnet, s.cache, s.fingerprint, "builtin:wordnet")
    teacher_seconds = time.perf_counter() - t0
    torch.set_num_threads(1)
    order = np.random.default_rng(0).permutation(len(wordnet))
    wn_val_idx, wn_train_idx = order[:VAL], order[VAL:]
    wn_val, t_wn_val = [wordnet[i] for i in wn_val_idx], t_wn[wn_val_idx]

    rows = []
    for extra, build_kw, fit_kw in VARIANTS:
        idx = wn_train_idx[:extra]
        xs = train + [wordnet[i] for i in idx]
        ts = torch.from_numpy(np.concatenate([t_train, t_wn[idx]]))
        b = {"dim": 256, "weighting": "sif", **build_kw}
        f = {"lr": 1e-3, **fit_kw}
        m = build_static(s.teacher, corpus=xs, progress=False, **b)
        curve, secs, done = [], 0.0, 0
        for e in EPOCHS:
            st = finetune_static(m, xs, ts, epochs=e - done, seed=e, progress=False, **f)
            secs, done = secs + st["seconds"], e
            curve.append((round(spearman(m, val, t_val), 4), round(spearman(m, wn_val, t_wn_val), 4)))
        setting = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in {**build_kw, **fit_kw}.items())
        rows.append({"wordnet_texts": extra, "setting": setting or "the benchmark's (dim 256, SIF, lr 1e-3)",
                     "texts": len(xs), "spearman_fortunes_wordnet": curve, "seconds": round(secs, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    out = header("static_data", fortunes_train=n, val=VAL, wordnet_total=len(wordnet),
                 teacher_seconds=round(teacher_seconds, 1), rows=rows,
                 wall_seconds=round(time.perf_counter() - t_all, 1))  # fmt: skip
    cols = [f"{e} epochs" for e in EPOCHS]
    md = [
        *title_lines("Static student: more training text (validation splits)", out),
        f"Command: `{out['command']}`. The embeddings benchmark's static student (each token through "
        f"all-MiniLM-L6-v2, PCA, SIF weights from the training text), fine-tuned (1 − cos) on {n:,} of its "
        "fortunes training sentences plus WordNet texts, measured on the other 2,000 fortunes sentences and on "
        "2,000 WordNet texts no variant trains on. Each cell: Spearman agreement with the teacher over 5,000 random "
        "pairs, fortunes / WordNet, after that many epochs (Adam restarts at 2 and 4). Teacher embeddings: "
        f"{teacher_seconds:.0f} s in this run (0 when they came from the cache of an earlier run).",
        "",
        *table(["WordNet texts added", "setting", "texts", *cols, "fine-tune s"], (
            f"| {r['wordnet_texts']:,} | {r['setting']} | {r['texts']:,} | "
            + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in r["spearman_fortunes_wordnet"])
            + f" | {r['seconds']:.0f} |" for r in rows)),
    ]  # fmt: skip
    write(out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
