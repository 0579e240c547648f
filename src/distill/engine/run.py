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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from distill import __version__
from distill.bench import measure_callable, measure_model
from distill.data import DataBundle, build_data, labeled_only, transfer_set
from distill.engine.checkpoint import CheckpointStore
from distill.engine.loop import FitResult, fit
from distill.errors import DistillError, RunDirError, TeacherError
from distill.fsutil import write_json, write_text, write_with
from distill.models import build
from distill.recipe import LossTerm, Recipe, TrainConfig, validate_recipe
from distill.report import comparison, licence_status, render_markdown, write_model_card, write_report, write_tensorboard
from distill.tasks.classification import (
    accuracy_from_logits,
    build_objective,
    class_bias_correction,
    needs_teacher,
    predict_logits,
)
from distill.tasks.features import FeatureCapture, build_adapters, layer_names, teacher_feature_table
from distill.teachers import TorchTeacher, build_teacher_module, check_output_classes, load_weights
from distill.teachers.external import build_external_teacher, can_run_on_inputs
from distill.teachers.cache import TeacherCache, cache_key
from distill.teachers.ensemble import teacher_logits_for

log = logging.getLogger("distill")
_HANDLER_TAG = "_distill_handler"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    table: dict[str, Any]
    table_markdown: str


# ------------------------------------------------------------------ logging
def setup_logging(run_dir: Path | None, *, console: bool = True, level: int = logging.INFO) -> None:
    log.setLevel(level)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, _HANDLER_TAG, False):
            log.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if console:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(logging.Formatter("%(message)s"))
        setattr(ch, _HANDLER_TAG, True)
        log.addHandler(ch)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
        fh.setFormatter(fmt)
        setattr(fh, _HANDLER_TAG, True)
        log.addHandler(fh)


# ---------------------------------------------------------------- run dir
def _check_run_dir(recipe: Recipe, resume: bool, overwrite: bool) -> str:
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


def _prepare_run_dir(recipe: Recipe, decision: str) -> Path:
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


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with(path, lambda tmp: save_file(state, str(tmp)))


def _seeded_build(fn: Any, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def make_accelerator(recipe: Recipe) -> Any:
    from accelerate import Accelerator

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[recipe.train.precision]
    if mp == "fp16" and not torch.cuda.is_available():
        raise DistillError("train.precision fp16 needs a GPU; none is available. Fix: use fp32 or bf16 on CPU.")
    # cpu=True where there is no GPU, so that torchrun/accelerate launch give DDP over gloo
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())


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
        _save_weights(model.module if hasattr(model, "module") else model, weights)
        write_json(hist_path, result.history)
    return result.history


def sharded_predict(module: nn.Module, x: torch.Tensor, batch_size: int, accelerator: Any) -> torch.Tensor:
    """Logits for all rows of ``x``; with several processes each computes a contiguous
    shard and the shards are gathered (every process gets the whole result)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if world == 1:
        return predict_logits(module, x, batch_size)
    n = x.shape[0]
    chunk = -(-n // world)
    part = predict_logits(module, x[rank * chunk : (rank + 1) * chunk], batch_size)
    width = part.shape[1] if part.numel() else predict_logits(module, x[:1], 1).shape[1]
    padded = torch.zeros(chunk, width)
    padded[: part.shape[0]] = part
    gathered = accelerator.gather(padded.to(accelerator.device)).cpu()
    return gathered[:n].contiguous()


def _teacher_outputs(
    teacher: Any, data: DataBundle, recipe: Recipe, eval_batch: int, accelerator: Any
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Teacher logits for every split: from the cache when possible.

    With several processes the cache is read by all of them (they agree on hit or
    miss: nothing writes between the barrier and the read), a miss is computed
    in shards across the processes and merged, and the main process stores it.
    """
    out: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {"cache": "off", "seconds": 0.0}
    use_cache = recipe.teacher.cache
    cache = TeacherCache(recipe.output.cache_dir) if use_cache else None
    hits = []
    module = getattr(teacher, "module", None)
    fingerprint = teacher.fingerprint()

    def predict(split: Any) -> torch.Tensor:
        if isinstance(teacher, TorchTeacher):
            return sharded_predict(module, split.x, eval_batch, accelerator)
        return teacher_logits_for(teacher, split.x, split.ids).float()

    t0 = time.perf_counter()
    for name, split in data.splits().items():
        if cache is None:
            out[name] = predict(split)
            continue
        key = cache_key(fingerprint, split.fingerprint(), data.preprocessing, "classification-logits-v1")
        accelerator.wait_for_everyone()
        cached = cache.load(key)
        if cached is not None:
            out[name] = cached
        else:
            out[name] = predict(split)
            if accelerator.is_main_process:
                cache.store(key, out[name], {"split": name, "source": data.source})
        hits.append(cached is not None)
        info.setdefault("files", {})[name] = str(cache.path_for(key))
    accelerator.wait_for_everyone()
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["processes"] = accelerator.num_processes
    if cache is not None:
        info["cache"] = "hit" if all(hits) else ("partial" if any(hits) else "miss")
        log.info(
            "teacher outputs: cache %s (%s), %.2fs", info["cache"], recipe.output.cache_dir, info["seconds"]
        )
    return out, info


