"""Multi-process scaling on this machine: 1 vs 2 processes (DDP over gloo, torchrun).

Not a test. Runs the real CLI (`distill run --nproc N`) on Fashion-MNIST with a
CNN teacher loaded from a checkpoint (trained here once) and a student CNN big
enough that compute, not per-step overhead, dominates; each run starts with an
empty teacher-output cache, so the cache build is measured too. 1 thread per
process; the runs alternate (1, 2, 1, 2, ...) so that both see the same machine.

    .venv/bin/python benchmarks/scaling.py            # writes benchmarks/results/scaling.{json,md}

Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from distill.core.results import by_role

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "scaling"
RESULTS = ROOT / "results"

RECIPE = {
    "name": "scaling",
    "data": {"source": "fashion_mnist", "val_fraction": 5000 / 60000, "train_limit": 20000},
    "teacher": {"arch": "cnn", "params": {"channels": [16, 32, 64], "hidden": 384, "dropout": 0.3}},
    "student": {"arch": "cnn", "params": {"channels": [8, 16], "hidden": 32, "dropout": 0.0}},
    "distill": [{"loss": "kd", "weight": 0.5, "temperature": 2.0}, {"loss": "ce", "weight": 0.5}],
    "train": {"epochs": 2, "batch_size": 128, "num_threads": 1},
    "eval": {"baseline": False, "latency_runs": 5, "throughput_runs": 2},
}


def run_once(recipe: Path, nproc: int, tag: str) -> dict:
    out_dir = WORK / tag
    cache = WORK / f"cache-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # batch size per process halves with 2 processes, so the global batch (and the work) is the same
    per_proc = RECIPE["train"]["batch_size"] // nproc
    cmd = [sys.executable, "-m", "distill", "run", str(recipe), "--no-progress", "-q", "--overwrite",
           "--nproc", str(nproc), "--set", f"output.dir={out_dir}", "--set", f"output.cache_dir={cache}",
           "--set", f"train.batch_size={per_proc}"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    m = json.loads((out_dir / "metrics.json").read_text())
    hist = m["history"]["student"]
    return {
        "nproc": nproc,
        "wall_s": wall,
        "samples_per_s": statistics.median(h["samples_per_s"] for h in hist),
        "epoch_s": statistics.median(h["seconds"] for h in hist),
        "cache_build_s": m["teacher_outputs"]["seconds"],
        "test_acc": by_role(m)["student"]["test_acc"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "scaling"), help="results path without suffix")
    args = ap.parse_args(argv)
    out_stem = Path(args.out)
    WORK.mkdir(parents=True, exist_ok=True)
    # a trained teacher once (3 epochs), then every measured run loads it
    teacher_dir = WORK / "teacher"
    if not (teacher_dir / "teacher.safetensors").exists():
        raw = json.loads(json.dumps(RECIPE))
        raw["teacher"]["train"] = {"epochs": 3, "optimizer": {"name": "adam", "lr": 3e-3}}
        raw["train"]["epochs"] = 1
        p = WORK / "teacher.yaml"
        p.write_text(yaml.safe_dump(raw))
        subprocess.run([sys.executable, "-m", "distill", "run", str(p), "--no-progress", "-q", "--overwrite",
                        "--set", f"output.dir={teacher_dir}", "--set", f"output.cache_dir={WORK / 'cache-t'}"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    raw = json.loads(json.dumps(RECIPE))
    raw["teacher"]["checkpoint"] = str(teacher_dir / "teacher.safetensors")
    recipe = WORK / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    rows = []
    for r in range(args.repeats):
        for nproc in (1, 2):
            rows.append(run_once(recipe, nproc, f"n{nproc}-r{r}"))
            print(rows[-1], file=sys.stderr)
    agg = {}
    for nproc in (1, 2):
        sel = [x for x in rows if x["nproc"] == nproc]
        agg[nproc] = {k: statistics.median(x[k] for x in sel) for k in ("samples_per_s", "epoch_s", "cache_build_s", "wall_s", "test_acc")}
    result = {
        "benchmark": "scaling",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "command": "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipe": raw,
        "runs": rows,
        "median": {str(k): v for k, v in agg.items()},
        "throughput_ratio_2_over_1": agg[2]["samples_per_s"] / agg[1]["samples_per_s"],
        "cache_build_speedup_2_over_1": agg[1]["cache_build_s"] / agg[2]["cache_build_s"],
    }
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    (out_stem.parent / (out_stem.name + ".json")).write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Scaling: 1 vs 2 processes (DDP over gloo, torchrun)",
        "",
        f"{result['date']} · {result['machine']['platform']} · {result['machine']['cpus']} CPUs · torch {result['machine']['torch']}",
        "",
        f"Command: `{result['command'].strip()}`. Fashion-MNIST (20,000 training images), student CNN 8/16 channels, "
        "global batch 128, 1 thread per process; median of the alternating runs.",
        "",
        "| processes | student samples/s | epoch s | teacher-cache build s (35k images) | wall s | student test acc |",
        "|---|---|---|---|---|---|",
        *(f"| {k} | {v['samples_per_s']:.0f} | {v['epoch_s']:.2f} | {v['cache_build_s']:.2f} | {v['wall_s']:.1f} | {100 * v['test_acc']:.2f} |" for k, v in agg.items()),
        "",
        f"Throughput 2 processes / 1 process: **{result['throughput_ratio_2_over_1']:.2f}×**; "
        f"teacher-cache build speed-up: **{result['cache_build_speedup_2_over_1']:.2f}×**.",
        "",
    ]
    (out_stem.parent / (out_stem.name + ".md")).write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
