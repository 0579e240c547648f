"""Classification's preflight: everything that can be checked before the run directory exists (the data,
the teacher and its outputs, the student, the loss terms against this data and teacher, the feature layers,
the optional packages), and the check after the teacher is ready that it beats chance."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distill.core.context import require
from distill.data import DataBundle
from distill.tasks.classification.data import build_data
from distill.errors import DataError, Problems, RecipeError, TeacherError
from distill.tasks.classification.recipe import Recipe
from distill.tasks.classification.builders import build_models
from distill.tasks.classification.features import feature_shapes, layer_names
from distill.tasks.classification.objective import build_objective, needs_teacher, predict_logits, view_term
from distill.tasks.classification.signal import student_view
from distill.tasks.classification.teachers import TorchTeacher, check_output_classes, load_weights
from distill.tasks.classification.teachers.checks import output_kind
from distill.tasks.classification.teachers.from_recipe import build_external_teacher
from distill.tasks.classification.teachers.external import can_run_on_inputs

log = logging.getLogger("distill")


@dataclass
class Setup:
    """What the preflight built and checked before anything is written."""

    data: DataBundle
    student_data: DataBundle
    teacher_module: nn.Module | None
    teacher: Any  # a TorchTeacher, or the external teacher (ONNX, scikit-learn, outputs, ensemble)
    make_student: Any
    objective: list[Any]
    teacher_layers: set[str]
    online_inputs: bool
    augmenting: bool
    views: Any = None


def preflight(recipe: Recipe) -> Setup:
    """Everything that can be checked before training: the data, the teacher (built, loaded, its output
    width, tried against the data), the student, the loss terms against this data and teacher, the feature
    layers. Independent problems are reported together (a :class:`PreflightError`); nothing is written."""
    problems = Problems()
    with problems.check():
        _optional_dependencies(recipe)
    objective: list[Any] = []
    with problems.check():
        objective = build_objective(recipe.distill)
    data = None
    with problems.check():
        data = build_data(recipe.data)
    if data is None:  # everything below is checked against the data
        problems.raise_any()
    assert data is not None
    if {recipe.train.augment, recipe.teacher_train.augment} != {"none"} and data.kind != "image":
        log.warning("augment applies to images only; %s is a table, so it is ignored", data.source)
    teacher_module, make_student, teacher, probe = None, None, None, None
    with problems.check():
        teacher_module, make_student = build_models(recipe, data)
    if make_student is not None:
        with problems.check():
            teacher = _checked_teacher(recipe, data, teacher_module)
        with problems.check():
            probe = make_student()
            check_output_classes(probe, data.in_shape, data.num_classes, "student")
    with problems.check():
        views = _check_terms(recipe, data, objective, teacher_module, probe, teacher)
    with problems.check():
        check_transfer(recipe, data, world_size())
    problems.raise_any()
    augmenting = recipe.train.augment != "none" and data.kind == "image"
    _, teacher_layers = layer_names(objective)
    student_data, _ = student_view(data, recipe)
    return Setup(data, student_data, teacher_module, teacher, make_student, objective, teacher_layers,
                 augmenting or views is not None, augmenting, views)  # fmt: skip


def _checked_teacher(recipe: Recipe, data: DataBundle, teacher_module: nn.Module | None) -> Any:
    """The teacher object, built or loaded and tried against the data."""
    if teacher_module is None:
        return build_external_teacher(recipe.teacher, data)
    check_output_classes(teacher_module, data.in_shape, data.num_classes, "teacher")
    if recipe.teacher.checkpoint:
        load_weights(teacher_module, recipe.teacher.checkpoint, "teacher")
        _check_finite(teacher_module, data, f"teacher.checkpoint {recipe.teacher.checkpoint}")
    return TorchTeacher(teacher_module, data.num_classes)


def _check_terms(recipe: Recipe, data: DataBundle, objective: list[Any], teacher_module: nn.Module | None,
                 probe: nn.Module | None, teacher: Any) -> Any:  # fmt: skip
    """The loss terms against this data and teacher: views, feature layers, inputs the teacher must run on.
    Returns the term that sets the training views (function matching), or None."""
    augmenting = recipe.train.augment != "none" and data.kind == "image"
    views = view_term(objective)
    if views is not None and data.kind != "image" and views.params["shift"]:
        raise RecipeError([
            f"{views.label}: shift={views.params['shift']} moves images, but {data.source} is a table. "
            f"Fix: set shift: 0 in the {views.label} term."
        ])
    student_layers, teacher_layers = layer_names(objective)
    if teacher_layers and teacher_module is None and recipe.teacher.kind != "torch":
        raise TeacherError(
            f"feature losses ({', '.join(t.label for t in objective if 'teacher_features' in t.spec.needs)}) need a "
            f"torch teacher whose layers can be hooked; this teacher is kind {recipe.teacher.kind!r}. "
            "Fix: use logit losses (kd, dkd, dist, ls_kd) with this teacher."
        )
    if student_layers and probe is not None:
        feature_shapes(probe, student_layers, data.in_shape, "student")
    if teacher_layers and teacher_module is not None:
        feature_shapes(teacher_module, teacher_layers, data.in_shape, "teacher")
    online_inputs = augmenting or views is not None  # the teacher must see each batch as the student does
    if online_inputs and teacher is not None and needs_teacher(objective) and not can_run_on_inputs(teacher):
        what = "train.augment" if augmenting else f"the {views.label} term (function matching)"  # type: ignore[union-attr]
        fix = "set train.augment: none" if augmenting else "use a teacher that runs on inputs, or kd"
        raise TeacherError(
            f"{what} needs a teacher that runs on the augmented inputs, but this teacher only has "
            f"precomputed outputs. Fix: {fix}."
        )
    return views


def world_size() -> int:
    """The processes a run trains in: torchrun's WORLD_SIZE, or the --nproc the parent is about to launch."""
    return max(1, int(os.environ.get("WORLD_SIZE") or os.environ.get("DISTILL_NPROC") or 1))


