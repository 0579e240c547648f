"""How long the Fashion-MNIST teacher takes per training batch when it runs online
(function matching, train.augment): eager module vs the frozen TorchScript copy that
``TorchTeacher.online()`` uses. Not a test. One thread, batch 128, CPU.

    .venv/bin/python experiments/2026-11-29-online-teacher-speed/online_teacher_speed.py

Needs the teacher of benchmarks/fashion_mnist.py. Prints milliseconds per batch.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from distill.models import build
from distill.tasks.classification.teachers import TorchTeacher, load_weights

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # where fashion_mnist.py leaves its runs
TEACHER = BENCHMARKS / ".work" / "fashion_mnist" / "seed0" / "teacher.safetensors"


def per_batch_ms(fn, x: torch.Tensor, repeats: int = 5, calls: int = 20) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(x)
        times.append((time.perf_counter() - t0) / calls * 1000)
    return statistics.median(times)


def main() -> int:
    if not TEACHER.exists():
        print("run benchmarks/fashion_mnist.py first (it trains the teacher)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    module = build("cnn", (1, 28, 28), 10, {"channels": [16, 32, 64], "hidden": 384, "dropout": 0.3})
    load_weights(module, TEACHER, "teacher")
    teacher = TorchTeacher(module, 10)
    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    online = teacher.online()
    diff = float((online(x) - teacher.logits(x)).abs().max())
    eager, frozen = per_batch_ms(teacher.logits, x), per_batch_ms(online, x)
    print(f"teacher forward, batch 128, 1 thread: eager {eager:.1f} ms, frozen {frozen:.1f} ms "
          f"({eager / frozen:.1f}x); max |difference| {diff:.2g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
