"""Deployment: teacher → distilled → pruned → int8 → ONNX fp32 → ONNX int8, measured side by side.

Not a test. Starts from the Fashion-MNIST benchmark's run (benchmarks/fashion_mnist.py,
seed 0), copies it, and runs the real commands on the copy: `distill compress`
(structured pruning + a 3-epoch recovery distillation, dynamic int8), `distill export`
(ONNX fp32 with parity check, ONNX int8 with ONNX Runtime's quantizer) and
`distill bench` (one process, 1 thread for every runtime). A second copy is pruned
by 50% without recovery, only to show what structured pruning does to latency.
Writes benchmarks/results/deploy.{json,md} (or --out).

    .venv/bin/python benchmarks/deploy.py [--amount 0.25]
    .venv/bin/python benchmarks/deploy.py --quick --out /tmp/bench_quick/deploy   # smoke run (1 recovery epoch)
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from distill.core.logs import setup_logging
from distill.api import bench as bench_run
from distill.api import compress as compress_run
from distill.api import export as export_run
from distill.tasks.classification.bench import render_bench
from distill.core.fsutil import write_json, write_text

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / ".work" / "fashion_mnist" / "seed0"
WORK = ROOT / ".work" / "deploy"
RESULTS = ROOT / "results"


def fresh_copy(name: str) -> Path:
    target = WORK / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("checkpoints", "compressed", "export", "bench*", "tensorboard"))
    # the copy keeps the recipe; its output.dir must point at the copy
    return target


def call_costs(files: dict[str, Path], rounds: int = 21, calls: int = 200) -> dict[str, dict[str, float]]:
    """Batch-1 latency (µs, median of interleaved rounds) of each ONNX file under two calling conventions:
    Python's ``session.run`` with a feed dict (what the table used before), and ``OrtRunner`` (IOBinding with
    preallocated buffers, the new input copied in each call), which `distill bench` uses."""
    import statistics
    import time

    from distill.export import OrtRunner, onnx_session

    calls_by: dict[tuple[str, str], object] = {}
    for name, path in files.items():
        sess = onnx_session(path, threads=1)
        feed = sess.get_inputs()[0].name
        calls_by[(name, "session.run")] = lambda x, s=sess, n=feed: torch.from_numpy(s.run(None, {n: x.detach().numpy()})[0])
        calls_by[(name, "OrtRunner")] = OrtRunner(sess)
    shape = [1 if d is None or isinstance(d, str) else d for d in sess.get_inputs()[0].shape]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    times: dict[tuple[str, str], list[float]] = {k: [] for k in calls_by}
    for _ in range(rounds):
        for key, fn in calls_by.items():
            for _ in range(20):
                fn(x)
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn(x)
            times[key].append((time.perf_counter_ns() - t0) / calls / 1e3)
    out: dict[str, dict[str, float]] = {}
    for (name, conv), ts in times.items():
        out.setdefault(conv, {})[name] = statistics.median(ts)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--amount", type=float, default=0.25, help="structured pruning of the main chain")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 recovery epoch, fewer call-cost rounds (its figures are not quoted anywhere)")
    ap.add_argument("--out", default=str(RESULTS / "deploy"), help="results path without suffix")
    args = ap.parse_args(argv)
    recovery = 1 if args.quick else 3
    if not (SOURCE / "student.safetensors").exists():
        print("run benchmarks/fashion_mnist.py first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    setup_logging(None)
    cache = str(ROOT / ".work" / "fashion_mnist" / "cache")
    main_dir = fresh_copy("chain")
    sets = ["compress.prune.kind=structured", f"compress.prune.amount={args.amount}", f"compress.prune.recovery_epochs={recovery}",
            "compress.quantize.kind=dynamic", f"output.cache_dir={cache}"]  # fmt: skip
    compress = compress_run(main_dir, sets, progress=False)
    # static per-tensor int8: the fastest int8 form at batch 1 in benchmarks/results/int8_variants.md
    export = export_run(main_dir, ["onnx", "torch"], [f"output.cache_dir={cache}", "export.onnx_int8_static=true",
                                                      "export.onnx_int8_per_channel=false"])  # fmt: skip
    bench = bench_run(main_dir, threads=1)

    # what 50% structured pruning does to latency (no recovery: only the speed is the point here)
    p50_dir = fresh_copy("prune50")
    compress_run(p50_dir, ["compress.prune.kind=structured", "compress.prune.amount=0.5", "compress.prune.recovery_epochs=0",
                           f"output.cache_dir={cache}"], progress=False)  # fmt: skip
    b50 = bench_run(p50_dir, threads=1, memory=False)

    calls = call_costs({"teacher": main_dir / "bench" / "teacher.onnx", "student": main_dir / "export" / "student.int8.onnx"},
                       **({"rounds": 3, "calls": 50} if args.quick else {}))

    st = {(s["stage"], s["runtime"]): s for s in bench["stages"]}
    t_onnx, t_torch = st[("teacher", "ONNX Runtime")], st[("teacher", "PyTorch")]
    fp32, q8 = st[("ONNX fp32", "ONNX Runtime")], st[("ONNX int8", "ONNX Runtime")]
    d50 = {s["stage"]: s for s in b50["stages"] if s["runtime"] == "PyTorch"}
    targets = {
        "ONNX int8 loses <= 0.5 points vs the fp32 student": (fp32["test_acc"] - q8["test_acc"]) <= 0.005,
        "ONNX int8 file >= 3.5x smaller than fp32": fp32["size_bytes"] / q8["size_bytes"] >= 3.5,
        "final student >= 50x teacher throughput at batch 256 (ONNX Runtime both)": q8["throughput"] / t_onnx["throughput"] >= 50,
        "final student >= 10x lower latency at batch 1 (ONNX Runtime both)": t_onnx["latency_ms_p50"] / q8["latency_ms_p50"] >= 10,
        "final student keeps >= 95% of the teacher's accuracy": q8["test_acc"] / t_onnx["test_acc"] >= 0.95,
        "50% structured pruning lowers measured latency (PyTorch, batch 256)": d50["pruned"]["throughput"] > d50["distilled"]["throughput"],
    }  # fmt: skip
    out = {
        "benchmark": "deploy",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "command": "python benchmarks/deploy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "compress": compress, "export": export, "bench": bench, "prune50_bench": b50,
        "ratios": {
            "int8_vs_fp32_points": 100 * (fp32["test_acc"] - q8["test_acc"]),
            "int8_size_ratio": fp32["size_bytes"] / q8["size_bytes"],
            "throughput_vs_teacher_onnx": q8["throughput"] / t_onnx["throughput"],
            "latency_vs_teacher_onnx": t_onnx["latency_ms_p50"] / q8["latency_ms_p50"],
            "throughput_vs_teacher_torch": q8["throughput"] / t_torch["throughput"],
            "latency_vs_teacher_torch": t_torch["latency_ms_p50"] / q8["latency_ms_p50"],
            "prune50_throughput_gain": d50["pruned"]["throughput"] / d50["distilled"]["throughput"],
            "prune50_latency_gain": d50["distilled"]["latency_ms_p50"] / d50["pruned"]["latency_ms_p50"],
        },
        "call_costs_us": calls,
        "targets": targets,
    }  # fmt: skip
    write_json(Path(args.out).with_suffix(".json"), out)
    r = out["ratios"]
    md = [
        "# Deployment: every stage side by side",
        "",
        f"{out['date']} · {out['machine']['platform']} · torch {out['machine']['torch']} · 1 thread for every runtime",
        "",
        f"Command: `{out['command'].strip()}`. Source: the Fashion-MNIST benchmark's seed-0 run; structured pruning "
        f"{100 * args.amount:.0f}% + {recovery} recovery epoch{'s' if recovery != 1 else ''}, dynamic int8 (PyTorch), ONNX int8 (ONNX Runtime's "
        "quantizer, static QDQ, per-tensor weights, calibrated on 512 training images).",
        "",
        render_bench(bench),
        f"Final student (ONNX int8) vs teacher, both in ONNX Runtime: **{r['throughput_vs_teacher_onnx']:.0f}×** throughput at "
        f"batch 256, **{r['latency_vs_teacher_onnx']:.1f}×** lower latency at batch 1 (vs the PyTorch teacher: "
        f"{r['throughput_vs_teacher_torch']:.0f}× and {r['latency_vs_teacher_torch']:.1f}×). int8 vs fp32 ONNX: "
        f"{r['int8_vs_fp32_points']:+.2f} points of accuracy lost, file {r['int8_size_ratio']:.2f}× smaller.",
        "",
        "At batch 1 the student's compute is a few microseconds, less than what Python's `session.run` spends per call "
        "(the feed dict, wrapping the input, allocating the output). `distill bench` calls ONNX files through "
        "`distill.export.OrtRunner` (IOBinding with preallocated buffers, the new input copied in on every call), teacher "
        "and student alike, as an app calling ONNX Runtime repeatedly would. Both conventions, batch 1, interleaved "
        "rounds in this run (µs per call, median):",
        "",
        "| call | teacher ONNX | student ONNX int8 | teacher / student |",
        "|---|---|---|---|",
        *(f"| `{conv}` | {v['teacher']:.2f} | {v['student']:.2f} | {v['teacher'] / v['student']:.2f}× |" for conv, v in calls.items()),
        "",
        f"50% structured pruning (no recovery), PyTorch: throughput {r['prune50_throughput_gain']:.2f}×, "
        f"latency at batch 1 {r['prune50_latency_gain']:.2f}× lower:",
        "",
        render_bench(b50),
        "| target | met |",
        "|---|---|",
        *(f"| {k} | {'yes' if v else '**no**'} |" for k, v in targets.items()),
        "",
    ]
    write_text(Path(args.out).with_suffix(".md"), "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
