"""Per-layer int8 sensitivity: how much dynamic int8 in each ``nn.Linear`` alone moves a model's output.

:func:`sensitivity_int8` measures every Linear layer alone in int8, then
greedily puts the most sensitive ones back in float until a quality bound
holds, and returns what :func:`~distill.compress.quantize.dynamic_int8` makes
with those layers kept float, with a :class:`SensitivityReport`. Works on any
module with named ``nn.Linear`` layers (e.g. a Hugging Face encoder), through
a ``run_model`` callable.

The quantizing itself (and the torch.ao plumbing) is in
:mod:`distill.compress.quantize`, which re-exports the names here.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from distill.compress.quantize import (
    _ao,
    _check_cpu,
    _check_names,
    _dynamic_qconfig,
    _linear_names,
    quiet_torch_ao,
    dynamic_int8,
)
from distill.errors import ModelError


def cosine_similarity(reference: Tensor, other: Tensor) -> float:
    """Mean over samples of the cosine similarity of each sample's flattened output (1.0 = same direction)."""
    a = reference.detach().float().reshape(len(reference), -1)
    b = other.detach().float().reshape(len(other), -1)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).mean())


@dataclass
class SensitivityReport:
    """What :func:`sensitivity_int8` measured and chose (``metric``: higher is closer to float)."""

    layers: list[dict[str, Any]]  # [{"layer": name, "metric_alone": m}], most sensitive first
    keep_float: list[str]  # Linear layers left in float, in the order they were chosen
    all_int8_metric: float  # every Linear int8
    final_metric: float  # the returned model
    bound: float
    met: bool  # final_metric >= bound
    per_channel: bool
    steps: list[dict[str, Any]] = field(default_factory=list)  # greedy steps: [{"keep_float": [...], "metric": m}]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _quantize_one(linear: nn.Module, per_channel: bool) -> nn.Module:
    ao = _ao()
    holder = nn.Sequential(copy.deepcopy(linear)).eval()
    with quiet_torch_ao():
        return ao.quantize_dynamic(holder, {nn.Linear: _dynamic_qconfig(per_channel)}, dtype=torch.qint8)[0]


def _as_runner(run_model: Callable[[nn.Module], Tensor] | Tensor) -> Callable[[nn.Module], Tensor]:
    """``run_model`` itself, or for a Tensor of inputs ``lambda m: m(inputs)``."""
    if not isinstance(run_model, Tensor):
        return run_model
    inputs = run_model

    def run(m: nn.Module) -> Tensor:
        return m(inputs)

    return run


def _layers_to_measure(model: nn.Module, bound: float, layers: Sequence[str] | None) -> list[str]:
    """The argument checks; the names of the Linear layers to measure."""
    _check_cpu(model, "sensitivity_int8")
    if not math.isfinite(bound):
        raise ModelError(f"sensitivity_int8: bound must be a finite number (got {bound})")
    names = _check_names(model, layers, "sensitivity_int8 layers") if layers is not None else _linear_names(model)
    if not names:
        raise ModelError("sensitivity_int8: the model has no nn.Linear layer to quantize.")
    return names


class _Bench:
    """One working copy of the model whose listed Linear layers can be swapped between float and int8.

    Holds the float output (``reference``) and one int8 copy of each layer, so
    that a measurement costs one run of the model and no copy of it.
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        run: Callable[[nn.Module], Tensor],
        metric: Callable[[Tensor, Tensor], float],
        per_channel: bool,
    ):
        self.work = copy.deepcopy(model).eval()
        self.run, self.metric = run, metric
        with torch.no_grad():
            self.reference = run(self.work)
        self.originals = {n: self.work.get_submodule(n) for n in names}
        self.quantized = {n: _quantize_one(self.originals[n], per_channel) for n in names}

    def to_int8(self, name: str) -> None:
        _set_submodule(self.work, name, self.quantized[name])

    def to_float(self, name: str) -> None:
        _set_submodule(self.work, name, self.originals[name])

    def measure(self) -> float:
        with torch.no_grad():
            return float(self.metric(self.reference, self.run(self.work)))

    def release(self) -> None:
        """Free the layer copies (the working copy's float layers) before the final model is built."""
        self.originals.clear()
        self.quantized.clear()


def _metrics_alone(bench: _Bench, names: list[str]) -> list[dict[str, Any]]:
    """Step 1: each layer alone in int8; rows ``{"layer", "metric_alone"}``, most sensitive first."""
    alone = []
    for n in names:
        bench.to_int8(n)
        alone.append({"layer": n, "metric_alone": bench.measure()})
        bench.to_float(n)
    alone.sort(key=lambda r: r["metric_alone"])
    return alone


def _greedy_keep_float(
    bench: _Bench, names: list[str], alone: list[dict[str, Any]], bound: float
) -> tuple[float, list[str], list[dict[str, Any]], float]:
    """Step 2: all int8, then back to float by sensitivity until ``bound``; (all_int8, keep, steps, final)."""
    for n in names:
        bench.to_int8(n)
    current = all_int8 = bench.measure()
    keep: list[str] = []
    steps = [{"keep_float": [], "metric": current}]
    for row in alone:
        if current >= bound:
            break
        keep.append(row["layer"])
        bench.to_float(row["layer"])
        current = bench.measure()
        steps.append({"keep_float": list(keep), "metric": current})
    return all_int8, keep, steps, current


def sensitivity_int8(
    model: nn.Module,
    run_model: Callable[[nn.Module], Tensor] | Tensor,
    *,
    bound: float,
    metric: Callable[[Tensor, Tensor], float] = cosine_similarity,
    per_channel: bool = True,
    layers: Sequence[str] | None = None,
) -> tuple[nn.Module, SensitivityReport]:
    """Dynamic int8 with the most quantization-sensitive Linear layers kept in float.

    ``run_model(m) -> Tensor`` runs a model on fixed evaluation inputs and
    returns its output (for a Hugging Face model, e.g.
    ``lambda m: m(**batch).logits``); a Tensor of inputs stands for
    ``lambda m: m(inputs)``. ``metric(out_float, out_quant)`` must be higher
    when the quantized output is closer (default: mean cosine similarity).

    1. For each Linear (``layers``, default all named ``nn.Linear`` modules;
       Linear layers not listed stay float throughout) alone in int8:
       ``metric_alone``.
    2. All of them int8; while the metric is below ``bound``, the layer with
       the lowest ``metric_alone`` among those still int8 goes back to float.

    Returns the model (what ``dynamic_int8(model, keep_float=report.keep_float)``
    returns) and a :class:`SensitivityReport`. The model is run
    ``len(layers) + 2 + len(keep_float)`` times, swapping copies of single
    layers in and out of one working copy (no copy of the whole model per layer).
    """
    names = _layers_to_measure(model, bound, layers)
    bench = _Bench(model, names, _as_runner(run_model), metric, per_channel)
    alone = _metrics_alone(bench, names)
    all_int8, keep, steps, current = _greedy_keep_float(bench, names, alone, bound)
    bench.release()

    excluded = [n for n in _linear_names(model) if n not in names]
    final = dynamic_int8(model, per_channel=per_channel, keep_float=[*excluded, *keep])
    report = SensitivityReport(
        layers=alone,
        keep_float=keep,
        all_int8_metric=all_int8,
        final_metric=current,
        bound=float(bound),
        met=current >= bound,
        per_channel=bool(per_channel),
        steps=steps,
    )
    return final, report


__all__ = ["SensitivityReport", "cosine_similarity", "sensitivity_int8"]
