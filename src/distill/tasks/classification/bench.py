"""``bench_run``: every stage of a finished classification run measured side by side in one process: teacher
(PyTorch and ONNX), distilled, pruned, int8, ONNX fp32, ONNX int8 → ``bench.json``, ``bench.md``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from distill.core.fsutil import write_json, write_text
from distill.tasks.classification.recipe import Recipe
from distill.tasks.classification.builders import load_run_teacher
from distill.tasks.classification.stages import _accuracy, _builder, _load_student, _recipe

log = logging.getLogger("distill")


def bench_run(run_dir: str | Path, *, memory: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Every stage of ``run_dir`` measured side by side in this process (same threads, same data); torch's
    thread count comes back as it was."""
    from distill.core.context import torch_threads
    from distill.tasks.classification.data import build_data

    from distill.tasks.classification.run_files import check_run_files

    run_dir = Path(run_dir)
    recipe = _recipe(run_dir)
    check_run_files(run_dir, "bench")
    with torch_threads(threads):
        bench = _Bench(build_data(recipe.data), recipe.eval, torch.get_num_threads(), memory, run_dir / "bench")
        _bench_teacher(bench, run_dir, recipe)
        _bench_student(bench, run_dir, recipe)
    stages = bench.stages
    t_acc = next((s["test_acc"] for s in stages if s["stage"] == "teacher"), None)
    for s in stages:
        s["retention"] = s["test_acc"] / t_acc if t_acc else None
    result = {"threads": bench.threads, "stages": stages, "platform": __import__("platform").platform()}
    write_json(run_dir / "bench.json", result)
    write_text(run_dir / "bench.md", render_bench(result))
    return result


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class _Bench:
    """The rows of one bench: each model measured the same way (latency, throughput, size, memory, accuracy)."""

    def __init__(self, data: Any, eval_cfg: Any, threads: int, memory: bool, work: Path) -> None:
        self.data, self.e, self.threads, self.memory, self.work = data, eval_cfg, threads, memory, work
        self.stages: list[dict[str, Any]] = []

    def ort(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        """An ONNX Runtime session with bound buffers: the per-call cost an app pays, not Python's session.run."""
        from distill.export.onnx import OrtRunner, onnx_session

        return OrtRunner(onnx_session(path, threads=self.threads))

    def raw_scored(self, path: Path, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """An exported file that takes raw samples is scored on raw samples (it is timed on random ones, as all)."""
        from distill.export.raw_inputs import read_metadata

        return (lambda x: fn(self.data.to_raw(x))) if read_metadata(path).get("inputs") == "raw" else None

    def add(self, name: str, runtime: str, fn: Callable[[torch.Tensor], torch.Tensor], file: Path, flops: int | None,
            params: int | None, mem_kind: str | None, mem_path: Path | None,
            scored: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:  # fmt: skip
        from distill.bench import measure_callable
        from distill.bench.memory import peak_memory_mib

        data, e = self.data, self.e
        cost = measure_callable(fn, data.in_shape, file_path=file if file.is_file() else None, latency_runs=e.latency_runs,
                                warmup_runs=e.warmup_runs, throughput_batch=e.throughput_batch,
                                throughput_runs=e.throughput_runs).to_dict()  # fmt: skip
        size = file.stat().st_size if file.is_file() else sum(p.stat().st_size for p in file.glob("*") if p.is_file())
        self.stages.append({
            "stage": name, "runtime": runtime, "parameters": params, "size_bytes": size, "flops": flops,
            "latency_ms_p50": cost["latency_ms_p50"], "latency_ms_p95": cost["latency_ms_p95"],
            "throughput": cost["throughput"], "throughput_batch": e.throughput_batch,
            "peak_memory_mib": peak_memory_mib(mem_kind, mem_path, data.in_shape, e.throughput_batch, self.threads)
            if self.memory and mem_kind and mem_path else None,
            "test_acc": _accuracy(scored or fn, data.test), "val_acc": _accuracy(scored or fn, data.val),
        })  # fmt: skip
        row = self.stages[-1]
        log.info("bench %-14s %-11s p50 %.4f ms, %.0f samples/s, test %.2f%%", name, runtime,
                 row["latency_ms_p50"], row["throughput"], 100 * row["test_acc"])  # fmt: skip


def _bench_teacher(bench: _Bench, run_dir: Path, recipe: Recipe) -> None:
    """The teacher in PyTorch and ONNX Runtime, when it is a module (not outputs from a file or an API); a Hugging
    Face teacher (teacher.kind hf) in PyTorch, as the run called it (its images mapped to the model's inputs)."""
    from distill.bench import count_flops
    from distill.export.onnx import export_onnx
    from distill.export.torch_format import save_torch

    data = bench.data
    teacher, tmodule, path = load_run_teacher(run_dir, recipe, data)
    if tmodule is None and recipe.teacher.kind == "hf":
        net = teacher.net
        bench.add("teacher", "PyTorch (transformers)", teacher, path, count_flops(teacher, data.in_shape), _nparams(net),
                  None, None)  # fmt: skip
        return
    if tmodule is None:
        return
    tdir = save_torch(tmodule, bench.work / "teacher-torch", builder={"arch": recipe.teacher.arch, "in_shape": list(data.in_shape),
                      "num_classes": data.num_classes, "params": recipe.teacher.params}) if recipe.teacher.arch else None  # fmt: skip
    tflops = count_flops(tmodule, data.in_shape)
    bench.add("teacher", "PyTorch", tmodule, run_dir / "teacher.safetensors", tflops, _nparams(tmodule),
              "torch" if tdir else None, tdir)  # fmt: skip
    tonnx = export_onnx(tmodule, data.train.x[:2], bench.work / "teacher.onnx")
    bench.add("teacher", "ONNX Runtime", bench.ort(tonnx), tonnx, tflops, _nparams(tmodule), "onnx", tonnx)


def _bench_student(bench: _Bench, run_dir: Path, recipe: Recipe) -> None:
    """The distilled student, its pruned and int8 versions if compressed, and its ONNX files (fp32, int8)."""
    from distill.bench import count_flops
    from distill.export.onnx import export_onnx
    from distill.export.torch_format import load_torch, save_torch

    data = bench.data
    student = _load_student(run_dir, recipe, data)
    sflops = count_flops(student, data.in_shape)
    sdir = save_torch(student, bench.work / "student-torch", builder=_builder(recipe, data))
    bench.add("distilled", "PyTorch", student, run_dir / "student.safetensors", sflops, _nparams(student), "torch", sdir)
    last_float, last_flops = student, sflops
    pruned = run_dir / "compressed" / "pruned"
    if (pruned / "config.json").exists():
        pm = load_torch(pruned).eval()
        last_float, last_flops = pm, count_flops(pm, data.in_shape)
        bench.add("pruned", "PyTorch", pm, pruned / "model.safetensors", last_flops, _nparams(pm), "torch", pruned)
    int8 = run_dir / "compressed" / "int8"
    if (int8 / "config.json").exists():
        qm = load_torch(int8).eval()
        bench.add("int8", "PyTorch", qm, int8 / "model.safetensors", last_flops, None, "torch", int8)
    onnx_fp32 = run_dir / "export" / "student.onnx"
    if not onnx_fp32.exists():
        onnx_fp32 = export_onnx(last_float, data.train.x[:2], bench.work / "student.onnx")
    fp32 = bench.ort(onnx_fp32)
    bench.add("ONNX fp32", "ONNX Runtime", fp32, onnx_fp32, last_flops, _nparams(last_float), "onnx", onnx_fp32,
              bench.raw_scored(onnx_fp32, fp32))  # fmt: skip
    onnx_q = run_dir / "export" / "student.int8.onnx"
    if onnx_q.exists():
        q8 = bench.ort(onnx_q)
        bench.add("ONNX int8", "ONNX Runtime", q8, onnx_q, last_flops, None, "onnx", onnx_q, bench.raw_scored(onnx_q, q8))


def render_bench(result: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else fmt.format(v)

    rows = result["stages"]
    lines = [
        f"Measured side by side in one process, {result['threads']} thread(s), {result['platform']}.",
        "",
        "| stage | runtime | parameters | file size | FLOPs/sample | latency b1 p50 | p95 | throughput b"
        f"{rows[0]['throughput_batch'] if rows else ''} | peak memory | test acc | retention |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        lines.append(
            f"| {s['stage']} | {s['runtime']} | {f(s['parameters'], '{:,}')} | {f(s['size_bytes'] / 1024 if s['size_bytes'] else None, '{:,.1f} KiB')} | "
            f"{f(s['flops'], '{:,}')} | {f(s['latency_ms_p50'], '{:.4f} ms')} | {f(s['latency_ms_p95'], '{:.4f} ms')} | "
            f"{f(s['throughput'], '{:,.0f}/s')} | {f(s['peak_memory_mib'], '{:.1f} MiB')} | {100 * s['test_acc']:.2f}% | "
            f"{f(s['retention'] * 100 if s['retention'] else None, '{:.1f}%')} |"
        )
    return "\n".join(lines) + "\n"
