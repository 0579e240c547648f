"""A teacher is checked against the data before it teaches.

* **Features by name.** A teacher that knows its feature names (scikit-learn's
  ``feature_names_in_``, an ONNX model with one input per column or a
  ``feature_names`` metadata entry) is fed the table's columns by name, in its own
  order; a name the table lacks is refused with both lists.
* **Classes by label.** A teacher that knows its class labels (scikit-learn's
  ``classes_``, the ``classlabels_*`` of an ONNX classifier, a ``classes`` metadata
  entry) has its output columns matched to the data's labels; a label the data lacks
  is refused with both lists.
* **Outputs on a sample.** Non-finite outputs are an error that names the teacher;
  outputs that are probabilities (every row in [0, 1], summing to 1) are turned into
  log-probabilities when the recipe says ``values: probs`` or ``auto``, and refused when
  it says ``logits``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.errors import TeacherError

PROB_FLOOR = 1e-7
SAMPLE = 256  # training rows a teacher's outputs are checked on
VALUES = ("auto", "logits", "probs", "log_probs")


def _shown(items: Sequence[Any], limit: int = 12) -> str:
    items = list(items)
    head = ", ".join(map(str, items[:limit]))
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def label_key(value: Any) -> str:
    """One spelling per label: 1, 1.0, np.int64(1) and "1" are the same class; strings are stripped."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value).strip()
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return str(number)


def data_labels(data: Any) -> tuple[list[str], dict[str, int]]:
    """The data's labels as shown to the user, and label key -> class index.

    A table's classes are its label values. Image data sets label by index; their class
    names are accepted too."""
    names = list(data.class_names)
    if data.kind == "table":
        return names, {label_key(n): i for i, n in enumerate(names)}
    keys = {str(i): i for i in range(data.num_classes)}
    keys.update({label_key(n): i for i, n in enumerate(names) if label_key(n) not in keys})
    return [f"{i} ({n})" for i, n in enumerate(names)], keys


def match_classes(teacher_labels: Sequence[Any], data: Any, who: str) -> np.ndarray:
    """For each output column of the teacher, the data's class index it holds.

    Raises TeacherError (naming both label lists) when a teacher label is not a label of the data."""
    shown, index = data_labels(data)
    keys = [label_key(v) for v in teacher_labels]
    unknown = [v for v, k in zip(teacher_labels, keys) if k not in index]
    if unknown or len(set(keys)) != len(keys):
        why = f"its classes {_shown(unknown)} are not labels of the data" if unknown else "its classes repeat"
        raise TeacherError(
            f"{who}: {why}. The teacher's classes: {_shown(teacher_labels)}; the data's labels: {_shown(shown)}. "
            "Fix: use a teacher trained on this data's labels (the same values in the label column, e.g. strings "
            "and not their integer codes), or relabel the data to the teacher's classes."
        )
    return np.array([index[k] for k in keys], dtype=np.int64)


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def match_features(teacher_names: Sequence[str], data: Any, who: str) -> np.ndarray | None:
    """Indices into the data's feature columns of the columns the teacher takes, in the teacher's order;
    None when they are the data's own columns in the data's order.

    Raises TeacherError (naming both lists) when the teacher needs a column the data does not give it."""
    names = [str(n) for n in teacher_names]
    if data.kind != "table":
        return None  # image data has no column names to match: the count is checked by the teacher
    features = [str(f) for f in data.preprocessing.get("features", [])]
    if names == features:
        return None
    where = {f: i for i, f in enumerate(features)}
    # exporters rewrite names that are not identifiers (skl2onnx: 'od280/od315' -> 'od280_od315')
    spelled = [_identifier(f) for f in features]
    where.update({s: i for i, s in enumerate(spelled) if spelled.count(s) == 1 and s not in where})
    missing = [n for n in names if n not in where]
    if missing or len(set(names)) != len(names):
        why = f"it was fitted on columns the data does not give it: {_shown(missing)}" if missing else \
            "its feature names repeat"  # fmt: skip
        raise TeacherError(
            f"{who}: {why}. The teacher's features, in its order: {_shown(names)}; the data's feature columns: "
            f"{_shown(features)}. Fix: add them to data.feature_columns (or leave data.feature_columns out to use "
            "every column but the label), or use a teacher fitted on these columns."
        )
    return np.array([where[n] for n in names], dtype=np.int64)


