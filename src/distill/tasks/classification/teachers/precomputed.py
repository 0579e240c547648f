"""A black-box teacher: outputs computed elsewhere (an API, another framework), keyed by sample id.

Formats (chosen by suffix):

- **Parquet** (``.parquet``/``.pq``): a column ``id`` plus either a list column
  ``logits`` or ``probs``, or one numeric column per class (in file order, or by
  the integer their names end in when every name ends in one, e.g. ``p0 … p9``).
- **NumPy** (``.npz``): arrays ``ids`` ``(N,)`` (strings or integers) and ``logits``
  or ``probs`` ``(N, C)``.
- **JSON Lines** (``.jsonl``/``.ndjson``): one object per line with ``id`` and
  ``logits`` or ``probs`` (a list of C numbers); blank lines are skipped.

Probabilities become log-probabilities, ``log(max(p, 1e-7))`` (softmax-based losses
see the same distribution). The file must hold exactly the given sample ids, each
once: missing, extra or duplicate ids, rows of the wrong width, non-finite values,
probabilities outside [0, 1] or not summing to 1, and malformed lines are all
reported (every problem, with its line or row) in one :class:`TeacherError`.
Rows are numbered as editors do for JSONL (``line 1`` is the first) and from 0 for
Parquet and NumPy (``row 0``, as pandas/numpy show them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.errors import TeacherError
from distill.tasks.classification.teachers.precomputed_readers import SHOW, Rows, fail, fmt_ids, read_rows

PROB_FLOOR = 1e-7
PROB_SUM_TOLERANCE = 1e-2  # rounded API outputs (e.g. 4 decimals) still pass


class PrecomputedTeacher:
    """Teacher outputs read from a file, looked up by sample id.

    Build it with :meth:`from_file`, or directly from ``ids`` and an ``(N, C)`` tensor.
    ``logits(x)`` cannot work (the samples carry no ids); use :meth:`logits_for_ids`.
    ``needs_ids`` is True so callers can tell.
    """

    needs_ids = True

    def __init__(self, ids: Sequence[Any], logits: Tensor, *, source: str = "<memory>", fingerprint: str | None = None):
        ids = [str(i) for i in ids]
        if logits.dim() != 2 or logits.shape[0] != len(ids):
            raise TeacherError(f"precomputed teacher outputs {tuple(logits.shape)} do not fit {len(ids)} ids")
        self._index = {i: n for n, i in enumerate(ids)}
        self._logits = logits.detach().float().contiguous()
        self.num_classes = int(logits.shape[1])
        self.source = source
        if fingerprint is None:
            h = hashlib.sha256(b"precomputed-memory\0")
            h.update("\n".join(ids).encode())
            h.update(self._logits.numpy().tobytes())
            fingerprint = h.hexdigest()
        self._fp = fingerprint

    @classmethod
    def from_file(
        cls, path: str | Path, ids: Iterable[Any], *, values: str = "auto", num_classes: int | None = None
    ) -> "PrecomputedTeacher":
        """Read teacher outputs for exactly the sample ids ``ids`` from ``path``.

        Args:
            path: a ``.parquet``/``.pq``, ``.npz`` or ``.jsonl``/``.ndjson`` file (see the module docs).
            ids: every sample id the teacher must cover (all splits that need teacher outputs);
                the file must hold each of them once and no others.
            values: how to read per-class Parquet columns: ``"logits"``, ``"probs"``, or ``"auto"``
                (probabilities when every class column's name starts with ``prob``). Named
                ``logits``/``probs`` keys and arrays always say what they hold.
            num_classes: the expected width; default: the width of the first row.

        Raises:
            TeacherError: missing/unreadable file, unknown format, malformed content, missing,
            extra or duplicate ids (how many and the first 5 of them).
        """
        p = Path(path)
        if values not in ("auto", "logits", "probs"):
            raise TeacherError(f"values must be 'auto', 'logits' or 'probs' (got {values!r})")
        if not p.is_file():
            raise TeacherError(f"teacher outputs file not found: {p}. Fix: check the path.")
        rows = read_rows(p, values, num_classes)
        wanted = [str(i) for i in ids]
        logits = _validate(p, rows, wanted)
        h = hashlib.sha256(b"precomputed-file\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(f"\0{values}".encode())
        return cls(wanted, logits, source=str(p), fingerprint=h.hexdigest())

    def logits_for_ids(self, ids: Iterable[Any]) -> Tensor:
        """``(len(ids), C)`` float32 logits (log-probabilities for probability files), in the order given."""
        keys = [str(i) for i in ids]
        unknown = [k for k in keys if k not in self._index]
        if unknown:
            raise TeacherError(
                f"the precomputed teacher ({self.source}) has no outputs for {len(unknown):,} of the "
                f"{len(keys):,} requested sample ids ({fmt_ids(unknown)}). Fix: give it every sample id the run uses."
            )
        rows = torch.as_tensor([self._index[k] for k in keys], dtype=torch.long)
        return self._logits.index_select(0, rows)

    def logits(self, x: Tensor) -> Tensor:
        raise TeacherError(
            f"the precomputed teacher ({self.source}) looks outputs up by sample id, not by input; "
            "it cannot run on raw inputs (e.g. on augmented batches). Fix: call logits_for_ids(ids), and turn "
            "train.augment off when the teacher is a precomputed file."
        )

    def fingerprint(self) -> str:
        """sha256 of the file (or, in memory, of the ids and values)."""
        return self._fp


# --------------------------------------------------------------- validation
def _validate(path: Path, rows: Rows, wanted: list[str]) -> Tensor:
    """Check values and ids; return ``(len(wanted), C)`` float32 logits in the order of ``wanted``."""
    _check_values(path, rows)
    first_row = _check_ids(path, rows, wanted)
    v = rows.values
    order = np.asarray([first_row[i] for i in wanted], dtype=np.int64)
    out = v[order] if len(order) else np.zeros((0, v.shape[1]))
    if rows.probs:
        out = np.log(np.maximum(out, PROB_FLOOR))
    return torch.from_numpy(out.astype(np.float32))


def _check_values(path: Path, rows: Rows) -> None:
    """Every value finite; probabilities in [0, 1] and each row summing to 1."""
    problems: list[str] = []
    v = rows.values
    finite = np.isfinite(v).all(axis=1)
    for i in np.flatnonzero(~finite)[: SHOW + 1]:
        problems.append(f"{rows.where[i]} has a non-finite value")
    if (~finite).sum() > SHOW + 1:
        problems.append(f"{int((~finite).sum()) - SHOW - 1} more rows with non-finite values")
    if rows.probs:
        with np.errstate(invalid="ignore"):
            out_of_range = finite & ((v < -1e-6) | (v > 1 + 1e-6)).any(axis=1)
            bad_sum = finite & ~out_of_range & (np.abs(v.sum(axis=1) - 1.0) > PROB_SUM_TOLERANCE)
        for i in np.flatnonzero(out_of_range)[:SHOW]:
            problems.append(f"{rows.where[i]} has probabilities outside [0, 1]")
        for i in np.flatnonzero(bad_sum)[:SHOW]:
            problems.append(f"{rows.where[i]} has probabilities summing to {v[i].sum():.4g}, not 1")
    if problems:
        kind = "probabilities (each row in [0, 1], summing to 1)" if rows.probs else "finite logits"
        raise fail(path, problems, f"write {kind}; if the values are logits, store them as 'logits'.")


def _check_ids(path: Path, rows: Rows, wanted: list[str]) -> dict[str, int]:
    """The file holds each wanted id once and no others; returns each id's (first) row."""
    first_row: dict[str, int] = {}
    dups: list[str] = []
    for n, i in enumerate(rows.ids):
        if i in first_row:
            dups.append(f"{i!r} ({rows.where[first_row[i]]} and {rows.where[n]})")
        else:
            first_row[i] = n
    wanted_set = set(wanted)
    missing = [i for i in dict.fromkeys(wanted) if i not in first_row]
    extra = [i for i in first_row if i not in wanted_set]
    parts = []
    n_wanted = len(wanted_set)
    if missing:
        parts.append(f"lacks {len(missing):,} of the {n_wanted:,} sample ids ({fmt_ids(missing)})")
    if extra:
        what = "ids that are not sample ids" if len(extra) != 1 else "id that is not a sample id"
        parts.append(f"has {len(extra):,} {what} of the data ({fmt_ids(extra)})")
    if dups:
        more = "; ..." if len(dups) > SHOW else ""
        parts.append(f"repeats {len(dups):,} id{'s' if len(dups) != 1 else ''} ({'; '.join(dups[:SHOW])}{more})")
    if parts:
        raise TeacherError(
            f"teacher outputs file {path.name} " + "; it also ".join(parts) + ". "
            "Fix: write exactly one row of outputs for every sample id of the data (ids as the data source names "
            "them, e.g. digits-0000), and no others."
        )
    return first_row


__all__ = ["PrecomputedTeacher"]
