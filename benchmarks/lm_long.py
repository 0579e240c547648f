"""LM students trained for longer (1,000 steps), in worker processes: the cache against the online teacher.

Imported by `benchmarks/lm.py` (its "trained longer" rows run in one worker process beside the main
one, so the two cores share the benchmark) and by `benchmarks/lm_probe.py` (the learning-rate choice on
the dev half, two workers). Not a script. A worker loads what `lm.py` left in benchmarks/.work/lm: the
teacher and its tokenizer (saved right after training), the data (prepared again from the same
tokenizer: the same blocks), and the offline caches once `lm.py` has built them (a cache row must be
submitted only then: a worker never builds a cache, it opens a complete one).

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
_STATE: dict[str, Any] = {}


def _setup(work: str, eval_blocks: int | None) -> None:
    """Worker initialiser: one torch thread, the teacher, the data and the dev/test halves."""
    import lm as L  # the benchmark's own settings

    from distill.engine.lm_run import prepare_data
    from distill.models.causal_lm import load_causal_lm

    torch.set_num_threads(1)
    L.large_heap()
    w = Path(work)
    recipe = L.base_recipe(w, L.FULL, tokenizer_dir=w / "teacher")
    data = prepare_data(recipe, w / "run-worker")
    held = data.val[:eval_blocks] if eval_blocks else data.val
    teacher = load_causal_lm(w / "teacher").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    _STATE.update(L=L, work=w, recipe=recipe, data=data, teacher=teacher, caches={},
                  dev=held[: len(held) // 2], test=held[len(held) // 2 :])  # fmt: skip


def _cache(draws: str) -> Any:
    from distill.engine.lm_run import offline_cache

    s = _STATE
    if draws not in s["caches"]:
        d = s["recipe"].distill
        s["caches"][draws] = offline_cache(s["teacher"], s["data"].train, s["work"] / "cache", kind="sample",
                                           k=d.top_k, temperature=d.temperature, seed=0, batch_size=8,
                                           progress=False, draws=draws)[0]  # fmt: skip
    return s["caches"][draws]


def train_one(job: tuple[str, float, int, int]) -> dict[str, Any]:
    """Train one student: ``(signal, peak lr, seed, steps)``; its metrics on dev and test."""
    from accelerate import Accelerator

    from distill.engine.lm_loop import Objective, block_batches, fit_lm
    from distill.tasks.causal_lm import evaluate_lm, lm_logits

    signal, lr, seed, steps = job
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    s = _STATE
    L, recipe, data, teacher = s["L"], s["recipe"], s["data"], s["teacher"]

    @torch.no_grad()
    def online(b: Any) -> torch.Tensor:
        return lm_logits(teacher, b.ids)

    if signal == "scratch":
        objective = Objective()
    else:
        if signal == "online":
            source: Any = online
        else:
            cache = _cache("systematic" if signal == "sample" else "multinomial")
            source = lambda b: cache.get(b.rows)  # noqa: E731
        objective = Objective(loss="fkl", temperature=recipe.distill.temperature, teacher=source)
    c = recipe.train.model_copy(update={"seed": seed, "steps": steps})
    c = c.model_copy(update={"optimizer": c.optimizer.model_copy(update={"lr": lr})})
    model = L.build(recipe.student.model, len(data.tokenizer), data.tokenizer.eos_token_id, seed)
    t0 = time.perf_counter()
    fit_lm(model, c, role=f"{signal} lr {lr:g} seed {seed}", make_batch=block_batches(data.train, c.batch_size, seed),
           objective=objective, accelerator=Accelerator(cpu=True), progress=False)  # fmt: skip
    secs = time.perf_counter() - t0
    model = getattr(model, "module", model)
    row: dict[str, Any] = {"signal": signal, "lr": lr, "seed": seed, "steps": steps, "seconds": round(secs, 1)}
    for half in ("dev", "test"):
        q = evaluate_lm(model, s[half], batch_size=8)
        row[half] = {k: q[k] for k in ("perplexity", "top1", "top3")}
    print(f"[{signal} lr {lr:g} seed {seed}, {steps} steps] dev {row['dev']['perplexity']:.1f} "
          f"test {row['test']['perplexity']:.1f} ({secs:.0f} s)", flush=True)  # fmt: skip
    return row


def pool(work: Path, eval_blocks: int | None, processes: int) -> Any:
    """Worker processes (spawned: no fork of a process that holds torch threads), each set up once."""
    return mp.get_context("spawn").Pool(processes, initializer=_setup, initargs=(str(work), eval_blocks))
