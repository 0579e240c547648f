"""`distill run`: the whole flow for classification, into one run directory.

recipe → data → teacher (load, or train) → teacher outputs (cache) →
baseline student (hard labels, optional) → distilled student → evaluate and
measure every model → comparison table, metrics.json.

Run directory::

    recipe.yaml            the resolved recipe (every default filled in)
    run.log                the log
    teacher.safetensors    weights (also baseline.safetensors, student.safetensors)
    history/<role>.json    per-epoch curves of each trained model
    checkpoints/<role>/    per-epoch checkpoints (see engine/checkpoint.py)
    metrics.json           accuracies, fingerprints, timings, curves
    comparison.md/.json    the "large model vs distilled model" table
    predictions.safetensors test labels and every model's test logits (for reports)
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from distill import __version__
from distill.data import DataBundle, build_data, labeled_only
from distill.engine.build import build_models, make_accelerator, save_weights, seeded_build
from distill.engine.checkpoint import CheckpointStore
from distill.engine.evaluate import RunResult, evaluate_models
from distill.engine.logs import setup_logging
from distill.engine.loop import FitResult, fit
from distill.engine.teacher_outputs import student_view, teacher_outputs
from distill.errors import RecipeError, RunDirError, TeacherError
from distill.fsutil import write_json, write_text
from distill.recipe import LossTerm, Recipe, TrainConfig, validate_recipe
from distill.report import licence_status, render_markdown, write_model_card, write_report, write_tensorboard
from distill.tasks.classification import build_objective, class_bias_correction, needs_teacher, view_term
from distill.tasks.features import FeatureCapture, build_adapters, layer_names, teacher_feature_table
from distill.teachers import TorchTeacher, check_output_classes, load_weights
from distill.teachers.external import build_external_teacher, can_run_on_inputs

__all__ = ["RunResult", "run", "setup_logging"]

log = logging.getLogger("distill")


# ---------------------------------------------------------------- run dir
def check_run_dir(recipe: Any, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the run directory, changing nothing: 'resume', 'replace' or 'create'.

    Every process of a multi-process run calls this before any of them writes,
    so they all reach the same decision (or raise the same error).
    """
    run_dir = recipe.run_dir
    stored = run_dir / "recipe.yaml"
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            if not stored.exists():
                raise RunDirError(f"cannot resume {run_dir}: it has no recipe.yaml, so it is not a distill run directory.")
            before = yaml.safe_load(stored.read_text())
            now = recipe.to_dict()
            for d in (before, now):
                d.pop("output", None)
            if before != now:
                diff = sorted(_diff_keys(before, now))
                raise RunDirError(
                    f"cannot resume {run_dir}: the recipe differs from the one the run started with "
                    f"(changed: {', '.join(diff[:8])}). Fix: resume with the same recipe and --set options, "
                    "or start a new run with --overwrite or another output.dir."
                )
            return "resume"
        if overwrite or recipe.output.overwrite:
            return "replace"
        raise RunDirError(
            f"the run directory {run_dir} already exists. Fix: add --resume to continue it, "
            f"--overwrite to replace it, or --set output.dir=OTHER."
        )
    return "create"


