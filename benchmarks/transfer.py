"""Hinton's two transfer experiments, through the real pipeline (recipe `transfer` section).

Not a test. (a) Omitted class: the students' training split has no image of one
class at all (the teacher saw them); accuracy on that class is reported without
and with the bias correction of Hinton et al. (one bias added to the class's
logit, tuned on the validation split). On digits (class 3, as in the paper's
MNIST experiment) and on Fashion-MNIST (class 3, Dress). (b) Scarce labels: the
students keep the hard label of only 5% of the Fashion-MNIST training images;
the distilled student also learns the teacher's soft labels on all of them (an
unlabeled transfer set), the baseline trains on the 5% alone.

Temperatures and weights were fixed before running (T=20 as in the paper for
the omitted class; the spine's T=1 for scarce labels): nothing was tuned on the
test set. Writes benchmarks/results/transfer.{json,md}.

    .venv/bin/python benchmarks/transfer.py [--seeds 0 1 2] [--skip-fashion]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from distill import run  # the public API (the same call for every task)
from distill.core.fsutil import write_json, write_text
from distill.core.recipes import validate_recipe
from distill.core.results import by_role

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "transfer"
RESULTS = ROOT / "results"
FASHION_TEACHER = ROOT / ".work" / "fashion_mnist" / "seed0" / "teacher.safetensors"
FASHION_CACHE = ROOT / ".work" / "fashion_mnist" / "cache"

FAST_EVAL = {"latency_runs": 20, "warmup_runs": 5, "throughput_runs": 5}

DIGITS_OMIT = {
    "name": "digits-omit-3",
    "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.25, "seed": 0},
    "teacher": {"arch": "cnn", "params": {"channels": [32, 64, 128], "hidden": 256, "dropout": 0.3},
                "train": {"epochs": 30, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "seed": 0}},
    "student": {"arch": "mlp", "params": {"hidden": [32]}},
    "transfer": {"exclude_classes": [3]},
    "distill": [{"loss": "kd", "weight": 1.0, "temperature": 20.0}],
    "train": {"epochs": 60, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.01}},
    "eval": {"baseline": True, **FAST_EVAL},
    "output": {"report": False},
}  # fmt: skip

FASHION_BASE = {
    "data": {"source": "fashion_mnist", "val_fraction": 5000 / 60000, "seed": 0},
    "teacher": {"arch": "cnn", "params": {"channels": [16, 32, 64], "hidden": 384, "dropout": 0.3},
                "checkpoint": str(FASHION_TEACHER)},
    "student": {"arch": "mlp", "params": {"hidden": [37]}},
    "eval": {"baseline": True, **FAST_EVAL},
    "output": {"report": False, "cache_dir": str(FASHION_CACHE)},
}  # fmt: skip

FASHION_OMIT = {
    **FASHION_BASE,
    "name": "fashion-omit-dress",
    "transfer": {"exclude_classes": [3]},
    "distill": [{"loss": "kd", "weight": 1.0, "temperature": 20.0}],
    "train": {"epochs": 30, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05}},
}

FASHION_SCARCE = {
    **FASHION_BASE,
    "name": "fashion-5pct-labels",
    "transfer": {"labeled_fraction": 0.05, "seed": 0},
    "distill": [{"loss": "kd", "weight": 1.0, "temperature": 1.0}, {"loss": "ce", "weight": 1.0}],
    "train": {"epochs": 30, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05}},
    # the baseline has 2,750 labeled images: more epochs for the same number of steps' worth of learning
    "eval": {"baseline": True, **FAST_EVAL,
             "baseline_train": {"epochs": 100, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05}}},
}  # fmt: skip


def one(raw: dict[str, Any], seed: int) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))
    raw["train"]["seed"] = seed
    if raw["eval"].get("baseline_train"):
        raw["eval"]["baseline_train"]["seed"] = seed
    raw["output"] = {**raw.get("output", {}), "dir": str(WORK / f"{raw['name']}-s{seed}"), "overwrite": True}
    raw["output"].setdefault("cache_dir", str(WORK / "cache"))
    m = run(validate_recipe(raw), progress=False, console=False).metrics
    out = {
        "seed": seed,
        "teacher_test": by_role(m)["teacher"]["test_acc"],
        "baseline_test": by_role(m)["baseline"]["test_acc"],
        "student_test": by_role(m)["student"]["test_acc"],
        "train_samples": m["transfer"]["train_samples"],
        "labeled_samples": m["transfer"]["labeled_samples"],
    }
    for role, r in m["transfer"]["bias_correction"].items():
        out[f"{role}_class_before"] = r["test_acc_on_classes_before"]
        out[f"{role}_class_after"] = r["test_acc_on_classes_after"]
        out[f"{role}_bias"] = r["bias"]
        out[f"{role}_overall_after"] = r["test_acc_after"]
    print(f"[transfer] {raw['name']} seed {seed}: {out}", file=sys.stderr, flush=True)
    return out


def agg(rows: list[dict[str, Any]], key: str) -> str:
    xs = [100 * r[key] for r in rows]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.1f} ± {sd:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fashion-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--skip-fashion", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "transfer"), help="results path without suffix")
    args = ap.parse_args(argv)
    out_stem = Path(args.out)
    torch.set_num_threads(1)
    started = time.time()
    results: dict[str, list[dict[str, Any]]] = {"digits_omit": [one(DIGITS_OMIT, s) for s in args.seeds]}
    if not args.skip_fashion:
        if not FASHION_TEACHER.exists():
            print("run benchmarks/fashion_mnist.py first (it trains the Fashion-MNIST teacher)", file=sys.stderr)
            return 2
        results["fashion_omit"] = [one(FASHION_OMIT, s) for s in args.fashion_seeds]
        results["fashion_scarce"] = [one(FASHION_SCARCE, s) for s in args.fashion_seeds]
    out = {
        "benchmark": "transfer",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "command": "python benchmarks/transfer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipes": {"digits_omit": DIGITS_OMIT, "fashion_omit": FASHION_OMIT, "fashion_scarce": FASHION_SCARCE},
        "results": results,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_json(out_stem.with_name(out_stem.name + ".json"), out)
    lines = [
        "# Hinton's transfer experiments",
        "",
        f"{out['date']} · {out['machine']['platform']} · torch {out['machine']['torch']} · 1 thread · wall {out['wall_seconds']:.0f} s",
        "",
        f"Command: `{out['command'].strip()}`. Mean ± sample std over seeds (student initialisation and data order).",
        "",
        "## (a) One class omitted from the students' training split",
        "",
        "| data | omitted class | seeds | teacher test acc | hard-label student on the class: before → after bias | distilled student on the class: before → after bias | distilled overall after |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label, cls in (("digits_omit", "digits", "3"), ("fashion_omit", "Fashion-MNIST", "3 (Dress)")):
        rows = results.get(key)
        if not rows:
            continue
        lines.append(
            f"| {label} | {cls} | {len(rows)} | {agg(rows, 'teacher_test')} | {agg(rows, 'baseline_class_before')} → "
            f"{agg(rows, 'baseline_class_after')} | {agg(rows, 'student_class_before')} → {agg(rows, 'student_class_after')} | "
            f"{agg(rows, 'student_overall_after')} |"
        )
    if results.get("fashion_scarce"):
        rows = results["fashion_scarce"]
        lines += [
            "",
            "## (b) Scarce labels: hard labels for 5% of the training images",
            "",
            "| seeds | labeled images | baseline (5% hard labels only) | distilled (5% hard + soft labels on all) | gain | teacher |",
            "|---|---|---|---|---|---|",
            f"| {len(rows)} | {rows[0]['labeled_samples']:,} of {rows[0]['train_samples']:,} | {agg(rows, 'baseline_test')} | "
            f"{agg(rows, 'student_test')} | {statistics.fmean(100 * (r['student_test'] - r['baseline_test']) for r in rows):+.1f} pts | "
            f"{agg(rows, 'teacher_test')} |",
        ]
    lines.append("")
    write_text(out_stem.with_name(out_stem.name + ".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
