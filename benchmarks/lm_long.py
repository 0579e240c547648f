"""LM students trained for longer (1,000 steps), in worker processes: the cache against the online teacher.

Imported by `benchmarks/lm.py` (its "trained longer" rows run in one worker process beside the main one, so
the two cores share the benchmark), by `experiments/2026-11-29-lm-learning-rate/lm_lr.py` (the learning-rate
choice on the dev half, two workers) and by `experiments/2026-11-29-lm-cache-gap/lm_probe.py` (in its own
process: `setup`, then `fit_measure` with its own teacher signals). Not a script. A worker loads what `lm.py`
left in benchmarks/.work/lm: the teacher and its tokenizer (saved right after training), the data (prepared
again from the same tokenizer: the same blocks), and the offline caches once `lm.py` has built them (a cache
row must be submitted only then: a worker never builds a cache, it opens a complete one).

One job = one student (1 × 32, the benchmark's settings except steps and peak learning rate), trained with
forward KL and no CE from one teacher signal:

* ``online``: the teacher's full distribution every step;
* ``sample``: the sampled cache, systematic draws (32 per position, the library's default);
* ``multinomial``: the sampled cache with 32 independent draws (``distill.draws: multinomial``);
* ``scratch``: no teacher (cross-entropy on the data).

It returns perplexity and top-1/top-3 on both halves of the held-out documents (dev chooses, test
reports) and the training seconds.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIGNALS = ("online", "sample", "multinomial", "scratch")
STATE: dict[str, Any] = {}


def setup(work: str, eval_blocks: int | None) -> None:
    """Worker initialiser (or a process's own set-up): one torch thread, the teacher, the data and the
    dev/test halves, in :data:`STATE`."""
    import lm_settings as L  # the benchmark's own settings

    from distill.tasks.causal_lm.data import prepare_data
    from distill.tasks.causal_lm.models import load_causal_lm

    torch.set_num_threads(1)
    L.large_heap()
    w = Path(work)
    recipe = L.base_recipe(w, L.FULL, tokenizer_dir=w / "teacher")
    data = prepare_data(recipe, w / "run-worker")
    held = data.val[:eval_blocks] if eval_blocks else data.val
    teacher = load_causal_lm(w / "teacher").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    STATE.update(L=L, work=w, recipe=recipe, data=data, teacher=teacher, caches={},
                  dev=held[: len(held) // 2], test=held[len(held) // 2 :])  # fmt: skip


def open_cache(draws: str) -> Any:
    """The sampled cache (``draws``: 'systematic' or 'multinomial'); built here if it is not on disk yet, so
    call it in the parent before workers that read it start."""
    from distill.tasks.causal_lm.pipeline import offline_cache

    s = STATE
    if draws not in s["caches"]:
        d = s["recipe"].distill
        s["caches"][draws] = offline_cache(s["teacher"], s["data"].train, s["work"] / "cache", kind="sample",
                                           k=d.top_k, temperature=d.temperature, seed=0, batch_size=8,
                                           progress=False, draws=draws)[0]  # fmt: skip
    return s["caches"][draws]


def fit_measure(label: str, objective: Any, lr: float, seed: int, steps: int) -> dict[str, Any]:
    """Train one 1 × 32 student with ``objective`` (the benchmark's settings, this peak lr, seed and steps):
    its training seconds and its perplexity and top-1/top-3 on the dev and test halves."""
    from accelerate import Accelerator

    from distill.tasks.causal_lm.loop import block_batches, fit_lm
    from distill.tasks.causal_lm.signal import evaluate_lm

    s = STATE
    L, recipe, data = s["L"], s["recipe"], s["data"]
    c = recipe.train.model_copy(update={"seed": seed, "steps": steps})
    c = c.model_copy(update={"optimizer": c.optimizer.model_copy(update={"lr": lr})})
    model = L.build(recipe.student.model, len(data.tokenizer), data.tokenizer.eos_token_id, seed)
    t0 = time.perf_counter()
    fit_lm(model, c, role=label, make_batch=block_batches(data.train, c.batch_size, seed), objective=objective,
           accelerator=Accelerator(cpu=True), progress=False)  # fmt: skip
    secs = time.perf_counter() - t0
    model = getattr(model, "module", model)
    row: dict[str, Any] = {"lr": lr, "seed": seed, "steps": steps, "seconds": round(secs, 1)}
    for half in ("dev", "test"):
        q = evaluate_lm(model, s[half], batch_size=8)
        row[half] = {k: q[k] for k in ("perplexity", "top1", "top3")}
    print(f"[{label}, {steps} steps] dev {row['dev']['perplexity']:.1f} test {row['test']['perplexity']:.1f} "
          f"({secs:.0f} s)", flush=True)  # fmt: skip
    return row


def train_one(job: tuple[str, float, int, int]) -> dict[str, Any]:
    """Train one student: ``(signal, peak lr, seed, steps)``; its metrics on dev and test."""
    from distill.tasks.causal_lm.loop import Objective
    from distill.tasks.causal_lm.signal import lm_logits

    signal, lr, seed, steps = job
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    recipe, teacher = STATE["recipe"], STATE["teacher"]

    @torch.no_grad()
    def online(b: Any) -> torch.Tensor:
        return lm_logits(teacher, b.ids)

    if signal == "scratch":
        objective = Objective()
    else:
        if signal == "online":
            source: Any = online
        else:
            cache = open_cache("systematic" if signal == "sample" else "multinomial")
            source = lambda b: cache.get(b.rows)  # noqa: E731
        objective = Objective(loss="fkl", temperature=recipe.distill.temperature, teacher=source)
    return {"signal": signal, **fit_measure(f"{signal} lr {lr:g} seed {seed}", objective, lr, seed, steps)}


def pool(work: Path, eval_blocks: int | None, processes: int) -> Any:
    """Worker processes (spawned: no fork of a process that holds torch threads), each set up once."""
    return mp.get_context("spawn").Pool(processes, initializer=setup, initargs=(str(work), eval_blocks))