def prepare_run_dir(recipe: Any, decision: str) -> Path:
    run_dir = recipe.run_dir
    if decision == "resume":
        return run_dir
    if decision == "replace":
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    return run_dir


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return set() if a == b else {prefix or "(root)"}


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
    """Run the whole flow of ``recipe``; return the run directory, metrics and table."""
    recipe = validate_recipe(recipe.to_dict())  # never mutate the caller's recipe
    started = time.time()
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    accelerator = make_accelerator(recipe)
    main_process = accelerator.is_main_process
    decision = check_run_dir(recipe, resume, overwrite)
    accelerator.wait_for_everyone()
    run_dir = prepare_run_dir(recipe, decision) if main_process else recipe.run_dir
    accelerator.wait_for_everyone()
    setup_logging(run_dir if main_process else None, console=console and main_process)
    if not main_process:
        log.setLevel(logging.WARNING)
    log.info("distill %s: run %r into %s%s", __version__, recipe.name, run_dir, " (resuming)" if resume else "")
    licence_ok, licence_msg = licence_status(recipe.teacher.license)
    if not licence_ok:
        log.warning("licence: %s", licence_msg)
    if accelerator.num_processes > 1:
        log.info("%d processes (%s), batch size %d per process", accelerator.num_processes,
                 accelerator.distributed_type, recipe.train.batch_size)  # fmt: skip
    stops = _stop_after_steps or {}

    data = build_data(recipe.data)
    if {recipe.train.augment, recipe.teacher_train.augment} != {"none"} and data.kind != "image":
        log.warning("augment applies to images only; %s is a table, so it is ignored", data.source)
    log.info("data: %s", data.describe())

    teacher_module, make_student = build_models(recipe, data)
    teacher_history: list[dict[str, Any]] = []
    teacher_weights = run_dir / "teacher.safetensors"
    teacher: Any
    if teacher_module is None:
        teacher = build_external_teacher(recipe.teacher, data)
        teacher_source = recipe.teacher.kind
        teacher_weights = Path(recipe.teacher.path) if recipe.teacher.path else teacher_weights
        log.info("teacher: %s (%s), %d classes", recipe.teacher.kind, recipe.teacher.path or "ensemble", teacher.num_classes)
    else:
        check_output_classes(teacher_module, data.in_shape, data.num_classes, "teacher")
        teacher_source = "checkpoint"
        if recipe.teacher.checkpoint:
            load_weights(teacher_module, recipe.teacher.checkpoint, "teacher")
            log.info("teacher: loaded %s", recipe.teacher.checkpoint)
            if main_process:
                save_weights(teacher_module, teacher_weights)
        else:
            teacher_source = "trained"
            teacher_history = _train_stage(
                "teacher", teacher_module, data, [LossTerm(loss="ce")], recipe.teacher_train,
                run_dir=run_dir, accelerator=accelerator, resume=resume, progress=progress,
                eval_batch=recipe.eval.batch_size, stop_after_steps=stops.get("teacher"),
                augment=recipe.teacher_train.augment if data.kind == "image" else "none",
            )  # fmt: skip
        teacher = TorchTeacher(teacher_module, data.num_classes)

    objective = build_objective(recipe.distill)
    teacher_logits: dict[str, torch.Tensor] = {}
    cache_info: dict[str, Any] = {"cache": "not needed"}
    online = None
    augmenting = recipe.train.augment != "none" and data.kind == "image"
    views = view_term(objective)
    if views is not None and data.kind != "image" and views.params["shift"]:
        raise RecipeError(
            f"{views.label}: shift={views.params['shift']} moves images, but {data.source} is a table. "
            f"Fix: set shift: 0 in the {views.label} term."
        )
    online_inputs = augmenting or views is not None  # the teacher must see each batch as the student does
    _, teacher_layers = layer_names(objective)
    if teacher_layers and teacher_module is None:
        raise TeacherError(
            f"feature losses ({', '.join(t.label for t in objective if 'teacher_features' in t.spec.needs)}) need a "
            f"torch teacher whose layers can be hooked; this teacher is kind {recipe.teacher.kind!r}. "
            "Fix: use logit losses (kd, dkd, dist, ls_kd) with this teacher."
        )
    if online_inputs and needs_teacher(objective) and not can_run_on_inputs(teacher):
        what = "train.augment" if augmenting else f"the {views.label} term (function matching)"  # type: ignore[union-attr]
        fix = "set train.augment: none" if augmenting else "use a teacher that runs on inputs, or kd"
        raise TeacherError(
            f"{what} needs a teacher that runs on the augmented inputs, but this teacher only has "
            f"precomputed outputs. Fix: {fix}."
        )
    if online_inputs and (needs_teacher(objective) or teacher_layers):
        fast_logits = teacher.online() if isinstance(teacher, TorchTeacher) and not teacher_layers else None

        def online(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if fast_logits is not None:
                return fast_logits(x), {}
            if teacher_module is None:
                return teacher.logits(x), {}
            with FeatureCapture(teacher_module, teacher_layers, "teacher") as cap:
                logits = teacher.logits(x)
            return logits, {k: v.detach().clone() for k, v in cap.outputs.items()}

    # what the students learn from (the teacher has seen the whole training split)
    tr = recipe.transfer
    student_data, _ = student_view(data, recipe)
    if student_data is not data:
        log.info("transfer set: %d of %d training samples%s; %d keep their hard label",
                 len(student_data.train), len(data.train),
                 f" (classes {tr.exclude_classes} left out)" if tr.exclude_classes else "",
                 int((student_data.train.y >= 0).sum()))  # fmt: skip
    teacher_features = None
    if teacher_layers and not online_inputs:
        t0 = time.perf_counter()
        teacher_features = teacher_feature_table(teacher_module, teacher_layers, student_data.train.x, recipe.eval.batch_size)
        size = sum(v.numel() * 4 for v in teacher_features.values()) / 2**20
        log.info("teacher features of layers %s: computed once for the training split (%.0f MiB in memory), %.2fs",
                 ", ".join(sorted(teacher_layers)), size, time.perf_counter() - t0)  # fmt: skip
    if needs_teacher(objective):
        if online_inputs:
            why = "train.augment" if augmenting else f"{views.label} views"  # type: ignore[union-attr]
            cache_info = {"cache": f"off ({why}: the teacher runs online)"}
            log.info("teacher outputs: %s, so the teacher runs online on every batch (slower)", why)
        else:
            if not recipe.teacher.cache:
                log.info("teacher outputs: teacher.cache is off; computing them in memory for this run")
            teacher_logits, cache_info = teacher_outputs(teacher, data, recipe, recipe.eval.batch_size, accelerator)
            _, teacher_logits["train"] = student_view(data, recipe, teacher_logits["train"])

    histories: dict[str, list[dict[str, Any]]] = {"teacher": teacher_history}
    students: list[tuple[str, str, nn.Module, Path]] = []
    if recipe.eval.baseline:
        baseline_cfg = recipe.eval.baseline_train or recipe.train
        baseline = make_student(baseline_cfg.seed)
        histories["baseline"] = _train_stage(
            "baseline", baseline, labeled_only(student_data), [LossTerm(loss="ce")], baseline_cfg,
            run_dir=run_dir, accelerator=accelerator, resume=resume, progress=progress,
            eval_batch=recipe.eval.batch_size, stop_after_steps=stops.get("baseline"),
            augment=baseline_cfg.augment if data.kind == "image" else "none",
        )  # fmt: skip
        students.append(("student, hard labels", "baseline", baseline, run_dir / "baseline.safetensors"))
    student = make_student()
    check_output_classes(student, data.in_shape, data.num_classes, "student")
    adapters = None
    if teacher_layers:
        assert teacher_module is not None
        tm = teacher_module
        adapters = seeded_build(lambda: build_adapters(objective, student, tm, data.in_shape), recipe.train.seed)
        if len(adapters):
            log.info("feature adapters (trained with the student): %s",
                     "; ".join(f"{k}: {m}" for k, m in adapters.items()))  # fmt: skip
    histories["student"] = _train_stage(
        "student", student, student_data, list(recipe.distill), recipe.train,
        run_dir=run_dir, accelerator=accelerator, resume=resume, progress=progress,
        eval_batch=recipe.eval.batch_size, teacher_logits=teacher_logits.get("train"),
        online_teacher=online, stop_after_steps=stops.get("student"),
        adapters=adapters, teacher_features=teacher_features,
        augment=recipe.train.augment if data.kind == "image" else "none",
    )  # fmt: skip
    students.append(("student, distilled", "student", student, run_dir / "student.safetensors"))

    if not accelerator.is_main_process:
        return RunResult(run_dir, {}, {}, "")
    log.info("measuring accuracy, size, FLOPs, latency and throughput (side by side) ...")
    table, logits = evaluate_models(
        [("teacher", "teacher", teacher_module if teacher_module is not None else teacher, teacher_weights), *students],
        data, recipe,
        predictions_path=run_dir / "predictions.safetensors",
    )  # fmt: skip
    markdown = render_markdown(table)
    transfer_report: dict[str, Any] = {}
    if tr.exclude_classes:
        for label, role, _, _ in students:
            transfer_report[role] = class_bias_correction(
                logits[role]["val"], data.val.y, logits[role]["test"], data.test.y, list(tr.exclude_classes)
            )
            r = transfer_report[role]
            markdown += (
                f"\n{label}: on the never-seen classes {tr.exclude_classes}, test accuracy "
                f"{100 * r['test_acc_on_classes_before']:.1f}% → {100 * r['test_acc_on_classes_after']:.1f}% after adding "
                f"{r['bias']:.2f} to their logits (tuned on validation); overall {100 * r['test_acc_before']:.2f}% → "
                f"{100 * r['test_acc_after']:.2f}%."
            )
        markdown += "\n"
    metrics = {
        "distill_version": __version__,
        "name": recipe.name,
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val), "test": len(data.test),
                 "num_classes": data.num_classes, "class_names": data.class_names},
        "teacher": {"source": teacher_source, "fingerprint": teacher.fingerprint(),
                    "checkpoint": recipe.teacher.checkpoint, "name": recipe.teacher.name,
                    "license": recipe.teacher.license},
        "teacher_outputs": cache_info,
        "models": {e["role"]: {k: v for k, v in e.items() if k != "role"} for e in table["models"]},
        "summary": table["summary"],
        "transfer": {"exclude_classes": tr.exclude_classes, "labeled_fraction": tr.labeled_fraction,
                     "train_samples": len(student_data.train),
                     "labeled_samples": int((student_data.train.y >= 0).sum()), "bias_correction": transfer_report},
        "history": histories,
        "seconds": round(time.time() - started, 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "command": " ".join(["distill", *sys.argv[1:]]) if sys.argv and "distill" in sys.argv[0] else None,
    }  # fmt: skip
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "comparison.json", table)
    write_text(run_dir / "comparison.md", markdown)
    if recipe.compress is not None and (recipe.compress.prune.kind != "none" or recipe.compress.quantize.kind != "none"):
        from distill.engine.stages import compress_run

        log.info("compress stage ...")
        metrics["compress"] = compress_run(run_dir, progress=progress)
        write_json(run_dir / "metrics.json", metrics)
    if recipe.export is not None:
        from distill.engine.stages import export_run

        log.info("export stage ...")
        metrics["export"] = export_run(run_dir)
        write_json(run_dir / "metrics.json", metrics)
    if recipe.output.report:
        write_model_card(run_dir)
        report = write_report(run_dir)
        tb = write_tensorboard(run_dir)
        log.info("report: %s; model card: %s%s", report, run_dir / "README.md",
                 f"; tensorboard --logdir {tb}" if tb else "")  # fmt: skip
    log.info("\n%s", markdown)
    log.info("run directory: %s (%.1fs)", run_dir, metrics["seconds"])
    return RunResult(run_dir, metrics, table, markdown)