def check_transfer(recipe: Recipe, data: DataBundle, world: int = 1) -> None:
    """The students' training split the ``transfer`` section leaves: a class to train on, at least 2 samples a
    process, and (with ``labeled_fraction`` < 1) enough labelled samples for every class and every process."""
    from distill.data import labeled_count, transfer_set

    tr = recipe.transfer
    student, keep = transfer_set(data, tr.exclude_classes, tr.labeled_fraction, tr.seed)  # names bad classes
    need = 2 * world
    if len(student.train) < need:
        raise DataError(
            f"the students' training split has {len(student.train)} samples (after transfer.exclude_classes) for "
            f"{world} process(es): at least {need} are needed. Fix: use more data, fewer --nproc, or exclude fewer classes."
        )
    if tr.labeled_fraction >= 1.0:
        return
    trained = data.num_classes - len(set(tr.exclude_classes))
    labeled = labeled_count(len(keep), tr.labeled_fraction)
    need = max(need, trained)
    if labeled < need:
        frac = min(1.0, math.ceil(1000 * need / len(keep)) / 1000)
        raise DataError(
            f"transfer.labeled_fraction {tr.labeled_fraction:g} keeps the labels of {labeled} of {len(keep)} training "
            f"samples: fewer than the {trained} classes the students train on (and the 2 per process the hard-label "
            f"training needs), so the hard labels cannot show every class. Fix: --set transfer.labeled_fraction={frac:g} "
            f"(or more), which keeps {labeled_count(len(keep), frac)}."
        )


def check_teacher_beats_chance(setup: Setup, val_logits: torch.Tensor | None, batch_size: int) -> None:
    """Stop when the teacher's validation accuracy is no better than always answering the most frequent class
    (plus two standard errors): its soft labels would teach nothing, and the usual cause is a teacher that
    sees the features or the classes in another order than the data has them."""
    from distill.tasks.classification.teachers.ensemble import teacher_logits_for

    val = setup.data.val
    if len(val) < 20:
        return
    if val_logits is None:
        module = setup.teacher_module
        val_logits = predict_logits(module, val.x, batch_size) if module is not None else \
            teacher_logits_for(setup.teacher, val.x, val.ids).float()  # fmt: skip
    acc = float((val_logits.argmax(-1) == val.y).float().mean())
    majority = float(torch.bincount(val.y[val.y >= 0], minlength=setup.data.num_classes).max()) / len(val)
    chance = max(majority, 1.0 / setup.data.num_classes)
    margin = 2 * (chance * (1 - chance) / len(val)) ** 0.5
    if acc <= chance + margin:
        raise TeacherError(
            f"the teacher scores {100 * acc:.1f}% on the validation split ({len(val)} samples), no better than chance "
            f"(the most frequent class alone: {100 * majority:.1f}%; {setup.data.num_classes} classes): its outputs would "
            "teach nothing. Fix: check that it sees the data as it was trained on (feature order and preprocessing: "
            "teacher.inputs; its class order against data.class names), or set eval.allow_chance_teacher: true if this "
            "is intended."
        )


def _check_finite(module: nn.Module, data: DataBundle, what: str) -> None:
    """A loaded teacher's outputs on a sample of the training split are finite (NaN weights are caught here,
    before they are cached or taught)."""
    sample = data.train.x[:64]
    with torch.inference_mode():
        was = module.training
        module.eval()
        out = module(sample)
        module.train(was)
    out = getattr(out, "logits", out)
    bad = [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad or not bool(torch.isfinite(out).all()):
        where = f": non-finite weights in {', '.join(bad[:5])}" if bad else ""
        raise TeacherError(
            f"the teacher from {what} gives NaN or infinite outputs on {len(sample)} training samples{where}. "
            "Fix: check that checkpoint (it may come from a diverged training), or train the teacher again."
        )
    if output_kind(out) == "probs":
        raise TeacherError(
            f"the teacher from {what} outputs probabilities (every row of {len(sample)} training samples lies in [0, 1] "
            "and sums to 1): distill needs the scores before the softmax, and read as logits these would make a nearly "
            "uniform target. Fix: remove the final softmax from the teacher module (return logits or log-probabilities)."
        )


def _optional_dependencies(recipe: Recipe) -> None:
    """The packages of the optional stages the recipe turns on, checked before anything runs."""
    if recipe.data.source == "table":
        require({"pandas": "tables"}, "data.source table")
        if str(recipe.data.path or "").lower().endswith((".parquet", ".pq")):
            require({"pyarrow": "tables"}, f"the Parquet table {recipe.data.path}")
    if recipe.export is not None and "onnx" in recipe.export.formats:
        require({"onnx": "onnx", "onnxruntime": "onnx"}, "export.formats onnx")
    if recipe.export is not None and "hf" in recipe.export.formats:
        require({"transformers": "lm"}, "export.formats hf")
    teachers = [recipe.teacher, *(recipe.teacher.members or [])]
    if any(t.kind == "hf" for t in teachers):
        require({"transformers": "lm"}, "a Hugging Face image classifier teacher (teacher.kind hf)")
    if any(t.kind == "onnx" for t in teachers):
        require({"onnxruntime": "onnx"}, "an ONNX teacher")
    if any(t.kind == "sklearn" and str(t.path or "").endswith(".skops") for t in teachers):
        require({"skops": "sklearn"}, "a .skops scikit-learn teacher")