def build_models(recipe: Recipe, data: DataBundle) -> tuple[nn.Module | None, Any]:
    """Build the (untrained) teacher module (None when the teacher is not a torch module)
    and a student factory for ``recipe``."""
    t = recipe.teacher
    teacher = None
    if t.kind == "torch":
        teacher = _seeded_build(
            lambda: build_teacher_module(t.arch, t.factory, t.params, data.in_shape, data.num_classes),
            recipe.teacher_train.seed,
        )

    def student(seed: int | None = None) -> nn.Module:
        return _seeded_build(
            lambda: build(recipe.student.arch, data.in_shape, data.num_classes, recipe.student.params),
            recipe.train.seed if seed is None else seed,
        )

    return teacher, student


def _measure(model: Any, data: DataBundle, weights: Path, recipe: Recipe) -> dict[str, Any]:
    e = recipe.eval
    if not isinstance(model, nn.Module):  # an ONNX / scikit-learn / precomputed / ensemble teacher
        fn = model.logits if can_run_on_inputs(model) else None
        return measure_callable(
            fn, data.in_shape, file_path=weights, latency_runs=e.latency_runs, warmup_runs=e.warmup_runs,
            throughput_batch=e.throughput_batch, throughput_runs=e.throughput_runs,
        ).to_dict()  # fmt: skip
    cost = measure_model(
        model,
        data.in_shape,
        weights_path=weights,
        latency_runs=e.latency_runs,
        warmup_runs=e.warmup_runs,
        throughput_batch=e.throughput_batch,
        throughput_runs=e.throughput_runs,
    )
    return cost.to_dict()


