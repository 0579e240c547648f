"""Throughput of text encoders end to end (tokenisation included), measured side by side in one process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def sentences_per_second(encode: Callable[[list[str]], Any], texts: list[str], batch_size: int, *,
                         min_seconds: float = 1.0, max_passes: int = 50) -> float:  # fmt: skip
    """End-to-end throughput (tokenisation included): ``texts`` encoded in calls of ``batch_size``.

    Passes over ``texts`` repeat until ``min_seconds`` have been timed (at most ``max_passes``), and the
    median pass counts: a slow model is timed over one long pass, a fast one (a static table encodes
    1,000 sentences in ~30 ms) over many, so a single hiccup of the machine cannot move its number."""
    return side_by_side_rates({"model": encode}, texts, batch_size, rounds=1, min_seconds=min_seconds,
                              max_passes=max_passes)["model"]  # fmt: skip


def _timed_passes(encode: Callable[[list[str]], Any], texts: list[str], batch_size: int, min_seconds: float,
                  max_passes: int) -> list[float]:  # fmt: skip
    """Rates (sentences/s) of passes over ``texts``: at least one, more until ``min_seconds`` are timed."""
    rates: list[float] = []
    spent = 0.0
    while not rates or (spent < min_seconds and len(rates) < max_passes):
        t0 = time.perf_counter()
        for s in range(0, len(texts), batch_size):
            encode(texts[s : s + batch_size])
        dt = time.perf_counter() - t0
        spent += dt
        rates.append(len(texts) / max(dt, 1e-9))
    return rates


def side_by_side_rates(encoders: dict[str, Callable[[list[str]], Any]], texts: list[str], batch_size: int, *,
                       rounds: int = 3, min_seconds: float = 1.0, max_passes: int = 50) -> dict[str, float]:  # fmt: skip
    """Throughput of every encoder, measured in interleaved rounds: each round times every model in turn
    (at least one pass each, more until ``min_seconds / rounds``), and a model's number is the median of
    all its passes. The ratios between models are what the tables report: interleaving puts each one's
    passes in the same spells of the machine (another process, a clock change), where timing them one
    after the other let a slow spell land on one model only (WordNet's layer student read 2.9x the
    teacher in one run, 3.1-3.3x in others)."""
    for encode in encoders.values():
        encode(texts[: min(len(texts), batch_size * 2)])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            rates[name] += _timed_passes(encode, texts, batch_size, min_seconds / rounds, max(1, max_passes // rounds))
    return {name: float(np.median(r)) for name, r in rates.items()}
