"""Where the gap between the cache-trained and the online-trained LM student comes from. Not a test.

Reuses what `benchmarks/lm.py` leaves in benchmarks/.work/lm (its teacher, tokenizer and sampled
cache; run it first) and its student settings (1 × 32, 200 steps × 2,048 tokens, AdamW, cosine
schedule with 5% warmup, forward KL, no CE). Each row trains one student and reports its perplexity
on both halves of the held-out documents (dev and test, as in the benchmark). Rows:

* online: the teacher's full distribution every step;
* online, 32 fresh draws: the teacher runs every step, but the target is 32 new draws from it at
  each position (what the sampled cache stores, drawn anew instead of read back);
* online, exact top 8 + 24 tail draws: the same 32 slots, the teacher's 8 most likely tokens with
  their exact probabilities and 24 draws from the rest weighted by its mass (also unbiased, with
  less variance than 32 plain draws wherever the rest holds < 75% of the mass);
* cache: the sampled cache (32 draws per position, drawn once);
* the same at other peak learning rates and a second seed.

    .venv/bin/python experiments/2026-11-29-lm-cache-gap/lm_probe.py

Writes benchmarks/results/lm_probe.{json,md}. One thread.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))

import lm_settings as L  # noqa: E402 - the LM benchmark's own settings
import lm_long  # noqa: E402 - set-up, training and measuring of one student

from distill.tasks.causal_lm.loop import Objective  # noqa: E402
from distill.losses.token_views import TAIL_FLOOR, TeacherTopK, dense_sample  # noqa: E402
from distill.tasks.causal_lm.signal import lm_logits  # noqa: E402
from results_io import header, table, title_lines, write  # noqa: E402

ROWS = [  # (signal, peak lr, seed)
    ("online", 0.005, 0), ("online, 32 fresh draws", 0.005, 0), ("online, exact top 8 + 24 tail draws", 0.005, 0),
    ("cache", 0.005, 0),
    ("online", 0.0075, 0), ("cache", 0.0075, 0), ("online", 0.0075, 1), ("cache", 0.0075, 1),
    ("online", 0.01, 0), ("cache", 0.01, 0), ("online", 0.01, 1), ("cache", 0.01, 1),
]  # fmt: skip


def main() -> int:
    work = L.ROOT / ".work" / "lm"
    if not (work / "teacher" / "config.json").exists():
        print("run benchmarks/lm.py first (it trains the teacher and builds the caches)", file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    lm_long.setup(str(work), None)  # one thread; teacher, data, dev/test halves as in the benchmark
    recipe, teacher = lm_long.STATE["recipe"], lm_long.STATE["teacher"]
    cache = lm_long.open_cache("multinomial")  # the sampled cache this probe measured (independent draws)
    gen = torch.Generator().manual_seed(123)

    @torch.no_grad()
    def online(b: Any) -> torch.Tensor:
        return lm_logits(teacher, b.ids)

    @torch.no_grad()
    def fresh(b: Any) -> Any:
        return dense_sample(lm_logits(teacher, b.ids), recipe.distill.top_k, 1.0, generator=gen)

    @torch.no_grad()
    def top_and_tail(b: Any, m: int = 8, n: int = 24) -> TeacherTopK:
        logits = lm_logits(teacher, b.ids)
        lead, v = logits.shape[:-1], logits.shape[-1]
        p = torch.softmax(logits.float().reshape(-1, v), -1)
        top_p, top_i = p.topk(m, -1)
        rest = p.scatter(-1, top_i, 0.0)
        mass = rest.sum(-1, keepdim=True).clamp_min(1e-12)
        draws = torch.multinomial(rest / mass, n, replacement=True, generator=gen)
        counts = torch.zeros_like(p).scatter_add_(-1, draws, torch.ones_like(draws, dtype=p.dtype))
        counts.scatter_(-1, top_i, -1.0)  # the slots' ids stay distinct: a top id never fills an unused slot
        c, c_i = counts.topk(n, -1)
        probs = torch.cat([top_p, mass * c.clamp_min(0) / n], -1)
        return TeacherTopK(torch.cat([top_i, c_i], -1).reshape(*lead, m + n), probs.log().reshape(*lead, m + n),
                           torch.full(lead, TAIL_FLOOR), 1.0)  # fmt: skip

    signals: dict[str, Callable[[Any], Any]] = {"online": online, "online, 32 fresh draws": fresh,
                                                 "online, exact top 8 + 24 tail draws": top_and_tail,
                                                 "cache": lambda b: cache.get(b.rows)}  # fmt: skip
    rows = []
    for name, lr, seed in ROWS:
        r = lm_long.fit_measure(f"{name} lr {lr} seed {seed}", Objective(loss="fkl", teacher=signals[name]), lr, seed,
                                recipe.train.steps)  # fmt: skip
        rows.append({"signal": name, "lr": lr, "seed": seed, "seconds": r["seconds"],
                     "dev": r["dev"]["perplexity"], "test": r["test"]["perplexity"]})  # fmt: skip
    out = header("lm_probe", rows=rows, wall_seconds=round(time.perf_counter() - t_all, 1))
    md = [
        *title_lines("LM students: the cache against the online teacher, step for step", out),
        f"Command: `{out['command']}` (after `benchmarks/lm.py`: its teacher, data and sampled cache). 1 × 32 "
        "students, 200 steps × 2,048 tokens, forward KL, no CE; perplexity on the two halves of the held-out "
        "documents.",
        "",
        *table(["teacher signal", "peak lr", "seed", "dev perplexity", "test perplexity", "train s"], (
            f"| {r['signal']} | {r['lr']:g} | {r['seed']} | {r['dev']:.1f} | {r['test']:.1f} | {r['seconds']:.0f} |"
            for r in rows)),
    ]  # fmt: skip
    write(out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
