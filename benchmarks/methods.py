"""Distillation methods side by side on the spine's Fashion-MNIST pair, 3 seeds each.

Not a test. Same teacher (the Fashion-MNIST benchmark's, loaded from its run) and the
same student and schedule as src/distill/recipes/fashion_mnist.yaml; only the
`distill` objective changes. For every method a small grid of its own
hyperparameters is tried with a selection seed (10) and the best by validation
accuracy (last epoch) is kept; only then are seeds 0, 1, 2 run and their
test accuracy reported. Nothing is chosen on the test set.

    .venv/bin/python benchmarks/methods.py [--quick] [--only NAME ...] [--merge] [--epochs N] [--grid METHOD=I] [--results STEM]

``--epochs`` sets every method's schedule (``--results methods_300`` keeps a longer schedule's table apart);
``--grid 'METHOD=I'`` keeps only entry I of a method's grid, for a setting already chosen on validation by a
probe (experiments/2026-11-29-methods-selection/methods_probe.py) when the whole grid would cost too much at
that schedule.

With ``--merge`` the rows measured now replace or join those of the existing
results file, and every row keeps the date and command of the run that measured it.
Function matching runs the teacher on every batch (its inputs are new views each
step), so its epochs cost several times those of the cached-logit methods.

Writes benchmarks/results/methods.{json,md} (``--results STEM``: STEM.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from distill import run  # the public API (the same call for every task)
from distill.core.fsutil import write_json, write_text
from distill.core.recipes import validate_recipe

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "methods"
RESULTS = ROOT / "results"
TEACHER = ROOT / ".work" / "fashion_mnist" / "seed0" / "teacher.safetensors"
CACHE = ROOT / ".work" / "fashion_mnist" / "cache"

# Penultimate layers: teacher FC hidden (after ReLU) and the student's last hidden ReLU.
# `distill layers src/distill/recipes/fashion_mnist.yaml` lists them.
TEACHER_PENULTIMATE = "13"
# function matching: (mixup_alpha, shift). The paper-like strong views (1.0, 2) and two milder ones: a 20-epoch
# probe on the selection seed (validation only) ranked milder views higher (BENCHMARKS.md)
FM_GRID = ((1.0, 2), (0.2, 1), (0.2, 0))


def student_penultimate(params: dict[str, Any]) -> str:
    offset = 1 if params.get("pool", 1) > 1 else 0  # AvgPool2d comes first
    return str(offset + 2 * len(params["hidden"]))  # Flatten, then (Linear, ReLU) per hidden layer


def grids(student_layer: str) -> dict[str, list[list[dict[str, Any]]]]:
    feat = {"student_layer": student_layer, "teacher_layer": TEACHER_PENULTIMATE}
    kd1 = {"loss": "kd", "weight": 1.0, "temperature": 1.0}
    return {
        "vanilla (hard labels)": [[{"loss": "ce"}]],
        "Hinton KD": [[{"loss": "kd", "weight": 1.0, "temperature": t}] for t in (0.5, 1.0, 2.0, 4.0)],
        "multi-temperature KD": [[{"loss": "kd", "weight": 1 / len(ts), "temperature": t} for t in ts]
                                 for ts in ((0.5, 1.0), (1.0, 2.0, 4.0), (1.0, 4.0))],
        "DKD": [[{"loss": "dkd", "weight": 1.0, "alpha": 1.0, "beta": b, "temperature": t}, {"loss": "ce", "weight": 1.0}]
                for b, t in ((0.5, 1.0), (2.0, 2.0), (8.0, 4.0))],
        "DIST": [[{"loss": "dist", "weight": 1.0, "beta": 1.0, "gamma": g, "temperature": 1.0}, {"loss": "ce", "weight": 1.0}]
                 for g in (1.0, 2.0)],
        "logit standardisation KD": [[{"loss": "ls_kd", "weight": w, "temperature": t}, {"loss": "ce", "weight": 1.0}]
                                     for w, t in ((1.0, 2.0), (1.0, 4.0), (0.1, 2.0))],
        "FitNets hint + KD": [[kd1, {"loss": "hint", "weight": w, **feat}] for w in (0.1, 1.0)],
        "RKD + KD": [[kd1, {"loss": "rkd", "weight": w, **feat}] for w in (0.1, 1.0)],
        "CRD + KD": [[kd1, {"loss": "crd", "weight": w, "temperature": t, **feat}] for w, t in ((0.1, 0.1), (1.0, 0.1), (1.0, 0.5))],
        "function matching (consistent teaching)": [[{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": a, "shift": sh}]
                                                    for a, sh in FM_GRID],
    }  # fmt: skip


def base_recipe(epochs: int | None) -> dict[str, Any]:
    raw = yaml.safe_load((resources.files("distill") / "recipes" / "fashion_mnist.yaml").read_text())
    raw["teacher"] = {**raw["teacher"], "checkpoint": str(TEACHER)}
    raw["teacher"].pop("train", None)
    raw["eval"] = {"baseline": False, "latency_runs": 5, "warmup_runs": 1, "throughput_runs": 2}
    raw["train"]["num_threads"] = 1
    if epochs:
        raw["train"]["epochs"] = epochs
    return raw


def one(base: dict[str, Any], terms: list[dict[str, Any]], seed: int, tag: str) -> dict[str, Any]:
    raw = json.loads(json.dumps(base))
    raw["distill"] = terms
    raw["train"]["seed"] = seed
    raw["output"] = {"dir": str(WORK / tag), "cache_dir": str(CACHE), "overwrite": True, "report": False}
    m = run(validate_recipe(raw), progress=False, console=False).metrics
    hist = m["history"]["student"]
    best_val = max(hist, key=lambda h: (h["val_acc"], -h["epoch"]))
    return {
        "seed": seed, "val_last": hist[-1]["val_acc"], "test_last": hist[-1]["test_acc"],
        "test_at_best_val": best_val["test_acc"], "best_val_epoch": best_val["epoch"],
        "epoch_seconds": statistics.median(h["seconds"] for h in hist),
    }  # fmt: skip


def runs_note(rows: list[dict[str, Any]]) -> list[str]:
    """When the rows come from more than one run (``--merge``), say which run measured which row."""
    runs: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        m = r.get("measured")
        if m:
            runs.setdefault((m["date"], m["command"]), []).append(r["method"])
    if len(runs) < 2:
        return []
    lines = ["Rows measured in separate runs (same script, settings, teacher and seeds):", ""]
    lines += [f"- {date}, `{cmd}`: {', '.join(names)}" for (date, cmd), names in sorted(runs.items())]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 1 selection seed, 1 final seed (smoke)")
    ap.add_argument("--only", nargs="*", help="method names to run (default: all)")
    ap.add_argument("--epochs", type=int, default=60, help="student epochs for every method (default 60)")
    ap.add_argument("--merge", action="store_true", help="keep the other rows of the existing results file")
    ap.add_argument("--grid", action="append", default=[], metavar="NAME=I[,J...]",
                    help="keep only these entries (0-based) of a method's grid, e.g. the settings a probe of "
                         "methods_probe.py chose on validation; with one entry nothing is selected (repeatable)")
    ap.add_argument("--results", default="methods", metavar="STEM",
                    help="write benchmarks/results/STEM.{json,md} (default methods; e.g. methods_300 for a longer schedule)")
    args = ap.parse_args(argv)
    if not TEACHER.exists():
        print("run benchmarks/fashion_mnist.py first (it trains the teacher)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    base = base_recipe(2 if args.quick else args.epochs)
    sel_seeds, final_seeds = ([10], [0]) if args.quick else ([10], [0, 1, 2])
    started = time.time()
    rows: list[dict[str, Any]] = []
    all_grids = grids(student_penultimate(base["student"]["params"]))
    keep: dict[str, list[int]] = {}
    for spec in args.grid:
        name, _, idx = spec.rpartition("=")
        try:
            keep[name] = [int(i) for i in idx.split(",")]
        except ValueError:
            keep[name] = []
        if name not in all_grids or not keep[name] or not all(0 <= i < len(all_grids[name]) for i in keep[name]):
            print(f"--grid {spec!r}: expected METHOD=I[,J...] with a method of {sorted(all_grids)} and indices "
                  f"of its grid", file=sys.stderr)  # fmt: skip
            return 2
    for name, grid in all_grids.items():
        if args.only and name not in args.only:
            continue
        grid = [grid[i] for i in keep[name]] if name in keep else grid
        selection = []
        for gi, terms in enumerate(grid):
            if len(grid) == 1:
                selection.append({"terms": terms, "val": None})
                break
            vals = [one(base, terms, s, f"sel-{name}-{gi}-s{s}".replace(" ", "_"))["val_last"] for s in sel_seeds]
            selection.append({"terms": terms, "val": statistics.fmean(vals)})
            print(f"[methods] select {name} {terms}: val {statistics.fmean(vals):.4f}", file=sys.stderr, flush=True)
        chosen = max(selection, key=lambda c: c["val"] if c["val"] is not None else 0)
        finals = [one(base, chosen["terms"], s, f"final-{name}-s{s}".replace(" ", "_")) for s in final_seeds]
        row = {"method": name, "terms": chosen["terms"], "selection": selection, "seeds": finals}
        for key in ("test_last", "test_at_best_val", "epoch_seconds", "val_last"):
            xs = [f[key] for f in finals]
            row[key] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}
        rows.append(row)
        print(f"[methods] {name}: test {100 * row['test_last']['mean']:.2f} ± {100 * row['test_last']['std']:.2f}",
              file=sys.stderr, flush=True)  # fmt: skip
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = shlex.join(["python", "benchmarks/methods.py", *(argv if argv is not None else sys.argv[1:])])
    wall = round(time.time() - started, 1)
    for r in rows:
        r["measured"] = {"date": date, "command": command.strip(), "wall_seconds_of_run": wall}
    json_path, md_path = RESULTS / f"{args.results}.json", RESULTS / f"{args.results}.md"
    if args.merge and json_path.exists():
        old = json.loads(json_path.read_text())
        now = {r["method"] for r in rows}
        kept = []
        for r in old["rows"]:
            if r["method"] not in now:
                r.setdefault("measured", {"date": old["date"], "command": old["command"].strip(),
                                          "wall_seconds_of_run": old["wall_seconds"]})  # fmt: skip
                kept.append(r)
        order = [name for name in grids("0")]
        rows = sorted(kept + rows, key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    vanilla = next((r for r in rows if r["method"].startswith("vanilla")), None)
    hinton = next((r for r in rows if r["method"] == "Hinton KD"), None)
    out = {
        "benchmark": "methods",
        "date": date,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "command": command,
        "base_recipe": base, "selection_seeds": sel_seeds, "final_seeds": final_seeds, "rows": rows,
        "wall_seconds": wall,
    }  # fmt: skip
    if vanilla and hinton:
        out["targets"] = {
            "every method beats vanilla (mean)": all(r["test_last"]["mean"] > vanilla["test_last"]["mean"] for r in rows if r is not vanilla),
            "a method beats Hinton KD by >= 0.3 points (mean)": any(
                r["test_last"]["mean"] - hinton["test_last"]["mean"] >= 0.003 for r in rows if r not in (vanilla, hinton)),
        }  # fmt: skip
    write_json(json_path, out)
    md = [
        "# Distillation methods on Fashion-MNIST (same teacher, student and schedule)",
        "",
        f"{out['date']} · {out['machine']['platform']} · torch {out['machine']['torch']} · 1 thread · wall {out['wall_seconds']:.0f} s",
        "",
        *runs_note(rows),
        f"Command: `{out['command'].strip()}`. Student: `{base['student']}`, {base['train']['epochs']} epochs. Each method's "
        f"hyperparameters chosen by mean validation accuracy over seeds {sel_seeds}; test accuracy below over seeds "
        f"{final_seeds} (mean ± sample std).",
        "",
        "| method | chosen terms | test acc, last epoch | test acc at best-val epoch | val acc | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        terms = "; ".join(", ".join(f"{k}={v}" for k, v in t.items() if k not in ("student_layer", "teacher_layer")) for t in r["terms"])
        md.append(
            f"| {r['method']} | {terms} | {100 * r['test_last']['mean']:.2f} ± {100 * r['test_last']['std']:.2f} | "
            f"{100 * r['test_at_best_val']['mean']:.2f} ± {100 * r['test_at_best_val']['std']:.2f} | "
            f"{100 * r['val_last']['mean']:.2f} | {r['epoch_seconds']['mean']:.2f} |"
        )
    md += ["", "Attention transfer is not in the table: it compares spatial attention maps, and the MLP student has none "
               "(it is tested on CNN students in tests/test_feature_losses.py).", ""]  # fmt: skip
    if "targets" in out:
        md += ["| target | met |", "|---|---|", *(f"| {k} | {'yes' if v else '**no**'} |" for k, v in out["targets"].items()), ""]
    write_text(md_path, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
