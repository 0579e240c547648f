"""The stages after distillation, each starting from a finished run directory:

``compress_run``  prune (then a short recovery distillation) and int8-quantize the student
                  → ``compressed/pruned/``, ``compressed/int8/`` (save_torch folders), ``compressed/compress.json``
``export_run``    ONNX (fp32 and int8, parity-checked on real test inputs), torch, HF
                  → ``export/``, ``export/export.json``
``bench_run``     every stage side by side in one process: teacher (PyTorch and ONNX), distilled,
                  pruned, int8, ONNX fp32, ONNX int8 → ``bench.json``, ``bench.md``
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from distill.tasks.classification.builders import load_run_recipe, load_run_student, load_run_teacher
from distill.tasks.classification.signal import student_view, teacher_outputs
from distill.errors import ExportError, RecipeError, UnsupportedError
from distill.fsutil import write_json, write_text
from distill.recipe import LossTerm, Recipe, TrainConfig, apply_overrides, validate_recipe

log = logging.getLogger("distill")


# ----------------------------------------------------------------- loading
def _recipe(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    recipe = load_run_recipe(run_dir)
    if overrides:
        recipe = validate_recipe(apply_overrides(recipe.to_dict(), list(overrides)), "--set")
    return recipe


def _builder(recipe: Recipe, data: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    which = {"factory": recipe.student.factory} if recipe.student.factory else {"arch": recipe.student.arch}
    return {**which, "in_shape": list(data.in_shape), "num_classes": data.num_classes,
            "params": dict(recipe.student.params if params is None else params)}  # fmt: skip


def _load_student(run_dir: Path, recipe: Recipe, data: Any) -> nn.Module:
    student = load_run_student(run_dir, recipe, data)
    assert student is not None  # only a baseline may be absent
    return student


def _accuracy(fn: Callable[[torch.Tensor], torch.Tensor], split: Any, batch: int = 1024) -> float:
    with torch.inference_mode():
        preds = torch.cat([fn(split.x[i : i + batch]).argmax(-1) for i in range(0, len(split), batch)])
    return float((preds == split.y).float().mean())


# ---------------------------------------------------------------- compress
def compress_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), *, progress: bool = True) -> dict[str, Any]:
    """Prune and/or quantize the distilled student of ``run_dir`` as its recipe's ``compress`` section says."""
    from accelerate import Accelerator

    from distill.compress import dynamic_int8, magnitude_prune, pruned_params, sensitivity_int8, static_int8, structured_prune
    from distill.compress.prune import sparsity
    from distill.data import build_data
    from distill.tasks.classification.loop import fit
    from distill.export.torch_format import save_torch
    from distill.tasks.classification.objective import build_objective

    run_dir = Path(run_dir)
    recipe = _recipe(run_dir, overrides)
    cfg = recipe.compress
    if cfg is None or (cfg.prune.kind == "none" and cfg.quantize.kind == "none"):
        raise RecipeError(
            ["the recipe has no compress stage (compress.prune.kind and compress.quantize.kind are 'none'). "
             "Fix: add a compress section, or e.g. --set compress.prune.kind=structured --set compress.quantize.kind=dynamic"],
            str(run_dir / "recipe.yaml"),
        )  # fmt: skip
    if recipe.student.factory and cfg.prune.kind == "structured":
        raise UnsupportedError(
            f"compress.prune.kind structured rebuilds the student from its builder's parameters with fewer units, "
            f"but this student comes from the factory {recipe.student.factory!r}, which distill cannot rebuild "
            "smaller. Fix: --set compress.prune.kind=magnitude (or none, with int8 quantization only)."
        )
    data = build_data(recipe.data)
    model = _load_student(run_dir, recipe, data)
    out_dir = run_dir / "compressed"
    report: dict[str, Any] = {"settings": cfg.model_dump(), "stages": {}}
    report["stages"]["distilled"] = {"val_acc": _accuracy(model, data.val), "test_acc": _accuracy(model, data.test),
                                     "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    params = dict(recipe.student.params)

    if cfg.prune.kind != "none":
        p = cfg.prune
        if p.kind == "structured":
            model = structured_prune(model, p.amount, data.train.x[:2], criterion=p.criterion)
            params = pruned_params(model, recipe.student.arch, params)
        else:
            model = magnitude_prune(model, p.amount)
        log.info("pruned (%s, %.0f%%): %d parameters, sparsity %.1f%%", p.kind, 100 * p.amount,
                 sum(q.numel() for q in model.parameters()), 100 * sparsity(model))  # fmt: skip
        before_recovery = _accuracy(model, data.test)
        if p.recovery_epochs:
            teacher, _, _ = load_run_teacher(run_dir, recipe, data)
            accel = Accelerator(cpu=not torch.cuda.is_available())
            logits, _info = teacher_outputs(teacher, data, recipe, recipe.eval.batch_size, accel)
            student_data, t_train = student_view(data, recipe, logits["train"])
            cfg_train = TrainConfig(**{**recipe.train.model_dump(), "epochs": p.recovery_epochs, "augment": "none"})
            cfg_train.optimizer.lr = p.recovery_lr or recipe.train.optimizer.lr / 3
            # logit terms of the recipe's objective (feature terms and function matching's views would need
            # the teacher online)
            objective = [
                t for t in build_objective(recipe.distill)
                if "teacher_features" not in t.spec.needs and not t.spec.views
            ]
            if not objective:
                objective = build_objective([LossTerm(loss="kd", temperature=1.0)])
            model.train()
            fit(model, student_data.train, objective, cfg_train, accelerator=accel, role="recovery",
                eval_splits={"val": data.val}, teacher_logits=t_train, progress=progress)  # fmt: skip
            model.eval()
            if p.kind == "magnitude":  # the recovery moved pruned weights: prune them again
                model = magnitude_prune(model, p.amount)
        save_torch(model, out_dir / "pruned", builder=_builder(recipe, data, params))
        report["stages"]["pruned"] = {
            "kind": p.kind, "amount": p.amount, "sparsity": sparsity(model),
            "parameters": sum(q.numel() for q in model.parameters()), "params": params,
            "test_acc_before_recovery": before_recovery,
            "val_acc": _accuracy(model, data.val), "test_acc": _accuracy(model, data.test),
        }  # fmt: skip

    if cfg.quantize.kind != "none":
        q = cfg.quantize
        calib = data.train.x[: q.calibration_size]
        float_model = model
        sens = None
        if q.kind == "dynamic":
            model = dynamic_int8(model, per_channel=q.per_channel)
        elif q.kind == "static":
            model = static_int8(model, calib, method=q.calibration_method, per_channel=q.per_channel)
        else:
            model, sens = sensitivity_int8(model, calib, bound=q.quality_bound, per_channel=q.per_channel)
        save_torch(model, out_dir / "int8", builder=_builder(recipe, data, params))
        with torch.inference_mode():
            a, b = float_model(data.test.x[:1000]), model(data.test.x[:1000])
        from distill.compress.quantize import cosine_similarity

        report["stages"]["int8"] = {
            "kind": q.kind, "per_channel": q.per_channel, "cosine_to_float": cosine_similarity(a, b),
            "val_acc": _accuracy(model, data.val), "test_acc": _accuracy(model, data.test),
            "sensitivity": sens.to_dict() if sens is not None else None,
        }  # fmt: skip
    write_json(out_dir / "compress.json", report)
    for name, st in report["stages"].items():
        log.info("%-10s test accuracy %.2f%%", name, 100 * st["test_acc"])
    return report


# ------------------------------------------------------------------ export
def _float_model(run_dir: Path, recipe: Recipe, data: Any) -> tuple[nn.Module, dict[str, Any], str]:
    """The last float stage: the pruned student when there is one, else the distilled student."""
    from distill.export.torch_format import load_torch

    pruned = run_dir / "compressed" / "pruned"
    if (pruned / "config.json").exists():
        cfg = json.loads((pruned / "config.json").read_text())
        return load_torch(pruned).eval(), cfg["builder"], "pruned"
    return _load_student(run_dir, recipe, data), _builder(recipe, data), "distilled"


def export_run(
    run_dir: str | Path, formats: list[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Export the student (pruned if it was) as the recipe's ``export`` section (or ``formats``) says; the ONNX
    files take raw samples and say what they expect (:mod:`distill.export.raw_inputs`)."""
    from distill.data import build_data
    from distill.export.torch_format import save_hf, save_torch
    from distill.recipe import ExportConfig

    run_dir = Path(run_dir)
    recipe = _recipe(run_dir, overrides)
    cfg = recipe.export or ExportConfig()
    formats = list(formats or cfg.formats)
    data = build_data(recipe.data)
    model, builder, stage = _float_model(run_dir, recipe, data)
    out = run_dir / "export"
    inputs = data.test.x[: cfg.parity.samples]
    report: dict[str, Any] = {"stage": stage, "formats": formats, "files": {}, "parity": {}}
    if "hf" in formats and not hasattr(model, "save_pretrained"):
        raise ExportError(
            f"format 'hf' writes Hugging Face models with save_pretrained; this student is a distill "
            f"{builder.get('arch')!r} model. Fix: use --format torch (safetensors + config.json) or onnx."
        )
    if "onnx" in formats:
        _export_raw_onnx(recipe, cfg, model, data, out, inputs, report)
    if "torch" in formats:
        report["files"]["torch"] = str(save_torch(model, out / "torch", builder=builder))
        int8 = run_dir / "compressed" / "int8"
        if (int8 / "config.json").exists():
            target = out / "torch-int8"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(int8, target)
            report["files"]["torch_int8"] = str(target)
    if "hf" in formats:
        report["files"]["hf"] = str(save_hf(model, None, out / "hf"))
    write_json(out / "export.json", report)
    return report


def _export_raw_onnx(recipe: Any, cfg: Any, model: nn.Module, data: Any, out: Path, inputs: torch.Tensor,
                     report: dict[str, Any]) -> None:  # fmt: skip
    """student.onnx (and student.int8.onnx) that take raw samples, the standardisation inside the graph; parity
    checked on raw test samples; what they expect in their metadata, classifier.json, classifier.py, README."""
    from distill.compress import onnx_int8
    from distill.export.onnx import check_onnx_parity, export_onnx
    from distill.export.raw_inputs import WithPreprocessing, ship_folder, shipping_metadata, write_metadata

    shipped = WithPreprocessing(model, data.preprocessing, data.kind).eval()
    raw = data.to_raw(inputs)
    path = export_onnx(shipped, data.to_raw(data.train.x[:2]), out / "student.onnx", opset=cfg.opset)
    parity = check_onnx_parity(shipped, path, raw, atol=cfg.parity.atol,
                               min_argmax_agreement=cfg.parity.min_argmax_agreement)  # fmt: skip
    report["files"]["onnx"] = str(path)
    report["parity"]["onnx"] = parity.to_dict() if hasattr(parity, "to_dict") else vars(parity)
    log.info("ONNX %s (raw inputs): max |Δ| %.2e, argmax agreement %.4f", path, parity.max_abs_diff,
             parity.argmax_agreement)  # fmt: skip
    meta = shipping_metadata(data, teacher=recipe.teacher.name)
    files = [path.name]
    write_metadata(path, meta)
    if cfg.onnx_int8:
        calib = data.to_raw(data.train.x[: (recipe.compress.quantize.calibration_size if recipe.compress else 512)])
        qpath = onnx_int8(path, out / "student.int8.onnx", per_channel=cfg.onnx_int8_per_channel,
                          calibration=calib if cfg.onnx_int8_static else None)  # fmt: skip
        # int8 outputs differ from fp32 by design: parity is judged by the predicted class
        qparity = check_onnx_parity(shipped, qpath, raw, atol=float("inf"),
                                    min_argmax_agreement=cfg.parity.int8_min_argmax_agreement)  # fmt: skip
        write_metadata(qpath, meta)
        files.append(qpath.name)
        report["files"]["onnx_int8"] = str(qpath)
        report["parity"]["onnx_int8"] = qparity.to_dict() if hasattr(qparity, "to_dict") else vars(qparity)
        log.info("ONNX int8 %s: argmax agreement %.4f with the float model", qpath, qparity.argmax_agreement)
    ship_folder(out, meta, files)
    report["files"]["classifier"] = str(out / "classifier.py")


# ------------------------------------------------------------------- bench
def bench_run(run_dir: str | Path, *, memory: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Every stage of ``run_dir`` measured side by side in this process (same threads, same data)."""
    from distill.bench import count_flops, measure_callable
    from distill.bench.memory import peak_memory_mib
    from distill.data import build_data
    from distill.export.onnx import OrtRunner, export_onnx, onnx_session
    from distill.export.torch_format import load_torch, save_torch

    run_dir = Path(run_dir)
    recipe = _recipe(run_dir)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    data = build_data(recipe.data)
    e = recipe.eval
    work = run_dir / "bench"
    stages: list[dict[str, Any]] = []

    def ort_fn(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        # bound buffers: the per-call cost an app pays, not Python's session.run
        return OrtRunner(onnx_session(path, threads=threads))

    def raw_accuracy_fn(path: Path, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """An exported file that takes raw samples is scored on raw samples (it is timed on random ones, as all)."""
        from distill.export.raw_inputs import read_metadata

        return (lambda x: fn(data.to_raw(x))) if read_metadata(path).get("inputs") == "raw" else None

    def add(name: str, runtime: str, fn: Callable[[torch.Tensor], torch.Tensor], file: Path, flops: int | None,
            params: int | None, mem_kind: str | None, mem_path: Path | None,
            scored: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:  # fmt: skip
        cost = measure_callable(fn, data.in_shape, file_path=file if file.is_file() else None, latency_runs=e.latency_runs,
                                warmup_runs=e.warmup_runs, throughput_batch=e.throughput_batch,
                                throughput_runs=e.throughput_runs).to_dict()  # fmt: skip
        size = file.stat().st_size if file.is_file() else sum(p.stat().st_size for p in file.glob("*") if p.is_file())
        stages.append({
            "stage": name, "runtime": runtime, "parameters": params, "size_bytes": size, "flops": flops,
            "latency_ms_p50": cost["latency_ms_p50"], "latency_ms_p95": cost["latency_ms_p95"],
            "throughput": cost["throughput"], "throughput_batch": e.throughput_batch,
            "peak_memory_mib": peak_memory_mib(mem_kind, mem_path, data.in_shape, e.throughput_batch, threads)
            if memory and mem_kind and mem_path else None,
            "test_acc": _accuracy(scored or fn, data.test), "val_acc": _accuracy(scored or fn, data.val),
        })  # fmt: skip
        log.info("bench %-14s %-11s p50 %.4f ms, %.0f samples/s, test %.2f%%", name, runtime,
                 stages[-1]["latency_ms_p50"], stages[-1]["throughput"], 100 * stages[-1]["test_acc"])  # fmt: skip

    def nparams(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    teacher, tmodule, _ = load_run_teacher(run_dir, recipe, data)
    if tmodule is not None:
        tdir = save_torch(tmodule, work / "teacher-torch", builder={"arch": recipe.teacher.arch, "in_shape": list(data.in_shape),
                          "num_classes": data.num_classes, "params": recipe.teacher.params}) if recipe.teacher.arch else None  # fmt: skip
        tflops = count_flops(tmodule, data.in_shape)
        add("teacher", "PyTorch", tmodule, run_dir / "teacher.safetensors", tflops, nparams(tmodule),
            "torch" if tdir else None, tdir)  # fmt: skip
        tonnx = export_onnx(tmodule, data.train.x[:2], work / "teacher.onnx")
        add("teacher", "ONNX Runtime", ort_fn(tonnx), tonnx, tflops, nparams(tmodule), "onnx", tonnx)
    student = _load_student(run_dir, recipe, data)
    sflops = count_flops(student, data.in_shape)
    sdir = save_torch(student, work / "student-torch", builder=_builder(recipe, data))
    add("distilled", "PyTorch", student, run_dir / "student.safetensors", sflops, nparams(student), "torch", sdir)
    last_float, last_flops = student, sflops
    pruned = run_dir / "compressed" / "pruned"
    if (pruned / "config.json").exists():
        pm = load_torch(pruned).eval()
        last_float, last_flops = pm, count_flops(pm, data.in_shape)
        add("pruned", "PyTorch", pm, pruned / "model.safetensors", last_flops, nparams(pm), "torch", pruned)
    int8 = run_dir / "compressed" / "int8"
    if (int8 / "config.json").exists():
        qm = load_torch(int8).eval()
        add("int8", "PyTorch", qm, int8 / "model.safetensors", last_flops, None, "torch", int8)
    onnx_fp32 = run_dir / "export" / "student.onnx"
    if not onnx_fp32.exists():
        onnx_fp32 = export_onnx(last_float, data.train.x[:2], work / "student.onnx")
    fp32 = ort_fn(onnx_fp32)
    add("ONNX fp32", "ONNX Runtime", fp32, onnx_fp32, last_flops, nparams(last_float), "onnx", onnx_fp32,
        raw_accuracy_fn(onnx_fp32, fp32))  # fmt: skip
    onnx_q = run_dir / "export" / "student.int8.onnx"
    if onnx_q.exists():
        q8 = ort_fn(onnx_q)
        add("ONNX int8", "ONNX Runtime", q8, onnx_q, last_flops, None, "onnx", onnx_q, raw_accuracy_fn(onnx_q, q8))

    t_acc = next((s["test_acc"] for s in stages if s["stage"] == "teacher"), None)
    for s in stages:
        s["retention"] = s["test_acc"] / t_acc if t_acc else None
    result = {"threads": threads, "stages": stages, "platform": __import__("platform").platform()}
    write_json(run_dir / "bench.json", result)
    write_text(run_dir / "bench.md", render_bench(result))
    return result


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
