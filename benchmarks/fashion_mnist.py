"""Fashion-MNIST: CNN teacher → tiny MLP student, vanilla vs distilled, 3 seeds.

Not a test. Drives the real pipeline (`distill.tasks.classification.pipeline.run`) once per seed:
the first run trains the teacher, later runs load its weights, and every run
trains the vanilla student (hard labels) and the distilled student one after
the other in the same process, so their epoch times are measured side by side.

Writes benchmarks/results/fashion_mnist.json and .md.

    .venv/bin/python benchmarks/fashion_mnist.py            # full benchmark
    .venv/bin/python benchmarks/fashion_mnist.py --quick    # smoke run (minutes)

Needs Debian's dataset-fashion-mnist (or --data-dir with the four IDX files).
"""

from __future__ import annotations

import argparse
import json
import platform
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
from distill.data import FASHION_MNIST_DIR
from distill.core.recipes import validate_recipe
from distill.core.results import by_role

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT / ".work" / "fashion_mnist"

# The recipe distill ships (src/distill/recipes/fashion_mnist.yaml): settings chosen on the validation
# split (BENCHMARKS.md says how). The baseline has its own settings, also the best on validation.
RECIPE: dict[str, Any] = yaml.safe_load((resources.files("distill") / "recipes" / "fashion_mnist.yaml").read_text())


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def time_epochs(base: dict[str, Any], teacher_ckpt: Path, rounds: int) -> dict[str, Any]:
    """One plain epoch, then one distillation epoch from the cached teacher outputs, alternating
    ``rounds`` times in this process, same student, same data: the cost of distilling."""
    from accelerate import Accelerator

    from distill.tasks.classification.data import build_data
    from distill.tasks.classification.loop import fit
    from distill.models import build
    from distill.tasks.classification.recipe import LossTerm, TrainConfig
    from distill.tasks.classification.objective import build_objective
    from distill.tasks.classification.teachers import load_weights, module_fingerprint
    from distill.tasks.classification.teachers.cache import TeacherCache, cache_key

    recipe = validate_recipe({**base, "teacher": {**base["teacher"], "checkpoint": str(teacher_ckpt)}})
    data = build_data(recipe.data)
    teacher = build(recipe.teacher.arch, data.in_shape, data.num_classes, recipe.teacher.params)
    load_weights(teacher, teacher_ckpt, "teacher")
    key = cache_key(module_fingerprint(teacher), data.train.fingerprint(), data.preprocessing, "classification-logits-v1")
    logits = TeacherCache(WORK / "cache").load(key)
    assert logits is not None, "the benchmark runs fill the cache first"
    cfg = TrainConfig(**{**recipe.train.model_dump(), "epochs": 1})
    accel = Accelerator(cpu=True)
    plain, kd = [], []
    for r in range(rounds + 1):  # round 0 warms up and is not counted
        for kind, out in (("plain", plain if r else []), ("kd", kd if r else [])):
            model = build(recipe.student.arch, data.in_shape, data.num_classes, recipe.student.params)
            terms = [LossTerm(loss="ce")] if kind == "plain" else list(recipe.distill)
            r = fit(model, data.train, build_objective(terms), cfg, accelerator=accel, role=kind, eval_splits={},
                    teacher_logits=logits if kind == "kd" else None, progress=False)  # fmt: skip
            out.append(r.history[-1]["seconds"])
    return {"plain_s": plain, "kd_s": kd, "ratio": statistics.median(kd) / statistics.median(plain)}