def evaluate_models(
    models: list[tuple[str, str, Any, Path]],
    data: DataBundle,
    recipe: Recipe,
    predictions_path: Path | None = None,
) -> dict[str, Any]:
    """Accuracy and cost of each ``(label, role, module or teacher object, weights_path)``, side by side.

    With ``predictions_path``, the test logits of every model (and the test labels)
    are saved there as safetensors: ``test_labels``, ``test_logits.<role>``.
    """
    entries = []
    preds: dict[str, torch.Tensor] = {"test_labels": data.test.y.clone()}
    for label, role, module, weights in models:
        if isinstance(module, nn.Module):
            val_logits = predict_logits(module, data.val.x, recipe.eval.batch_size)
            test_logits = predict_logits(module, data.test.x, recipe.eval.batch_size)
        else:
            val_logits = teacher_logits_for(module, data.val.x, data.val.ids).float()
            test_logits = teacher_logits_for(module, data.test.x, data.test.ids).float()
        preds[f"test_logits.{role}"] = test_logits.contiguous()
        entries.append(
            {
                "label": label,
                "role": role,
                "val_acc": accuracy_from_logits(val_logits, data.val.y),
                "test_acc": accuracy_from_logits(test_logits, data.test.y),
                "cost": _measure(module, data, weights, recipe),
            }
        )
    if predictions_path is not None:
        from safetensors.torch import save_file

        write_with(predictions_path, lambda tmp: save_file(preds, str(tmp)))
    return comparison(entries)


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
    decision = _check_run_dir(recipe, resume, overwrite)
    accelerator.wait_for_everyone()
    run_dir = _prepare_run_dir(recipe, decision) if main_process else recipe.run_dir
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
                _save_weights(teacher_module, teacher_weights)
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
    _, teacher_layers = layer_names(objective)
    if teacher_layers and teacher_module is None:
        raise TeacherError(
            f"feature losses ({', '.join(t.label for t in objective if 'teacher_features' in t.spec.needs)}) need a "
            f"torch teacher whose layers can be hooked; this teacher is kind {recipe.teacher.kind!r}. "
            "Fix: use logit losses (kd, dkd, dist, ls_kd) with this teacher."
        )
    if augmenting and needs_teacher(objective) and not can_run_on_inputs(teacher):
        raise TeacherError(
            "train.augment needs a teacher that runs on the augmented inputs, but this teacher only has "
            "precomputed outputs. Fix: set train.augment: none."
        )
    if augmenting and (needs_teacher(objective) or teacher_layers):

        def online(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if teacher_module is None:
                return teacher.logits(x), {}
            with FeatureCapture(teacher_module, teacher_layers, "teacher") as cap:
                logits = teacher.logits(x)
            return logits, {k: v.detach().clone() for k, v in cap.outputs.items()}

    # what the students learn from (the teacher has seen the whole training split)
    student_data, train_index = data, None
    tr = recipe.transfer
    if tr.exclude_classes or tr.labeled_fraction < 1.0:
        student_data, train_index = transfer_set(data, tr.exclude_classes, tr.labeled_fraction, tr.seed)
        n_lab = int((student_data.train.y >= 0).sum())
        log.info("transfer set: %d of %d training samples%s; %d keep their hard label",
                 len(student_data.train), len(data.train),
                 f" (classes {tr.exclude_classes} left out)" if tr.exclude_classes else "", n_lab)  # fmt: skip
    teacher_features = None
    if teacher_layers and not augmenting:
        t0 = time.perf_counter()
        teacher_features = teacher_feature_table(teacher_module, teacher_layers, student_data.train.x, recipe.eval.batch_size)
        size = sum(v.numel() * 4 for v in teacher_features.values()) / 2**20
        log.info("teacher features of layers %s: computed once for the training split (%.0f MiB in memory), %.2fs",
                 ", ".join(sorted(teacher_layers)), size, time.perf_counter() - t0)  # fmt: skip
    if needs_teacher(objective):
        if augmenting:
            cache_info = {"cache": "off (train.augment: the teacher runs online)"}
            log.info("teacher outputs: train.augment is on, so the teacher runs online on every batch (slower)")
        else:
            if not recipe.teacher.cache:
                log.info("teacher outputs: teacher.cache is off; computing them in memory for this run")
            teacher_logits, cache_info = _teacher_outputs(teacher, data, recipe, recipe.eval.batch_size, accelerator)
            if train_index is not None:
                teacher_logits["train"] = teacher_logits["train"][torch.as_tensor(train_index, dtype=torch.long)]

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
        adapters = _seeded_build(lambda: build_adapters(objective, student, tm, data.in_shape), recipe.train.seed)
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
    table = evaluate_models(
        [("teacher", "teacher", teacher_module if teacher_module is not None else teacher, teacher_weights), *students],
        data, recipe,
        predictions_path=run_dir / "predictions.safetensors",
    )  # fmt: skip
    markdown = render_markdown(table)
    transfer_report: dict[str, Any] = {}
    if tr.exclude_classes:
        for label, role, module, _ in students:
            transfer_report[role] = class_bias_correction(
                predict_logits(module, data.val.x, recipe.eval.batch_size), data.val.y,
                predict_logits(module, data.test.x, recipe.eval.batch_size), data.test.y, list(tr.exclude_classes),
            )  # fmt: skip
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


# ------------------------------------------------------------------- eval
def load_run_recipe(run_dir: str | Path) -> Recipe:
    run_dir = Path(run_dir)
    path = run_dir / "recipe.yaml"
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}. Fix: pass the folder `distill run` wrote (e.g. runs/NAME).")
    if not path.exists():
        raise RunDirError(f"{run_dir} has no recipe.yaml, so it is not a distill run directory.")
    raw = yaml.safe_load(path.read_text())
    recipe = validate_recipe(raw, str(path))
    return recipe.model_copy(update={"output": recipe.output.model_copy(update={"dir": str(run_dir)})})


def evaluate(run_dir: str | Path, *, console: bool = True) -> RunResult:
    """Re-evaluate a finished run: rebuild the models from its weights, measure, write eval.json."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    setup_logging(None, console=console)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    data = build_data(recipe.data)
    teacher_module, make_student = build_models(recipe, data)
    models: list[tuple[str, str, Any, Path]] = []
    if teacher_module is None:
        path = Path(recipe.teacher.path) if recipe.teacher.path else run_dir / "teacher"
        models.append(("teacher", "teacher", build_external_teacher(recipe.teacher, data), path))
    for label, role in (("teacher", "teacher"), ("student, hard labels", "baseline"), ("student, distilled", "student")):
        if role == "teacher" and teacher_module is None:
            continue
        weights = run_dir / f"{role}.safetensors"
        if not weights.exists():
            if role == "baseline":
                continue
            raise RunDirError(
                f"{weights} is missing: the run did not finish. Fix: finish it with `distill run RECIPE --resume`."
            )
        module = teacher_module if role == "teacher" else make_student()
        try:
            load_weights(module, weights, role)
        except TeacherError as exc:
            raise RunDirError(str(exc)) from None
        models.append((label, role, module, weights))
    table = evaluate_models(models, data, recipe)
    markdown = render_markdown(table)
    write_json(run_dir / "eval.json", table)
    log.info("\n%s", markdown)
    return RunResult(run_dir, {}, table, markdown)
