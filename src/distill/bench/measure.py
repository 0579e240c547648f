"""Parameters, size on disk, FLOPs, latency and throughput of a model on this CPU.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
sample (a multiply-accumulate counts as 2 FLOPs; MACs = FLOPs / 2). Latency is
the median (and p95) of many timed batch-1 calls after a warm-up; throughput is
samples per second at a large batch. Teacher and student are measured in the
same process with the same thread count, so their ratio is meaningful.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn


@dataclass
class ModelCost:
    """Costs of one model; None where a quantity cannot be measured (e.g. the FLOPs of an ONNX
    or scikit-learn teacher, or anything of a teacher known only by its precomputed outputs)."""

    parameters: int | None
    size_bytes: int | None
    flops: int | None  # per sample
    latency_ms_p50: float | None  # batch 1
    latency_ms_p95: float | None
    throughput: float | None  # samples/s at throughput_batch
    throughput_batch: int
    threads: int

    @property
    def macs(self) -> int | None:
        return None if self.flops is None else self.flops // 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["macs"] = self.macs
        return d


def count_flops(model: nn.Module, in_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one sample."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *in_shape))
        return int(counter.get_total_flops())
    finally:
        model.train(was)


def measure_callable(
    fn: Callable[[torch.Tensor], object] | None,
    in_shape: Sequence[int],
    *,
    file_path: str | Path | None = None,
    latency_runs: int = 200,
    warmup_runs: int = 20,
    throughput_batch: int = 256,
    throughput_runs: int = 20,
) -> ModelCost:
    """Latency and throughput of a teacher that is not a torch module (ONNX, scikit-learn):
    ``fn(x)`` on random inputs; parameters and FLOPs are unknown. ``fn=None``: nothing can run."""
    size = os.path.getsize(file_path) if file_path and Path(file_path).is_file() else None
    if fn is None:
        return ModelCost(None, size, None, None, None, None, throughput_batch, torch.get_num_threads())
    x1 = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(0))
    xb = torch.randn(throughput_batch, *in_shape, generator=torch.Generator().manual_seed(1))
    lat = _time_fn(fn, x1, latency_runs, warmup_runs)
    big = _time_fn(fn, xb, throughput_runs, max(2, warmup_runs // 5))
    lat_sorted = sorted(lat)
    return ModelCost(
        parameters=None,
        size_bytes=size,
        flops=None,
        latency_ms_p50=statistics.median(lat),
        latency_ms_p95=lat_sorted[min(len(lat_sorted) - 1, int(round(0.95 * (len(lat_sorted) - 1))))],
        throughput=throughput_batch * len(big) / (sum(big) / 1e3),
        throughput_batch=throughput_batch,
        threads=torch.get_num_threads(),
    )


def _time_fn(fn: Callable[[torch.Tensor], object], x: torch.Tensor, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def measure_model(
    model: nn.Module,
    in_shape: Sequence[int],
    *,
    weights_path: str | Path | None = None,
    latency_runs: int = 200,
    warmup_runs: int = 20,
    throughput_batch: int = 256,
    throughput_runs: int = 20,
) -> ModelCost:
    """The costs of a torch module: timed in eval mode without autograd, plus its parameters and FLOPs."""
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            cost = measure_callable(
                model, in_shape, file_path=weights_path, latency_runs=latency_runs, warmup_runs=warmup_runs,
                throughput_batch=throughput_batch, throughput_runs=throughput_runs,
            )  # fmt: skip
    finally:
        model.train(was)
    cost.parameters = sum(p.numel() for p in model.parameters())
    cost.flops = count_flops(model, in_shape)
    return cost
