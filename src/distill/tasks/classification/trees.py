"""The baseline a user would pick instead of a small network, for tables: gradient-boosted trees
(scikit-learn's HistGradientBoostingClassifier) fitted on the students' labeled training rows, saved with the
run, and measured the same way as every model (accuracy, latency, throughput, size on disk)."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.fsutil import write_with
from distill.tasks.classification.teachers.sklearn import SklearnTeacher

log = logging.getLogger("distill")

LABEL = "gradient-boosted trees"
ROLE = "trees"
FILE = "baseline_trees.pkl"


def wanted(setting: str | bool, data_kind: str) -> bool:
    """``eval.trees_baseline``: 'auto' means for tables."""
    return data_kind == "table" if setting == "auto" else bool(setting)


def fit_trees(train: Any, num_classes: int, seed: int, run_dir: Path) -> SklearnTeacher:
    """Fit on the labeled rows of ``train`` (labels < 0 are unlabeled), save to ``run_dir/baseline_trees.pkl``
    atomically (reused when it is there: a resumed run does not refit), and wrap it as a model to measure."""
    path = run_dir / FILE
    if path.is_file():
        with path.open("rb") as f:
            return SklearnTeacher(pickle.load(f), num_classes=num_classes)
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = train.x.reshape(len(train), -1).numpy().astype(np.float32)
    y = train.y.numpy()
    keep = y >= 0
    t0 = time.perf_counter()
    model = HistGradientBoostingClassifier(random_state=seed).fit(x[keep], y[keep])
    log.info("baseline: gradient-boosted trees on %d rows in %.1f s (%d iterations)", int(keep.sum()),
             time.perf_counter() - t0, model.n_iter_)  # fmt: skip
    write_with(path, lambda tmp: tmp.write_bytes(pickle.dumps(model)))
    return SklearnTeacher(model, num_classes=num_classes)
