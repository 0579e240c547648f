"""Accuracy and cost of every model of a run, side by side (`distill eval` and the end of `distill run`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.bench import measure_callable, measure_model
from distill.data import DataBundle
from distill.tasks.classification.data import build_data
from distill.tasks.classification import trees
from distill.tasks.classification.builders import load_run_recipe, load_run_student, load_run_teacher
from distill.core.context import torch_threads
from distill.core.logs import setup_logging
from distill.core.fsutil import write_json, write_with
from distill.tasks.classification.recipe import Recipe
from distill.report import comparison, render_markdown
from distill.tasks.classification.objective import accuracy_from_logits, predict_logits
from distill.tasks.classification.teachers.ensemble import teacher_logits_for
from distill.tasks.classification.teachers.external import can_run_on_inputs

log = logging.getLogger("distill")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    table: dict[str, Any]
    table_markdown: str


def measure(model: Any, data: DataBundle, weights: Path, recipe: Recipe) -> dict[str, Any]:
    """The cost of one model: a torch module, or a teacher object (ONNX, scikit-learn, precomputed, ensemble)."""
    e = recipe.eval
    timing = dict(latency_runs=e.latency_runs, warmup_runs=e.warmup_runs,
                  throughput_batch=e.throughput_batch, throughput_runs=e.throughput_runs)  # fmt: skip
    if isinstance(model, nn.Module):
        return measure_model(model, data.in_shape, weights_path=weights, **timing).to_dict()
    fn = model.logits if can_run_on_inputs(model) else None
    return measure_callable(fn, data.in_shape, file_path=weights, **timing).to_dict()


def evaluate_models(
    models: list[tuple[str, str, Any, Path]],
    data: DataBundle,
    recipe: Recipe,
    predictions_path: Path | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Accuracy and cost of each ``(label, role, module or teacher object, weights_path)``, side by side.

    Returns the comparison table and ``{role: {"val": logits, "test": logits}}``. With
    ``predictions_path``, the test logits of every model (and the test labels) are saved
    there as safetensors: ``test_labels``, ``test_logits.<role>``.
    """
    entries = []
    logits: dict[str, dict[str, torch.Tensor]] = {}
    for label, role, module, weights in models:
        if isinstance(module, nn.Module):
            out = {name: predict_logits(module, split.x, recipe.eval.batch_size) for name, split in
                   (("val", data.val), ("test", data.test))}  # fmt: skip
        else:
            out = {name: teacher_logits_for(module, split.x, split.ids).float() for name, split in
                   (("val", data.val), ("test", data.test))}  # fmt: skip
        logits[role] = out
        entries.append({
            "label": label, "role": role,
            "val_acc": accuracy_from_logits(out["val"], data.val.y),
            "test_acc": accuracy_from_logits(out["test"], data.test.y),
            "cost": measure(module, data, weights, recipe),
        })  # fmt: skip
    if predictions_path is not None:
        from safetensors.torch import save_file

        preds = {"test_labels": data.test.y.clone(), **{f"test_logits.{r}": o["test"].contiguous() for r, o in logits.items()}}
        write_with(predictions_path, lambda tmp: save_file(preds, str(tmp)))
    _flag_chance(entries, data, recipe)
    return comparison(entries), logits


def _flag_chance(entries: list[dict[str, Any]], data: DataBundle, recipe: Recipe) -> None:
    """Mark (``at_chance``, ``chance_note``) and log loudly each student no better than chance on the test split."""
    from distill.report.chance import chance_level, chance_message

    lr = recipe.train.optimizer.lr
    fix = (f"lower train.optimizer.lr (it is {lr:g}; try 10x smaller) or train longer (train.epochs), and check the "
           "loss in run.log; the teacher's accuracy above shows what the data allows.")  # fmt: skip
    labels = data.test.y.tolist()
    for e in entries:
        if e["role"] == "teacher":
            continue
        verdict = chance_level(e["test_acc"], labels, data.num_classes)
        e["at_chance"] = verdict["at_chance"]
        if verdict["at_chance"]:
            what = {"student": "distilled student", "baseline": "hard-label student (the baseline)"}.get(e["role"], e["label"])
            e["chance_note"] = chance_message(what, verdict, fix)
            log.warning("WARNING: %s", e["chance_note"])


def evaluate(run_dir: str | Path, *, console: bool = True) -> RunResult:
    """Re-evaluate a finished run: rebuild the models from its weights, measure, write eval.json."""
    from distill.tasks.classification.run_files import check_run_files

    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    check_run_files(run_dir, "eval")
    setup_logging(None, console=console)
    with torch_threads(recipe.train.num_threads):  # the caller's thread count comes back after
        data = build_data(recipe.data)
        teacher, module, path = load_run_teacher(run_dir, recipe, data)
        models: list[tuple[str, str, Any, Path]] = [("teacher", "teacher", module if module is not None else teacher, path)]
        for label, role in (("student, hard labels", "baseline"), ("student, distilled", "student")):
            student = load_run_student(run_dir, recipe, data, role)
            if student is not None:
                models.append((label, role, student, run_dir / f"{role}.safetensors"))
        if (run_dir / trees.FILE).is_file():  # the saved gradient-boosted trees of a table run (not refitted)
            fitted = trees.fit_trees(data.train, data.num_classes, recipe.train.seed, run_dir)
            models.append((trees.LABEL, trees.ROLE, fitted, run_dir / trees.FILE))
        table, _ = evaluate_models(models, data, recipe)
    markdown = render_markdown(table)
    write_json(run_dir / "eval.json", table)
    log.info("\n%s", markdown)
    return RunResult(run_dir, {}, table, markdown)
