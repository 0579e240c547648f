"""Attention-head pruning of a real encoder: all-MiniLM-L6-v2 with 0/25/50/75% of its heads removed
(`distill.compress.prune_heads`, per layer, lowest L1 norm of the output-projection columns first),
no recovery training. Not a test.

Measures, side by side in one process on one thread: parameters, sentences/s at batch 64 (tokenisation
included; median of interleaved rounds) and the mean cosine of each sentence's embedding to the
unpruned model's, on 512 sentences of Python's documentation (`builtin:python-docs`).

    .venv/bin/python benchmarks/prune_heads.py                       # benchmarks/results/prune_heads.{json,md}
    .venv/bin/python benchmarks/prune_heads.py --quick --out /tmp/ph  # a check: 64 sentences, 2 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from distill.compress import head_counts, prune_heads
from distill.data.corpus import read_corpus
from distill.tasks.embedding.texts import default_teacher_path
from distill.models.sentence import load_sentence_encoder
from results_io import header, table, title_lines, write

AMOUNTS = (0.0, 0.25, 0.5, 0.75)
ROUNDS = 5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a check: 64 sentences, 2 rounds")
    ap.add_argument("--out", default=None, help="results path without suffix (default benchmarks/results/prune_heads)")
    args = ap.parse_args(argv)
    rounds = 2 if args.quick else ROUNDS
    torch.set_num_threads(1)
    texts = read_corpus("builtin:python-docs")[: 64 if args.quick else 512]
    teacher = load_sentence_encoder(default_teacher_path())
    models = {a: (teacher if a == 0 else prune_heads(teacher, a)[0]) for a in AMOUNTS}
    ref = teacher.encode(texts, batch_size=64)
    speed: dict[float, list[float]] = {a: [] for a in AMOUNTS}
    for _ in range(rounds):  # interleaved: a load change hits every model alike
        for a, m in models.items():
            t0 = time.perf_counter()
            m.encode(texts, batch_size=64)
            speed[a].append(len(texts) / (time.perf_counter() - t0))
    rows = []
    for a, m in models.items():
        emb = m.encode(texts, batch_size=64)
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        cos = float((unit * ref / np.linalg.norm(ref, axis=1, keepdims=True)).sum(1).mean())
        rows.append({"amount": a, "heads": sum(head_counts(m).values()), "params": sum(p.numel() for p in m.parameters()),
                     "sent_per_s": statistics.median(speed[a]), "cosine": cos})  # fmt: skip
    base = rows[0]["sent_per_s"]
    out = header("prune_heads", sentences=len(texts), rows=rows)
    md = [
        *title_lines("Attention-head pruning of all-MiniLM-L6-v2 (no recovery training)", out),
        f"Command: `{out['command']}`. {len(texts)} sentences of Python's documentation, batch 64, tokenisation "
        f"included; sentences/s: median of {rounds} interleaved rounds; cosine: mean cosine of each sentence's "
        "embedding to the unpruned model's.",
        "",
        *table(["heads removed", "heads", "parameters", "sentences/s", "speed-up", "cosine to unpruned"], (
            f"| {100 * r['amount']:.0f}% | {r['heads']} | {r['params'] / 1e6:.2f} M | {r['sent_per_s']:.0f} | "
            f"{r['sent_per_s'] / base:.2f}× | {r['cosine']:.4f} |" for r in rows)),
    ]  # fmt: skip
    write(out, md, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
