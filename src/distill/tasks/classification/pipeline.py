"""`distill run`: the whole flow for classification, into one run directory.

recipe → data → teacher (load, or train) → teacher outputs (cache) →
baseline student (hard labels, optional) → distilled student → evaluate and
measure every model → comparison table, metrics.json.

Run directory::

    recipe.yaml            the resolved recipe (every default filled in)
    run.log                the log
    teacher.safetensors    weights (also baseline.safetensors, student.safetensors)
    history/<role>.json    per-epoch curves of each trained model
    checkpoints/<role>/    per-epoch checkpoints (see core/checkpoint.py)
    metrics.json           accuracies, fingerprints, timings, curves
    comparison.md/.json    the "large model vs distilled model" table
    predictions.safetensors test labels and every model's test logits (for reports)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.version import __version__
from distill.data import DataBundle, labeled_only
from distill.core.accelerate import make_accelerator
from distill.tasks.classification.builders import save_weights, seeded_build
from distill.core.checkpoint import CheckpointStore
from distill.tasks.classification.evaluate import RunResult, evaluate_models
from distill.core.logs import setup_logging
from distill.tasks.classification import trees
from distill.tasks.classification.loop import FitResult, fit
from distill.tasks.classification.preflight import Setup, check_teacher_beats_chance, preflight
from distill.tasks.classification.signal import student_view, teacher_outputs
from distill.core.context import environment, run_context
from distill.core.rundir import lifecycle, plan_run_dir, prepare_run_dir
from distill.core.fsutil import write_json, write_text
from distill.core.recipes import validate_recipe
from distill.tasks.classification.recipe import LossTerm, Recipe, TrainConfig
from distill.report import licence_status, render_markdown
from distill.tasks.classification.objective import (
    build_objective,
    class_bias_correction,
    needs_teacher,
)
from distill.tasks.classification.features import FeatureCapture, build_adapters, teacher_feature_table
from distill.tasks.classification.teachers import TorchTeacher, load_weights

__all__ = ["STAGES", "RunResult", "environment", "preflight", "run", "setup_logging"]

log = logging.getLogger("distill")


# Stages of a classification run: the recipe keys each depends on, the files it leaves. Resuming a failed
# run with a corrected recipe trains again every stage whose keys changed (see core/rundir.py).
_TRAINED = ("data", "transfer", "student", "train", "distill", "teacher")
STAGES = {
    "teacher": (("data", "teacher"), ("teacher.safetensors", "history/teacher.json", "checkpoints/teacher")),
    "baseline": (("data", "transfer", "student", "train", "eval.baseline", "eval.baseline_train"),
                 ("baseline.safetensors", "history/baseline.json", "checkpoints/baseline")),
    "student": (_TRAINED, ("student.safetensors", "history/student.json", "checkpoints/student")),
    "after": (_TRAINED + ("compress", "export"), ("compressed", "export", "bench.json", "bench.md")),
}  # fmt: skip


# ------------------------------------------------------------------ stages
def _train_stage(
    role: str,
    model: nn.Module,
    data: DataBundle,
    terms: list[LossTerm],
    cfg: TrainConfig,
    *,
    run_dir: Path,
    accelerator: Any,
    resume: bool,
    progress: bool,
    eval_batch: int,
    teacher_logits: torch.Tensor | None = None,
    online_teacher: Any = None,
    adapters: nn.ModuleDict | None = None,
    teacher_features: dict[str, torch.Tensor] | None = None,
    stop_after_steps: int | None = None,
    augment: str = "none",
) -> list[dict[str, Any]]:
    weights = run_dir / f"{role}.safetensors"
    hist_path = run_dir / "history" / f"{role}.json"
    if resume and weights.exists() and hist_path.exists():
        load_weights(model, weights, role)
        log.info("%s: already trained in this run directory; loaded %s", role, weights)
        return json.loads(hist_path.read_text())
    objective = build_objective(terms)
    log.info(
        "%s: training for %d epochs on %d samples, objective %s",
        role, cfg.epochs, len(data.train), " + ".join(f"{t.weight:g}·{t.label}{t.params or ''}" for t in objective),
    )  # fmt: skip
    result: FitResult = fit(
        model,
        data.train,
        objective,
        cfg,
        accelerator=accelerator,
        role=role,
        eval_splits={"val": data.val, "test": data.test},
        teacher_logits=teacher_logits,
        online_teacher=online_teacher,
        adapters=adapters,
        teacher_features=teacher_features,
        augment=augment,
        flip_ok=data.flip_ok,
        checkpoints=CheckpointStore(run_dir / "checkpoints" / role),
        resume=resume,
        progress=progress,
        eval_batch_size=eval_batch,
        stop_after_steps=stop_after_steps,
    )
    if accelerator.is_main_process:
        save_weights(model.module if hasattr(model, "module") else model, weights)
        write_json(hist_path, result.history)
    return result.history


# -------------------------------------------------------------------- run
def run(
    recipe: Recipe,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: bool = True,
    _stop_after_steps: dict[str, int] | None = None,
) -> RunResult:
    """Run the whole flow of ``recipe``; return the run directory, metrics and table.

    The preflight runs before the run directory exists; after it, a failure marks the directory
    failed (``status.json``) and ``--resume`` continues it once the input is fixed."""
    recipe = validate_recipe(recipe.to_dict())  # never mutate the caller's recipe
    with run_context(recipe.train.num_threads):
        accelerator = make_accelerator(recipe.train.precision)
        main_process = accelerator.is_main_process
        setup_logging(None, console=console and main_process)
        if not main_process:
            log.setLevel(logging.WARNING)
        setup = preflight(recipe)
        plan = plan_run_dir(recipe, resume, overwrite)
        accelerator.wait_for_everyone()
        run_dir = prepare_run_dir(recipe, plan, STAGES) if main_process else recipe.run_dir
        accelerator.wait_for_everyone()
        setup_logging(run_dir if main_process else None, console=console and main_process)
        if not main_process:
            log.setLevel(logging.WARNING)
        with lifecycle(run_dir, main_process=main_process):
            return _run(recipe, setup, run_dir, accelerator, resume=resume, progress=progress,
                        stops=_stop_after_steps or {})  # fmt: skip


def _run(recipe: Recipe, setup: Setup, run_dir: Path, accelerator: Any, *, resume: bool, progress: bool,
         stops: dict[str, int]) -> RunResult:  # fmt: skip
    started = time.time()
    data = setup.data
    log.info("distill %s: run %r into %s%s", __version__, recipe.name, run_dir, " (resuming)" if resume else "")
    licence_ok, licence_msg = licence_status(recipe.teacher.license)
    if not licence_ok:
        log.warning("licence: %s", licence_msg)
    if accelerator.num_processes > 1:
        log.info("%d processes (%s), batch size %d per process", accelerator.num_processes,
                 accelerator.distributed_type, recipe.train.batch_size)  # fmt: skip
    log.info("data: %s", data.describe())
    teacher_source, teacher_weights, teacher_history = _teacher_stage(recipe, setup, run_dir, accelerator, resume,
                                                                      progress, stops)  # fmt: skip
    teacher_logits, online, teacher_features, cache_info = _teacher_signal(recipe, setup, accelerator)
    if not recipe.eval.allow_chance_teacher:
        check_teacher_beats_chance(setup, teacher_logits.get("val"), recipe.eval.batch_size)
    histories, students = _student_stages(recipe, setup, run_dir, accelerator, resume, progress, stops,
                                          teacher_logits, online, teacher_features)  # fmt: skip
    histories["teacher"] = teacher_history
    if accelerator.is_main_process and trees.wanted(recipe.eval.trees_baseline, data.kind):
        fitted = trees.fit_trees(setup.student_data.train, data.num_classes, recipe.train.seed, run_dir)
        students.append((trees.LABEL, trees.ROLE, fitted, run_dir / trees.FILE))
    if not accelerator.is_main_process:
        return RunResult(run_dir, {}, {}, "")
    log.info("measuring accuracy, size, FLOPs, latency and throughput (side by side) ...")
    teacher = setup.teacher_module if setup.teacher_module is not None else setup.teacher
    table, logits = evaluate_models([("teacher", "teacher", teacher, teacher_weights), *students], data, recipe,
                                    predictions_path=run_dir / "predictions.safetensors")  # fmt: skip
    markdown = render_markdown(table)
    transfer_report, transfer_md = _transfer_report(recipe, setup, students, logits)
    markdown += transfer_md
    metrics = {
        "task": "classification",
        "distill_version": __version__,
        "name": recipe.name,
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val), "test": len(data.test),
                 "num_classes": data.num_classes, "class_names": data.class_names},
        "teacher": {"source": teacher_source, "kind": recipe.teacher.kind, "path": recipe.teacher.path,
                    "fingerprint": setup.teacher.fingerprint(), "checkpoint": recipe.teacher.checkpoint,
                    "name": recipe.teacher.name,
                    "license": recipe.teacher.license},
        "teacher_outputs": cache_info,
        "models": table["models"],  # one entry per model, each with its role (core/results.py)
        "summary": table["summary"],
        "transfer": {"exclude_classes": recipe.transfer.exclude_classes, "labeled_fraction": recipe.transfer.labeled_fraction,
                     "train_samples": len(setup.student_data.train),
                     "labeled_samples": int((setup.student_data.train.y >= 0).sum()), "bias_correction": transfer_report},
        "history": histories,
        "seconds": round(time.time() - started, 2),
        **environment(),
    }  # fmt: skip
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "comparison.json", {"task": "classification", **table})
    write_text(run_dir / "comparison.md", markdown)
    _optional_stages(recipe, run_dir, metrics, progress)
    log.info("\n%s", markdown)
    log.info("run directory: %s (%.1fs)", run_dir, metrics["seconds"])
    return RunResult(run_dir, metrics, table, markdown)


def _teacher_stage(recipe: Recipe, setup: Setup, run_dir: Path, accelerator: Any, resume: bool, progress: bool,
                   stops: dict[str, int]) -> tuple[str, Path, list[dict[str, Any]]]:  # fmt: skip
    """Train the teacher here when it has no checkpoint; return where it came from and its weights file."""
    teacher_weights = run_dir / "teacher.safetensors"
    if setup.teacher_module is None:
        log.info("teacher: %s (%s), %d classes", recipe.teacher.kind, recipe.teacher.path or "ensemble",
                 setup.teacher.num_classes)  # fmt: skip
        return recipe.teacher.kind, Path(recipe.teacher.path) if recipe.teacher.path else teacher_weights, []
    if recipe.teacher.checkpoint:
        log.info("teacher: loaded %s", recipe.teacher.checkpoint)
        if accelerator.is_main_process:
            save_weights(setup.teacher_module, teacher_weights)
        return "checkpoint", teacher_weights, []
    history = _train_stage(
        "teacher", setup.teacher_module, setup.data, [LossTerm(loss="ce")], recipe.teacher_train,
        run_dir=run_dir, accelerator=accelerator, resume=resume, progress=progress,
        eval_batch=recipe.eval.batch_size, stop_after_steps=stops.get("teacher"),
        augment=recipe.teacher_train.augment if setup.data.kind == "image" else "none",
    )  # fmt: skip
    return "trained", teacher_weights, history


def _teacher_signal(recipe: Recipe, setup: Setup, accelerator: Any) -> tuple[dict[str, torch.Tensor], Any, Any, dict[str, Any]]:
    """What the students learn from: cached teacher logits, or the teacher run online on every batch,
    and the teacher's feature tables for feature terms."""
    data, objective, teacher, teacher_module = setup.data, setup.objective, setup.teacher, setup.teacher_module
    teacher_logits: dict[str, torch.Tensor] = {}
    cache_info: dict[str, Any] = {"cache": "not needed"}
    online = None
    layers = setup.teacher_layers
    if setup.online_inputs and (needs_teacher(objective) or layers):
        fast_logits = teacher.online() if isinstance(teacher, TorchTeacher) and not layers else None

        def online(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if fast_logits is not None:
                return fast_logits(x), {}
            if teacher_module is None:
                return teacher.logits(x), {}
            with FeatureCapture(teacher_module, layers, "teacher") as cap:
                logits = teacher.logits(x)
            return logits, {k: v.detach().clone() for k, v in cap.outputs.items()}

    tr = recipe.transfer
    if setup.student_data is not data:
        log.info("transfer set: %d of %d training samples%s; %d keep their hard label",
                 len(setup.student_data.train), len(data.train),
                 f" (classes {tr.exclude_classes} left out)" if tr.exclude_classes else "",
                 int((setup.student_data.train.y >= 0).sum()))  # fmt: skip
    teacher_features = None
    if layers and not setup.online_inputs:
        assert teacher_module is not None  # the preflight refuses feature terms without a torch teacher
        t0 = time.perf_counter()
        teacher_features = teacher_feature_table(teacher_module, layers, setup.student_data.train.x, recipe.eval.batch_size)
        size = sum(v.numel() * 4 for v in teacher_features.values()) / 2**20
        log.info("teacher features of layers %s: computed once for the training split (%.0f MiB in memory), %.2fs",
                 ", ".join(sorted(layers)), size, time.perf_counter() - t0)  # fmt: skip
    if needs_teacher(objective):
        if setup.online_inputs:
            why = "train.augment" if setup.augmenting else f"{setup.views.label} views"
            cache_info = {"cache": f"off ({why}: the teacher runs online)"}
            log.info("teacher outputs: %s, so the teacher runs online on every batch (slower)", why)
        else:
            if not recipe.teacher.cache:
                log.info("teacher outputs: teacher.cache is off; computing them in memory for this run")
            teacher_logits, cache_info = teacher_outputs(teacher, data, recipe, recipe.eval.batch_size, accelerator)
            _, teacher_logits["train"] = student_view(data, recipe, teacher_logits["train"])
    return teacher_logits, online, teacher_features, cache_info


def _student_stages(recipe: Recipe, setup: Setup, run_dir: Path, accelerator: Any, resume: bool, progress: bool,
                    stops: dict[str, int], teacher_logits: dict[str, torch.Tensor], online: Any,
                    teacher_features: Any) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[str, str, nn.Module, Path]]]:  # fmt: skip
    """The baseline (hard labels only, when eval.baseline) and the distilled student."""
    data, student_data = setup.data, setup.student_data
    histories: dict[str, list[dict[str, Any]]] = {}
    students: list[tuple[str, str, nn.Module, Path]] = []
    common = dict(run_dir=run_dir, accelerator=accelerator, resume=resume, progress=progress,
                  eval_batch=recipe.eval.batch_size)  # fmt: skip
    if recipe.eval.baseline:
        baseline_cfg = recipe.eval.baseline_train or recipe.train
        baseline = setup.make_student(baseline_cfg.seed)
        histories["baseline"] = _train_stage(
            "baseline", baseline, labeled_only(student_data), [LossTerm(loss="ce")], baseline_cfg,
            stop_after_steps=stops.get("baseline"), augment=baseline_cfg.augment if data.kind == "image" else "none",
            **common,
        )  # fmt: skip
        students.append(("student, hard labels", "baseline", baseline, run_dir / "baseline.safetensors"))
    student = setup.make_student()
    adapters = None
    if setup.teacher_layers:
        tm = setup.teacher_module
        assert tm is not None
        adapters = seeded_build(lambda: build_adapters(setup.objective, student, tm, data.in_shape), recipe.train.seed)
        if len(adapters):
            log.info("feature adapters (trained with the student): %s",
                     "; ".join(f"{k}: {m}" for k, m in adapters.items()))  # fmt: skip
    histories["student"] = _train_stage(
        "student", student, student_data, list(recipe.distill), recipe.train,
        teacher_logits=teacher_logits.get("train"), online_teacher=online, stop_after_steps=stops.get("student"),
        adapters=adapters, teacher_features=teacher_features,
        augment=recipe.train.augment if data.kind == "image" else "none", **common,
    )  # fmt: skip
    students.append(("student, distilled", "student", student, run_dir / "student.safetensors"))
    return histories, students


