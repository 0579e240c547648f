"""The teacher a classification recipe describes when it is not a torch module trained here: an ONNX file, a
scikit-learn estimator, a file of precomputed outputs, a Hugging Face image classifier folder, or an ensemble
(the teachers themselves are :mod:`distill.tasks.classification.teachers`')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.data import DataBundle
from distill.errors import TeacherError
from distill.tasks.classification.recipe import TeacherConfig
from distill.tasks.classification.teachers.checks import check_outputs
from distill.tasks.classification.teachers.external import RawInputs, align


def build_external_teacher(cfg: TeacherConfig, data: DataBundle) -> Any:
    """A teacher object (``num_classes``, ``logits(x)`` or ``logits_for_ids(ids)``, ``fingerprint()``)."""
    teacher = _build(cfg, data, "teacher")
    if teacher.num_classes != data.num_classes:
        raise TeacherError(
            f"the teacher ({cfg.kind}) outputs {teacher.num_classes} classes but the data has {data.num_classes}. "
            "Fix: use a teacher trained on the same classes."
        )
    return teacher


def _build(cfg: TeacherConfig, data: DataBundle, where: str) -> Any:
    t = _build_kind(cfg, data, where)
    if cfg.kind in {"onnx", "sklearn"} and cfg.inputs == "raw":
        t = RawInputs(t, data)
    if cfg.kind == "ensemble":
        return t  # its members were checked one by one
    values = cfg.values if cfg.kind == "onnx" or cfg.values in ("logits", "log_probs") else "auto"
    return check_outputs(t, data, _who(cfg, where), values)


def _who(cfg: TeacherConfig, where: str) -> str:
    kind = {"onnx": "ONNX", "sklearn": "scikit-learn", "precomputed": "precomputed", "torch": "torch",
            "hf": "Hugging Face"}[cfg.kind]  # fmt: skip
    named = f" {Path(str(cfg.path)).name}" if cfg.path else ""
    return f"the {kind} teacher{named} ({where})"


def _build_kind(cfg: TeacherConfig, data: DataBundle, where: str) -> Any:
    if cfg.kind == "onnx":
        from distill.tasks.classification.teachers.onnx import OnnxTeacher

        t = OnnxTeacher(str(cfg.path), output_name=cfg.output_name)
        align(t, t.class_labels, data, _who(cfg, where))
        t.check_sample_shape(data.in_shape)
        return t
    if cfg.kind == "sklearn":
        from distill.tasks.classification.teachers.sklearn import SklearnTeacher

        t = SklearnTeacher.from_path(str(cfg.path), trust_pickle=cfg.trust_pickle, trusted_types=tuple(cfg.trusted_types))
        align(t, t.classes, data, _who(cfg, where))
        return t
    if cfg.kind == "precomputed":
        from distill.tasks.classification.teachers.precomputed import PrecomputedTeacher

        ids = np.concatenate([s.ids for s in data.splits().values()])
        values = {"log_probs": "logits"}.get(cfg.values, cfg.values)
        return PrecomputedTeacher.from_file(str(cfg.path), ids, values=values)
    if cfg.kind == "hf":
        from distill.tasks.classification.teachers.hf_image import load_hf_image_teacher

        return load_hf_image_teacher(str(cfg.path), data, trust_remote_code=cfg.trust_remote_code, who=f"{where}.path")
    if cfg.kind == "ensemble":
        from distill.tasks.classification.teachers.ensemble import EnsembleTeacher

        members = [_build(m, data, f"{where}.members[{i}]") for i, m in enumerate(cfg.members)]
        return EnsembleTeacher(members, weights=cfg.weights, combine=cfg.combine)
    # a torch member of an ensemble: built and loaded from its checkpoint (not trained here)
    from distill.tasks.classification.teachers import TorchTeacher, build_teacher_module, check_output_classes, load_weights

    if not cfg.checkpoint:
        raise TeacherError(
            f"{where}: a torch member of an ensemble needs a `checkpoint` (members are not trained here). "
            "Fix: train it with its own `distill run` and point checkpoint at its teacher.safetensors."
        )
    module = build_teacher_module(cfg.arch, cfg.factory, cfg.params, data.in_shape, data.num_classes)
    load_weights(module, cfg.checkpoint, where)
    check_output_classes(module, data.in_shape, data.num_classes, "teacher")
    return TorchTeacher(module, data.num_classes)
