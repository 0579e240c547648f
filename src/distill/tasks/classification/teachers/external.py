"""What the teachers that are not torch modules trained here share: the adapter that feeds a teacher the samples
as they are in the user's data, the matching of a teacher's feature names and class labels to the data's, and
whether a teacher can run on inputs at all. The recipe's ``teacher`` section becomes such a teacher in the
classification task (:func:`distill.tasks.classification.teachers.from_recipe.build_external_teacher`)."""

from __future__ import annotations

import logging
from typing import Any

from distill.data import DataBundle
from distill.tasks.classification.teachers.checks import match_classes, match_features

log = logging.getLogger("distill")


class RawInputs:
    """Feeds a teacher the samples as they are in the user's data, not as preprocessed for the student."""

    def __init__(self, teacher: Any, data: DataBundle):
        self.teacher = teacher
        self.num_classes = teacher.num_classes
        self._to_raw = data.to_raw

    def logits(self, x: Any) -> Any:
        return self.teacher.logits(self._to_raw(x))

    def fingerprint(self) -> str:
        return "raw-inputs:" + self.teacher.fingerprint()


def align(teacher: Any, labels: Any, data: DataBundle, who: str) -> None:
    """Match the teacher's feature names and class labels, where it knows them, to the data's."""
    if teacher.feature_names is not None:
        index = match_features(teacher.feature_names, data, who)
        teacher.take_features(index)
        if index is not None:
            log.info("%s: fed the table's columns by name, in its own order: %s", who, ", ".join(teacher.feature_names))
    if labels is not None:
        teacher.map_classes(match_classes(list(labels), data, who), data.num_classes)


def can_run_on_inputs(teacher: Any) -> bool:
    """False for teachers that only look outputs up by sample id (precomputed, or an ensemble with one)."""
    from distill.tasks.classification.teachers.ensemble import EnsembleTeacher

    if isinstance(teacher, EnsembleTeacher):
        return all(can_run_on_inputs(m) for m in teacher.teachers)
    return not getattr(teacher, "needs_ids", False)