def summarise(history: list[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1]
    best_val = max(history, key=lambda h: (h["val_acc"], -h["epoch"]))
    best_test = max(history, key=lambda h: (h["test_acc"], -h["epoch"]))
    return {
        "last_test": last["test_acc"],
        "last_val": last["val_acc"],
        "best_val_epoch": best_val["epoch"],
        "test_at_best_val": best_val["test_acc"],
        "best_test_epoch": best_test["epoch"],
        "best_test": best_test["test_acc"],
        "epoch_seconds": statistics.median(h["seconds"] for h in history),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data-dir", default=FASHION_MNIST_DIR)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared 2-core box)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 teacher epoch, 2 student epochs, 1 seed")
    ap.add_argument("--out", default=str(RESULTS / "fashion_mnist"), help="results path without suffix")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    base = json.loads(json.dumps(RECIPE))
    base["data"]["path"] = args.data_dir
    base["eval"]["baseline_train"]["seed"] = 0
    base["train"]["num_threads"] = args.threads
    if args.quick:
        base["teacher"]["train"]["epochs"] = 1
        base["train"]["epochs"] = 2
        base["eval"]["baseline_train"]["epochs"] = 2
        args.seeds = args.seeds[:1]
    from distill.recipe import apply_overrides

    base = apply_overrides(base, args.overrides)
    started = time.time()
    per_seed = []
    teacher_ckpt: str | None = None
    metrics0: dict[str, Any] = {}
    for i, seed in enumerate(args.seeds):
        raw = json.loads(json.dumps(base))
        raw["train"]["seed"] = seed
        raw["eval"]["baseline_train"]["seed"] = seed
        raw["output"] = {"dir": str(WORK / f"seed{seed}"), "cache_dir": str(WORK / "cache"), "overwrite": True}
        if teacher_ckpt:
            raw["teacher"]["checkpoint"] = teacher_ckpt
        recipe = validate_recipe(raw)
        print(f"[bench] seed {seed}: {'training the teacher, then ' if not teacher_ckpt else ''}vanilla and distilled students",
              file=sys.stderr, flush=True)  # fmt: skip
        result = run(recipe, progress=False, console=True)
        m = result.metrics
        if i == 0:
            teacher_ckpt = str(result.run_dir / "teacher.safetensors")
            metrics0 = m
        vanilla = summarise(m["history"]["baseline"])
        distilled = summarise(m["history"]["student"])
        # the same student on hard labels with the distilled student's own schedule (60 epochs, wd 0.05)
        same = json.loads(json.dumps(raw))
        same["teacher"]["checkpoint"] = teacher_ckpt
        same["distill"] = [{"loss": "ce"}]
        same["eval"]["baseline"] = False
        same["output"]["dir"] = str(WORK / f"seed{seed}-ce-same-schedule")
        same_m = run(validate_recipe(same), progress=False, console=False).metrics
        per_seed.append({"seed": seed, "vanilla": vanilla, "distilled": distilled,
                         "vanilla_same_schedule": summarise(same_m["history"]["student"]),
                         "teacher_outputs": m["teacher_outputs"]["cache"]})  # fmt: skip

    teacher = by_role(metrics0)["teacher"]
    student_cost = by_role(metrics0)["student"]["cost"]
    teacher_cost = teacher["cost"]
    t_hist = metrics0["history"]["teacher"]
    agg: dict[str, Any] = {}
    for kind in ("vanilla", "vanilla_same_schedule", "distilled"):
        agg[kind] = {}
        for key in ("last_test", "test_at_best_val", "best_test", "epoch_seconds"):
            mu, sd = mean_std([s[kind][key] for s in per_seed])
            agg[kind][key] = {"mean": mu, "std": sd}
    timing = time_epochs(base, Path(teacher_ckpt or ""), rounds=1 if args.quick else 5)
    ratio = timing["ratio"]
    t_acc = teacher["test_acc"]
    d_mu, d_sd = agg["distilled"]["last_test"]["mean"], agg["distilled"]["last_test"]["std"]
    v_mu, v_sd = agg["vanilla"]["last_test"]["mean"], agg["vanilla"]["last_test"]["std"]
    targets = {
        "teacher >= 92% test": t_acc >= 0.92,
        "student MACs <= 30k and <= 1% of teacher": student_cost["macs"] <= 30_000
        and student_cost["flops"] <= 0.01 * teacher_cost["flops"],
        "distilled >= 95% of teacher (mean, last epoch)": d_mu >= 0.95 * t_acc,
        "distilled - vanilla (own best schedule) > max(std)": (d_mu - v_mu) > max(d_sd, v_sd),
        "distilled - vanilla (distilled's schedule) > max(std)": (
            d_mu - agg["vanilla_same_schedule"]["last_test"]["mean"]
        ) > max(d_sd, agg["vanilla_same_schedule"]["last_test"]["std"]),
        "distillation epoch (cached teacher) <= 1.10x vanilla": ratio <= 1.10,
    }
    out = {
        "benchmark": "fashion_mnist",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": torch.get_num_threads(), "torch": torch.__version__},  # fmt: skip
        "command": "python benchmarks/fashion_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipe": base,
        "seeds": args.seeds,
        "teacher": {"val_acc": teacher["val_acc"], "test_acc": t_acc, "cost": teacher_cost,
                    "epoch_seconds": statistics.median(h["seconds"] for h in t_hist) if t_hist else None,
                    "epochs": len(t_hist)},  # fmt: skip
        "student_cost": student_cost,
        "per_seed": per_seed,
        "aggregate": agg,
        "retention": d_mu / t_acc,
        "cost_reduction": 1 - student_cost["flops"] / teacher_cost["flops"],
        "kd_epoch_time_ratio": ratio,
        "epoch_timing": timing,
        "targets": targets,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_json(Path(args.out).with_suffix(".json"), out)
    write_text(Path(args.out).with_suffix(".md"), render(out))
    print(render(out))
    # a --quick run trains for 1-2 epochs: its targets are printed, not judged (it checks that the suite runs)
    return 0 if args.quick or all(targets.values()) else 1


def render(r: dict[str, Any]) -> str:
    def pct(d: dict[str, float]) -> str:
        return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"

    a = r["aggregate"]
    t = r["teacher"]
    sc, tc = r["student_cost"], t["cost"]
    lines = [
        "# Fashion-MNIST: CNN teacher vs distilled MLP student",
        "",
        f"{r['date']} · {r['machine']['platform']} · torch {r['machine']['torch']} · threads {r['machine']['cpus']} · "
        f"seeds {r['seeds']} · wall {r['wall_seconds']:.0f} s",
        "",
        f"Command: `{r['command'].strip()}`",
        "",
        "| model | params | MACs/sample | test acc (last epoch) | test acc at best-val epoch | best test (any epoch) | s/epoch |",
        "|---|---|---|---|---|---|---|",
        f"| teacher (CNN) | {tc['parameters']:,} | {tc['macs']:,} | {100 * t['test_acc']:.2f} | — | — | {t['epoch_seconds'] or 0:.2f} |",
    ]
    for kind, label in (("vanilla", "student, hard labels (its own best schedule)"),
                        ("vanilla_same_schedule", "student, hard labels (the distilled student's schedule)"),
                        ("distilled", "student, distilled")):  # fmt: skip
        x = a[kind]
        lines.append(
            f"| {label} | {sc['parameters']:,} | {sc['macs']:,} | {pct(x['last_test'])} | {pct(x['test_at_best_val'])} | "
            f"{pct(x['best_test'])} | {x['epoch_seconds']['mean']:.3f} |"
        )
    lines += [
        "",
        f"Mean ± sample std over {len(r['seeds'])} seeds. Retention (distilled / teacher, last epoch): "
        f"**{100 * r['retention']:.1f}%**; cost cut (1 − student/teacher FLOPs): **{100 * r['cost_reduction']:.2f}%**; "
        f"distillation epoch with cached teacher outputs / plain epoch: **{r['kd_epoch_time_ratio']:.3f}×** "
        f"(median of {len(r['epoch_timing']['kd_s'])} alternating epochs each: "
        f"{statistics.median(r['epoch_timing']['plain_s']):.3f} s vs {statistics.median(r['epoch_timing']['kd_s']):.3f} s).",
        "",
        f"Latency batch 1 (p50): teacher {tc['latency_ms_p50']:.3f} ms, student {sc['latency_ms_p50']:.4f} ms "
        f"({tc['latency_ms_p50'] / sc['latency_ms_p50']:.1f}×); throughput batch {tc['throughput_batch']}: teacher "
        f"{tc['throughput']:.0f}/s, student {sc['throughput']:.0f}/s ({sc['throughput'] / tc['throughput']:.0f}×). Eager PyTorch.",
        "",
        "Per seed (test acc, last epoch): "
        + "; ".join(
            f"seed {s['seed']}: vanilla {100 * s['vanilla']['last_test']:.2f}, distilled {100 * s['distilled']['last_test']:.2f}"
            for s in r["per_seed"]
        ),
        "",
        "| target | met |",
        "|---|---|",
        *(f"| {k} | {'yes' if v else '**no**'} |" for k, v in r["targets"].items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