def _transfer_report(recipe: Recipe, setup: Setup, students: list[tuple[str, str, nn.Module, Path]],
                     logits: dict[str, Any]) -> tuple[dict[str, Any], str]:  # fmt: skip
    """With transfer.exclude_classes: each student's accuracy on the never-seen classes before and after a
    bias on their logits tuned on validation."""
    tr, data = recipe.transfer, setup.data
    report: dict[str, Any] = {}
    if not tr.exclude_classes:
        return report, ""
    markdown = ""
    for label, role, _, _ in students:
        r = report[role] = class_bias_correction(
            logits[role]["val"], data.val.y, logits[role]["test"], data.test.y, list(tr.exclude_classes)
        )
        markdown += (
            f"\n{label}: on the never-seen classes {tr.exclude_classes}, test accuracy "
            f"{100 * r['test_acc_on_classes_before']:.1f}% → {100 * r['test_acc_on_classes_after']:.1f}% after adding "
            f"{r['bias']:.2f} to their logits (tuned on validation); overall {100 * r['test_acc_before']:.2f}% → "
            f"{100 * r['test_acc_after']:.2f}%."
        )
    return report, markdown + "\n"


def _optional_stages(recipe: Recipe, run_dir: Path, metrics: dict[str, Any], progress: bool) -> None:
    """compress and export when the recipe has them, then the report and model card."""
    if recipe.compress is not None and (recipe.compress.prune.kind != "none" or recipe.compress.quantize.kind != "none"):
        from distill.tasks.classification.stages import compress_run

        log.info("compress stage ...")
        metrics["compress"] = compress_run(run_dir, progress=progress)
        write_json(run_dir / "metrics.json", metrics)
    if recipe.export is not None:
        from distill.tasks.classification.stages import export_run

        log.info("export stage ...")
        metrics["export"] = export_run(run_dir)
        write_json(run_dir / "metrics.json", metrics)
    if recipe.output.report:
        from distill.tasks.classification.report import write_classification_report

        written = write_classification_report(run_dir)
        log.info("report: %s", "; ".join(str(p) for p in written))
