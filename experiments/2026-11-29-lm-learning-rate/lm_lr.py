"""The peak learning rate of LM students trained for 1,000 steps, chosen on the dev half for each teacher
signal: what `benchmarks/lm.py`'s "trained longer" rows use. Not a test.

Reuses what `benchmarks/lm.py` leaves in benchmarks/.work/lm (teacher, tokenizer, both sampled caches:
run it first). Students 1 × 32, 1,000 steps × 2,048 tokens (2.8 epochs), forward KL, no CE, seed 0;
online teacher, sampled cache with systematic draws (the default) and with independent draws, each at
the candidate peak learning rates. Two worker processes, one torch thread each.

    .venv/bin/python experiments/2026-11-29-lm-learning-rate/lm_lr.py [--only SIGNAL ...]

Writes benchmarks/results/lm_lr.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))

import lm_settings as L  # noqa: E402
import lm_long  # noqa: E402
from results_io import RESULTS, header, table, title_lines, write  # noqa: E402

STEPS = 1000
GRID = {"online": (0.005, 0.01, 0.015), "sample": (0.005, 0.01, 0.015), "multinomial": (0.005, 0.01),
        "scratch": (0.005, 0.01, 0.015)}
LABEL = {"online": "online teacher", "sample": "cache, 32 systematic draws", "multinomial": "cache, 32 independent draws",
         "scratch": "none (scratch, cross-entropy)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=list(GRID), help="run these signals only; the other rows are kept "
                    "from the existing results file (each row keeps the date of the run that measured it)")
    args = ap.parse_args()
    work = L.ROOT / ".work" / "lm"
    if not (work / "teacher" / "config.json").exists() or not (work / "cache").is_dir():
        print("run benchmarks/lm.py first (it trains the teacher and builds the caches)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    jobs = [(sig, lr, 0, STEPS) for sig, lrs in GRID.items() for lr in lrs if not args.only or sig in args.only]
    jobs.sort(key=lambda j: j[0] != "online")  # the slow online runs first, so that both workers end together
    # the caches the jobs read are built (or found) here first: a worker only opens complete ones
    lm_long.setup(str(work), None)
    for sig in {j[0] for j in jobs} & {"sample", "multinomial"}:
        lm_long.open_cache("systematic" if sig == "sample" else "multinomial")
    with lm_long.pool(work, None, 2) as p:
        rows = p.map(lm_long.train_one, jobs, chunksize=1)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{**r, "measured": now} for r in rows]
    if args.only and (RESULTS / "lm_lr.json").exists():
        old = json.loads((RESULTS / "lm_lr.json").read_text())
        rows += [{"measured": old["date"], **r} for r in old["rows"] if r["signal"] not in args.only]
    GRID_ = {sig: lrs for sig, lrs in GRID.items() if any(r["signal"] == sig for r in rows)}
    best = {sig: min((r for r in rows if r["signal"] == sig), key=lambda r: r["dev"]["perplexity"]) for sig in GRID_}
    out = header("lm_lr", steps=STEPS, rows=rows, chosen={s: r["lr"] for s, r in best.items()},
                 wall_seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    md = [
        *title_lines("LM students trained longer: the peak learning rate, chosen on the dev half", out),
        f"Command: `{out['command']}` (after `benchmarks/lm.py`: its teacher, data and caches). 1 × 32 students, "
        f"{STEPS:,} steps × 2,048 tokens, AdamW, cosine schedule with 5% warmup, forward KL, no CE, seed 0; two "
        "worker processes, one thread each. Perplexity on the two halves of the held-out documents; the choice "
        "sees only dev." + (" Rows of other signals are kept from an earlier run (their date in the last column)."
                            if args.only else ""),
        "",
        *table(["teacher signal", "peak lr", "dev perplexity", "test perplexity", "train s", "measured"], (
            f"| {LABEL[r['signal']]} | {r['lr']:g}{' (chosen)' if best[r['signal']] is r else ''} | "
            f"{r['dev']['perplexity']:.1f} | {r['test']['perplexity']:.1f} | {r['seconds']:.0f} | {r['measured'][:16]} |"
            for r in sorted(rows, key=lambda r: (list(GRID).index(r["signal"]), r["lr"])))),
    ]  # fmt: skip
    write(out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