def output_kind(out: Tensor) -> str:
    """'probs' when every row is in [0, 1] and sums to 1, 'log_probs' when every row is <= 0 and its exp sums
    to 1, else 'logits' (judged on all rows of ``out``)."""
    if out.numel() == 0:
        return "logits"
    x = out.double()
    if bool(((x >= -1e-6) & (x <= 1 + 1e-6)).all()) and bool(((x.sum(-1) - 1).abs() < 1e-3).all()):
        return "probs"
    if bool((x <= 1e-6).all()) and bool((torch.logsumexp(x, -1).abs() < 1e-3).all()):
        return "log_probs"
    return "logits"


class LogOfProbabilities:
    """A teacher whose outputs are probabilities, read as log-probabilities ``log(max(p, 1e-7))``
    (softmax of those is the teacher's distribution again, as every loss expects of logits)."""

    def __init__(self, teacher: Any):
        self.teacher = teacher
        self.num_classes = teacher.num_classes
        self.needs_ids = getattr(teacher, "needs_ids", False)

    @staticmethod
    def _log(p: Tensor) -> Tensor:
        return torch.log(p.float().clamp_min(PROB_FLOOR))

    def logits(self, x: Tensor) -> Tensor:
        return self._log(self.teacher.logits(x))

    def logits_for_ids(self, ids: Any) -> Tensor:
        return self._log(self.teacher.logits_for_ids(ids))

    def fingerprint(self) -> str:
        return "log-of-probabilities:" + self.teacher.fingerprint()


def sample_outputs(teacher: Any, data: Any, n: int = SAMPLE) -> Tensor:
    """The teacher's outputs on the first ``n`` training samples (by input, or by id)."""
    from distill.tasks.classification.teachers.ensemble import teacher_logits_for

    train = data.train
    take = min(n, len(train))
    x = train.x[:take]
    ids = list(train.ids[:take])
    with torch.no_grad():
        return teacher_logits_for(teacher, x, ids).float()


def check_outputs(teacher: Any, data: Any, who: str, values: str = "auto") -> Any:
    """Check ``teacher``'s outputs on a sample of the training split against what ``values`` says they are.

    Returns the teacher, wrapped in :class:`LogOfProbabilities` when its outputs are probabilities.
    Raises TeacherError for non-finite outputs, or outputs that are not what ``values`` says."""
    if values not in VALUES:
        raise TeacherError(f"values must be one of {', '.join(VALUES)} (got {values!r})")
    out = sample_outputs(teacher, data)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(-1)).flatten().tolist()
        raise TeacherError(
            f"{who} gives NaN or infinite outputs on {len(rows)} of {out.shape[0]} training samples (first: "
            f"sample {data.train.ids[rows[0]]}). Fix: check the teacher file (it may come from a diverged training "
            "or a broken export), and that it is fed the inputs it was made for (teacher.inputs)."
        )
    kind = output_kind(out)
    if values == "auto":
        return LogOfProbabilities(teacher) if kind == "probs" else teacher
    if values == "probs":
        if kind != "probs":
            raise TeacherError(
                f"{who}: the recipe says its outputs are probabilities (values: probs), but on {out.shape[0]} "
                f"training samples they are not (values from {float(out.min()):.3g} to {float(out.max()):.3g}, row sums "
                f"up to {float(out.sum(-1).max()):.3g}). Fix: set teacher.values to logits (or auto)."
            )
        return LogOfProbabilities(teacher)
    if kind == "probs":
        raise TeacherError(
            f"{who}: the recipe says its outputs are {values.replace('_', '-')}, but on {out.shape[0]} training "
            "samples every row lies in [0, 1] and sums to 1: they are probabilities, and read as logits they would "
            "make a nearly uniform target. Fix: set teacher.values: probs (or auto), or export the scores before the "
            "softmax."
        )
    if values == "log_probs" and kind != "log_probs":
        raise TeacherError(
            f"{who}: the recipe says its outputs are log-probabilities (values: log_probs), but on {out.shape[0]} "
            "training samples their exponentials do not sum to 1 per row. Fix: set teacher.values to logits (or auto)."
        )
    return teacher


__all__ = [
    "LogOfProbabilities", "VALUES", "check_outputs", "data_labels", "label_key", "match_classes", "match_features",
    "output_kind", "sample_outputs",
]
