"""The stages after distillation, each starting from a finished run directory:

``compress_run``  prune (then a short recovery distillation) and int8-quantize the student
                  → ``compressed/pruned/``, ``compressed/int8/`` (save_torch folders), ``compressed/compress.json``
``export_run``    ONNX (fp32 and int8, parity-checked on real test inputs), torch, HF
                  → ``export/``, ``export/export.json``
(``bench_run``, every stage measured side by side, is in :mod:`distill.tasks.classification.bench`.)
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
from distill.tasks.classification.run_files import check_run_files
from distill.errors import ExportError, RecipeError, UnsupportedError
from distill.core.fsutil import write_json
from distill.core.recipes import validate_recipe
from distill.recipe import apply_overrides
from distill.tasks.classification.recipe import LossTerm, Recipe, TrainConfig

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
    from distill.tasks.classification.data import build_data

    run_dir = Path(run_dir)
    recipe = _recipe(run_dir, overrides)
    cfg = _compress_section(recipe, run_dir)
    check_run_files(run_dir, "compress")
    data = build_data(recipe.data)
    model = _load_student(run_dir, recipe, data)
    out_dir = run_dir / "compressed"
    report: dict[str, Any] = {"settings": cfg.model_dump(), "stages": {}}
    report["stages"]["distilled"] = {"val_acc": _accuracy(model, data.val), "test_acc": _accuracy(model, data.test),
                                     "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    params = dict(recipe.student.params)
    if cfg.prune.kind != "none":
        model, params, report["stages"]["pruned"] = _prune(run_dir, recipe, data, model, params, out_dir, progress)
    if cfg.quantize.kind != "none":
        model, report["stages"]["int8"] = _quantize(recipe, data, model, params, out_dir)
    write_json(out_dir / "compress.json", report)
    for name, st in report["stages"].items():
        log.info("%-10s test accuracy %.2f%%", name, 100 * st["test_acc"])
    return report


def _compress_section(recipe: Recipe, run_dir: Path) -> Any:
    """The recipe's compress section, or the error that says why this run cannot be compressed as asked."""
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
    return cfg


def _prune(run_dir: Path, recipe: Recipe, data: Any, model: nn.Module, params: dict[str, Any], out_dir: Path,
           progress: bool) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Prune (structured: fewer units; magnitude: zeros), recover with distillation if asked, save; the model,
    its builder parameters and the stage's report."""
    from distill.compress import magnitude_prune, pruned_params, structured_prune
    from distill.compress.prune import sparsity
    from distill.export.torch_format import save_torch

    p = recipe.compress.prune
    if p.kind == "structured":
        model = structured_prune(model, p.amount, data.train.x[:2], criterion=p.criterion)
        params = pruned_params(model, recipe.student.arch, params)
    else:
        model = magnitude_prune(model, p.amount)
    log.info("pruned (%s, %.0f%%): %d parameters, sparsity %.1f%%", p.kind, 100 * p.amount,
             sum(q.numel() for q in model.parameters()), 100 * sparsity(model))  # fmt: skip
    before_recovery = _accuracy(model, data.test)
    if p.recovery_epochs:
        _recover(run_dir, recipe, data, model, progress)
        if p.kind == "magnitude":  # the recovery moved pruned weights: prune them again
            model = magnitude_prune(model, p.amount)
    save_torch(model, out_dir / "pruned", builder=_builder(recipe, data, params))
    stage = {
        "kind": p.kind, "amount": p.amount, "sparsity": sparsity(model),
        "parameters": sum(q.numel() for q in model.parameters()), "params": params,
        "test_acc_before_recovery": before_recovery,
        "val_acc": _accuracy(model, data.val), "test_acc": _accuracy(model, data.test),
    }  # fmt: skip
    return model, params, stage


def _recover(run_dir: Path, recipe: Recipe, data: Any, model: nn.Module, progress: bool) -> None:
    """A few epochs of distillation from the run's teacher on the pruned model (in place): the logit terms of
    the recipe's objective (feature terms and function matching's views would need the teacher online)."""
    from distill.core.accelerate import make_accelerator

    from distill.tasks.classification.loop import fit
    from distill.tasks.classification.objective import build_objective

    p = recipe.compress.prune
    teacher, _, _ = load_run_teacher(run_dir, recipe, data)
    accel = make_accelerator()
    logits, _info = teacher_outputs(teacher, data, recipe, recipe.eval.batch_size, accel)
    student_data, t_train = student_view(data, recipe, logits["train"])
    cfg_train = TrainConfig(**{**recipe.train.model_dump(), "epochs": p.recovery_epochs, "augment": "none"})
    cfg_train.optimizer.lr = p.recovery_lr or recipe.train.optimizer.lr / 3
    objective = [t for t in build_objective(recipe.distill) if "teacher_features" not in t.spec.needs and not t.spec.views]
    if not objective:
        objective = build_objective([LossTerm(loss="kd", temperature=1.0)])
    model.train()
    fit(model, student_data.train, objective, cfg_train, accelerator=accel, role="recovery",
        eval_splits={"val": data.val}, teacher_logits=t_train, progress=progress)  # fmt: skip
    model.eval()


def _quantize(recipe: Recipe, data: Any, model: nn.Module, params: dict[str, Any],
              out_dir: Path) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """int8 (dynamic, static with calibration, or sensitivity-bounded), saved; the model and the stage's report."""
    from distill.compress import dynamic_int8, sensitivity_int8, static_int8
    from distill.compress.sensitivity import cosine_similarity
    from distill.export.torch_format import save_torch

    q = recipe.compress.quantize
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
    stage = {
        "kind": q.kind, "per_channel": q.per_channel, "cosine_to_float": cosine_similarity(a, b),
        "val_acc": _accuracy(model, data.val), "test_acc": _accuracy(model, data.test),
        "sensitivity": sens.to_dict() if sens is not None else None,
    }  # fmt: skip
    return model, stage


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
    from distill.tasks.classification.data import build_data
    from distill.export.torch_format import save_hf, save_torch
    from distill.tasks.classification.recipe import ExportConfig

    run_dir = Path(run_dir)
    recipe = _recipe(run_dir, overrides)
    check_run_files(run_dir, "export")
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
