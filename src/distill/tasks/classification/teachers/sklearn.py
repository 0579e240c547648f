"""A teacher that is a scikit-learn classifier with ``predict_proba``.

Its "logits" are log-probabilities, ``log(max(predict_proba(x), 1e-7))``. Every
softmax-based loss (``kd``, ``dkd``, ``dist``, ...) sees the same distribution
from log-probabilities as from logits, since softmax is invariant to a per-row
shift; only the temperature-softened shape depends on the estimator's
probabilities themselves. (``ls_kd`` standardises them like any logits.)

Loading is safe by default: a ``.skops`` file through ``skops.io`` (which builds
only types it trusts), and pickle/joblib files only when the caller passes
``trust_pickle=True`` (unpickling runs arbitrary code from the file).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.errors import TeacherError

log = logging.getLogger("distill")

PROB_FLOOR = 1e-7
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class SklearnTeacher:
    """A fitted scikit-learn classifier as a teacher.

    Args:
        estimator: a fitted classifier (or pipeline) with ``predict_proba`` and ``classes_``.
        num_classes: the data's class count. Default: ``len(estimator.classes_)``. When the
            estimator saw only some classes (integer ``classes_`` in ``[0, num_classes)``),
            its columns are placed at their class index and the unseen classes get
            probability ``1e-7``.
        batch_size: rows per ``predict_proba`` call.

    Samples are flattened to ``(N, features)`` float32 before ``predict_proba``.
    """

    needs_ids = False

    def __init__(self, estimator: Any, *, num_classes: int | None = None, batch_size: int = 4096):
        if not hasattr(estimator, "predict_proba"):
            raise TeacherError(
                f"the scikit-learn teacher {type(estimator).__name__} has no predict_proba, so it gives no class "
                "probabilities to distil. Fix: use a probabilistic classifier (e.g. RandomForestClassifier, "
                "LogisticRegression, or SVC(probability=True))."
            )
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise TeacherError(
                f"the scikit-learn teacher {type(estimator).__name__} is not fitted (it has no classes_). "
                "Fix: fit it before saving it."
            )
        classes = np.asarray(classes)
        if classes.ndim != 1:
            raise TeacherError(
                f"the scikit-learn teacher {type(estimator).__name__} is multi-output (classes_ is {classes.ndim}-D); "
                "distill distils single-label classifiers."
            )
        self.estimator = estimator
        self.classes = classes
        self.num_classes = int(num_classes) if num_classes is not None else len(classes)
        self._columns: np.ndarray | None = None  # where each predict_proba column goes, when not the identity
        if self.num_classes != len(classes) or not np.array_equal(classes, np.arange(len(classes))):
            integer = np.issubdtype(classes.dtype, np.integer)
            if num_classes is not None and integer and classes.min() >= 0 and classes.max() < self.num_classes:
                self._columns = classes.astype(np.int64)
            elif num_classes is not None:
                shown = ", ".join(map(str, classes[:10])) + (" ..." if len(classes) > 10 else "")
                raise TeacherError(
                    f"the scikit-learn teacher's classes ({shown}) cannot be matched to the data's {self.num_classes} "
                    f"classes 0..{self.num_classes - 1}. "
                    f"Fix: train the estimator on integer labels 0..{self.num_classes - 1}."
                )
        self.batch_size = int(batch_size)
        self.path: Path | None = None
        self._fp: str | None = None
        self._features: np.ndarray | None = None  # which input columns it takes, in its order (None: all, as given)
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names: list[str] | None = [str(n) for n in names] if names is not None else None
        self._warned: set[str] = set()

    def map_classes(self, columns: np.ndarray, num_classes: int) -> None:
        """Put predict_proba's column ``j`` at class ``columns[j]`` of ``num_classes`` (classes it never saw get
        probability 1e-7)."""
        columns = np.asarray(columns, dtype=np.int64)
        self.num_classes = int(num_classes)
        identity = len(columns) == num_classes and np.array_equal(columns, np.arange(num_classes))
        self._columns = None if identity else columns

    def take_features(self, index: np.ndarray | None) -> None:
        """Feed it the input columns ``index`` (in its own feature order) instead of all columns as given."""
        self._features = None if index is None else np.asarray(index, dtype=np.int64)

    def _frame(self, flat: np.ndarray) -> Any:
        """Rows as the estimator was fitted: a DataFrame with its column names when it has them."""
        if self._features is not None:
            flat = flat[:, self._features]
        if self.feature_names is None or len(self.feature_names) != flat.shape[1]:
            return flat
        try:
            import pandas as pd
        except ImportError:
            return flat
        return pd.DataFrame(flat, columns=self.feature_names, copy=False)

    def _predict_proba(self, rows: Any) -> np.ndarray:
        """predict_proba, each distinct warning of scikit-learn's logged once instead of on every batch."""
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            proba = np.asarray(self.estimator.predict_proba(rows), dtype=np.float64)
        for w in caught:
            text = f"{w.category.__name__}: {w.message}"
            if text not in self._warned:
                self._warned.add(text)
                log.warning("the scikit-learn teacher warns (shown once): %s", text)
        return proba

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        trust_pickle: bool = False,
        trusted_types: Sequence[str] = (),
        num_classes: int | None = None,
    ) -> "SklearnTeacher":
        """Load an estimator from ``.skops`` (safe) or ``.pkl``/``.pickle``/``.joblib`` (only when trusted).

        Args:
            path: the saved estimator.
            trust_pickle: allow pickle/joblib files; unpickling runs any code the file holds,
                so pass it only for files you made yourself or fully trust. A warning is logged.
            trusted_types: extra types a ``.skops`` file may build beyond those skops trusts by
                default (e.g. ``"sklearn.tree._tree.Tree"`` for tree ensembles); the error for an
                untrusted file lists the ones it needs.
            num_classes: see :class:`SklearnTeacher`.

        Raises:
            TeacherError: missing file, unknown format, pickle without trust, skops not
            installed, untrusted skops types, or an unreadable file.
        """
        p = Path(path)
        if not p.is_file():
            raise TeacherError(
                f"scikit-learn teacher file not found: {p}. Fix: check the path "
                "(save the estimator with skops.io.dump(est, 'teacher.skops'))."
            )
        suffix = p.suffix.lower()
        if suffix == ".skops":
            estimator = _load_skops(p, trusted_types)
        elif suffix in PICKLE_SUFFIXES:
            if not trust_pickle:
                raise TeacherError(
                    f"refusing to load the scikit-learn teacher {p}: {suffix} files are pickles, and loading a pickle "
                    "runs whatever code the file contains, so a file from an untrusted source can take over your "
                    "machine. Fix: save the estimator with skops (skops.io.dump(est, 'teacher.skops')) and load that; "
                    "or, only if you made or fully trust this file, pass trust_pickle=True "
                    "(recipe: teacher.trust_pickle: true)."
                )
            log.warning(
                "loading the scikit-learn teacher %s with pickle (trust_pickle is on): this runs any code the file "
                "contains; use a .skops file to avoid that", p,
            )
            estimator = _load_pickle(p)
        else:
            raise TeacherError(
                f"unknown scikit-learn teacher format {p.suffix or '(no suffix)'!r} for {p}. "
                "Fix: use a .skops file (safe), or a .joblib/.pkl file with trust_pickle=True."
            )
        teacher = cls(estimator, num_classes=num_classes)
        teacher.path = p
        teacher._fp = hashlib.sha256(b"sklearn-file\0" + _sha256_file(p).encode()).hexdigest()
        return teacher

    def logits(self, x: Tensor) -> Tensor:
        """``(N, ...) → (N, C)`` float32 log-probabilities ``log(max(predict_proba(x), 1e-7))``."""
        flat = x.detach().cpu().reshape(x.shape[0], -1).float().numpy()
        given = flat.shape[1] if self._features is None else len(self._features)
        expected = getattr(self.estimator, "n_features_in_", None)
        if expected is not None and given != expected:
            raise TeacherError(
                f"the scikit-learn teacher {type(self.estimator).__name__} was fitted on {expected} features but the "
                f"samples have {given} (shaped {tuple(x.shape[1:])}, flattened). "
                "Fix: use the same features/preprocessing the estimator was trained with."
            )
        outs = []
        for i in range(0, flat.shape[0], self.batch_size):
            try:
                proba = self._predict_proba(self._frame(flat[i : i + self.batch_size]))
            except Exception as exc:
                raise TeacherError(
                    f"the scikit-learn teacher {type(self.estimator).__name__} failed in predict_proba: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            outs.append(proba)
        proba = np.concatenate(outs) if outs else np.zeros((0, len(self.classes)))
        if proba.ndim != 2 or proba.shape[1] != len(self.classes):
            raise TeacherError(
                f"the scikit-learn teacher's predict_proba returned shape {proba.shape}, expected "
                f"(N, {len(self.classes)})."
            )
        if self._columns is not None:
            full = np.zeros((proba.shape[0], self.num_classes))
            full[:, self._columns] = proba
            proba = full
        return torch.from_numpy(np.log(np.maximum(proba, PROB_FLOOR)).astype(np.float32))

    def fingerprint(self) -> str:
        """sha256 of the file it was loaded from (for an in-memory estimator, of its serialised bytes), and of
        how its features and classes are matched to the data."""
        if self._fp is None:
            # dumping (not loading) is safe; the bytes change whenever a fitted attribute changes
            data = pickle.dumps(self.estimator, protocol=4)
            self._fp = hashlib.sha256(b"sklearn-object\0" + data).hexdigest()
        h = hashlib.sha256(self._fp.encode())
        for arr in (self._features, self._columns):
            h.update(b"\0" + (b"-" if arr is None else np.asarray(arr, dtype=np.int64).tobytes()))
        return self._fp if self._features is None and self._columns is None else h.hexdigest()


def _load_skops(path: Path, trusted_types: Sequence[str]) -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise TeacherError(
            f"loading the scikit-learn teacher {path} needs the skops package, which is not installed. "
            "Fix: pip install skops (or: pip install 'distill[sklearn]')."
        ) from None
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise TeacherError(
            f"cannot read the skops file {path}: {type(exc).__name__}: {exc}. Fix: the file is corrupt, truncated "
            "or not a skops file; save it again with skops.io.dump."
        ) from None
    allowed = set(trusted_types)
    missing = [t for t in untrusted if t not in allowed]
    if missing:
        listed = ", ".join(repr(t) for t in missing)
        raise TeacherError(
            f"the skops file {path} builds types that skops does not trust by default: {listed}. "
            "Building an untrusted type can run code from the file. Fix: if you trust the file's source, list them: "
            f"trusted_types=[{listed}] (recipe: teacher.trusted_types)."
        )
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise TeacherError(
            f"cannot load the skops file {path}: {type(exc).__name__}: {exc}. Fix: save it again with skops.io.dump "
            "using the same scikit-learn version as here."
        ) from None


def _load_pickle(path: Path) -> Any:
    import joblib  # a scikit-learn dependency; reads plain pickles as well as joblib files

    try:
        return joblib.load(path)  # only with trust_pickle=True, warned by the caller
    except Exception as exc:
        raise TeacherError(
            f"cannot unpickle the scikit-learn teacher {path}: {type(exc).__name__}: {exc}. "
            "Fix: the file is corrupt or was saved with incompatible library versions; save it again."
        ) from None


__all__ = ["SklearnTeacher"]
