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
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.errors import TeacherError

PROB_FLOOR = 1e-7
PROB_SUM_TOLERANCE = 1e-2  # rounded API outputs (e.g. 4 decimals) still pass
SHOW = 5  # how many ids / problems an error names

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
NPZ_SUFFIXES = (".npz",)


def _fmt_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOW])
    return shown + (", ..." if len(ids) > SHOW else "")


def _fail(path: Path, problems: list[str], fix: str) -> TeacherError:
    n = len(problems)
    head = f"teacher outputs file {path.name} has {n} problem{'s' if n != 1 else ''}"
    listed = "; ".join(problems[:SHOW]) + (f"; and {n - SHOW} more" if n > SHOW else "")
    return TeacherError(f"{head}: {listed}. Fix: {fix}")


class _Rows:
    """What a reader found: ids, a float64 matrix, whether it holds probabilities, how rows are named."""

    def __init__(self, ids: list[str], values: np.ndarray, probs: bool, where: list[str]):
        self.ids, self.values, self.probs, self.where = ids, values, probs, where


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
        suffix = p.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            rows = _read_parquet(p, values, num_classes)
        elif suffix in NPZ_SUFFIXES:
            rows = _read_npz(p, num_classes)
        elif suffix in JSONL_SUFFIXES:
            rows = _read_jsonl(p, num_classes)
        else:
            raise TeacherError(
                f"unknown teacher outputs format {p.suffix or '(no suffix)'!r} for {p}. "
                "Fix: use .parquet, .npz (arrays ids and logits/probs) or .jsonl (objects with id and logits/probs)."
            )
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
                f"{len(keys):,} requested sample ids ({_fmt_ids(unknown)}). Fix: give it every sample id the run uses."
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


# ------------------------------------------------------------------ readers
def _width_problem(where: str, got: int, want: int, first: str | None) -> str:
    ref = f" (the width of {first})" if first else ""
    return f"{where} has {got} values, expected {want}{ref}"


def _rows_from_lists(
    ids: list[Any], lists: list[Any], where: list[str], probs: bool, num_classes: int | None, problems: list[str]
) -> _Rows:
    """Shared by JSONL and Parquet list columns: check each row's width and numbers, build the matrix."""
    want = num_classes
    first_where = None
    good_ids: list[str] = []
    good_rows: list[list[float]] = []
    good_where: list[str] = []
    for rid, vals, w in zip(ids, lists, where):
        if rid is None or (isinstance(rid, float) and math.isnan(rid)) or isinstance(rid, (list, dict, bool)):
            problems.append(f"{w} has no usable id ({rid!r})")
            continue
        if not isinstance(vals, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in vals
        ):
            problems.append(f"{w}: {'probs' if probs else 'logits'} must be a list of numbers")
            continue
        if want is None:
            want, first_where = len(vals), w
        if len(vals) != want:
            problems.append(_width_problem(w, len(vals), want, first_where))
            continue
        good_ids.append(str(rid))
        good_rows.append([math.nan if v is None else float(v) for v in vals])
        good_where.append(w)
    matrix = np.asarray(good_rows, dtype=np.float64).reshape(len(good_rows), want or 0)
    return _Rows(good_ids, matrix, probs, good_where)


def _read_jsonl(path: Path, num_classes: int | None) -> _Rows:
    problems: list[str] = []
    ids: list[Any] = []
    lists: list[Any] = []
    where: list[str] = []
    kinds: dict[str, str] = {}
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise TeacherError(f"cannot read teacher outputs file {path}: {exc}") from None
    with fh:
        try:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                w = f"line {n}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"{w} is not valid JSON ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    problems.append(f"{w} is not a JSON object")
                    continue
                if "id" not in obj:
                    problems.append(f"{w} has no 'id'")
                    continue
                has = [k for k in ("logits", "probs") if k in obj]
                if len(has) != 1:
                    found = ", ".join(has) or "neither"
                    problems.append(f"{w} needs exactly one of 'logits' or 'probs' (found {found})")
                    continue
                kinds.setdefault(has[0], w)
                ids.append(obj["id"])
                lists.append(obj[has[0]])
                where.append(w)
        except UnicodeDecodeError:
            raise TeacherError(
                f"teacher outputs file {path} is not UTF-8 text. Fix: write it as UTF-8 JSON Lines."
            ) from None
    if len(kinds) > 1:
        problems.append(f"it mixes 'logits' ({kinds['logits']}) and 'probs' ({kinds['probs']}); use one kind")
    rows = _rows_from_lists(ids, lists, where, "probs" in kinds and len(kinds) == 1, num_classes, problems)
    if problems:
        raise _fail(path, problems, "write one JSON object per line: {\"id\": ..., \"logits\": [C numbers]}.")
    return rows


def _read_parquet(path: Path, values: str, num_classes: int | None) -> _Rows:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TeacherError(
            "reading a Parquet teacher outputs file needs pyarrow. Fix: pip install pyarrow (or 'distill[tables]')."
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise TeacherError(
            f"cannot read teacher outputs file {path} as Parquet: {type(exc).__name__}: {exc}. "
            "Fix: check the file is complete and really Parquet."
        ) from None
    cols = table.column_names
    if "id" not in cols:
        raise TeacherError(
            f"teacher outputs file {path} has no 'id' column; its columns: {', '.join(cols)}. "
            "Fix: add the sample ids as a column named 'id'."
        )
    ids = table.column("id").to_pylist()
    where = [f"row {i}" for i in range(len(ids))]
    named = [c for c in ("logits", "probs") if c in cols]
    problems: list[str] = []
    if len(named) == 2:
        raise TeacherError(f"teacher outputs file {path} has both 'logits' and 'probs' columns. Fix: keep one.")
    if named:
        col = table.column(named[0])
        is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
        if not (is_list or pa.types.is_fixed_size_list(col.type)):
            raise TeacherError(
                f"column {named[0]!r} of {path} is {col.type}, not a list of numbers per row. "
                f"Fix: store one list of C numbers per row in {named[0]!r}, or one column per class."
            )
        rows = _rows_from_lists(ids, col.to_pylist(), where, named[0] == "probs", num_classes, problems)
        if problems:
            raise _fail(path, problems, f"store one list of C numbers per row in column {named[0]!r}.")
        return rows

    class_cols = [c for c in cols if c != "id"]
    if not class_cols:
        raise TeacherError(
            f"teacher outputs file {path} has only an 'id' column. "
            "Fix: add a list column 'logits' or 'probs', or one column per class."
        )
    bad = [f"{c} ({table.schema.field(c).type})" for c in class_cols
           if not (pa.types.is_floating(table.schema.field(c).type) or pa.types.is_integer(table.schema.field(c).type))]
    if bad:
        raise TeacherError(
            f"teacher outputs file {path} has non-numeric class columns: {', '.join(bad)}. "
            "Fix: keep only 'id' and one numeric column per class (or a list column 'logits'/'probs')."
        )
    class_cols = _order_class_columns(class_cols)
    if num_classes is not None and len(class_cols) != num_classes:
        raise TeacherError(
            f"teacher outputs file {path} has {len(class_cols)} class columns but the data has {num_classes} classes. "
            "Fix: write one column per class."
        )
    matrix = np.stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in class_cols], axis=1
    ) if len(ids) else np.zeros((0, len(class_cols)))
    probs = values == "probs" or (values == "auto" and all(c.lower().startswith("prob") for c in class_cols))
    keep: list[int] = []
    for i, rid in enumerate(ids):
        if rid is None:
            problems.append(f"row {i} has no id")
        else:
            keep.append(i)
    if problems:
        raise _fail(path, problems, "give every row an id.")
    return _Rows([str(ids[i]) for i in keep], matrix[keep], probs, [where[i] for i in keep])


def _order_class_columns(cols: list[str]) -> list[str]:
    """Order by the integer each name ends in when all end in distinct integers; else keep file order."""
    import re

    nums = [re.search(r"(\d+)$", c) for c in cols]
    if all(nums):
        keys = [int(m.group(1)) for m in nums if m]
        if len(set(keys)) == len(keys):
            return [c for _, c in sorted(zip(keys, cols))]
    return cols


def _read_npz(path: Path, num_classes: int | None) -> _Rows:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise TeacherError(
            f"cannot read teacher outputs file {path} as .npz: {type(exc).__name__}: {exc}. "
            "Fix: save it with numpy.savez(path, ids=..., logits=...)."
        ) from None
    with archive:
        names = set(archive.files)
        named = [k for k in ("logits", "probs") if k in names]
        if "ids" not in names or len(named) != 1:
            raise TeacherError(
                f"teacher outputs file {path} holds arrays {', '.join(sorted(names)) or '(none)'}; it needs 'ids' and "
                "exactly one of 'logits' or 'probs'. Fix: numpy.savez(path, ids=np.array(ids, dtype=str), logits=...)."
            )
        try:
            ids = archive["ids"]
            matrix = archive[named[0]]
        except ValueError as exc:  # object arrays need pickle, which we never allow
            raise TeacherError(
                f"teacher outputs file {path} stores Python objects ({exc}); distill does not unpickle them. "
                "Fix: save ids as a string array (np.array(ids, dtype=str)) and values as a float array."
            ) from None
    if ids.ndim != 1:
        raise TeacherError(f"'ids' in {path} must be 1-D, got shape {ids.shape}.")
    if matrix.ndim != 2 or matrix.shape[0] != ids.shape[0]:
        raise TeacherError(
            f"'{named[0]}' in {path} is shaped {matrix.shape}; it must be (len(ids), classes) = ({ids.shape[0]}, C)."
        )
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise TeacherError(f"'{named[0]}' in {path} has dtype {matrix.dtype}; it must be numeric.")
    if num_classes is not None and matrix.shape[1] != num_classes:
        raise TeacherError(
            f"'{named[0]}' in {path} has {matrix.shape[1]} columns but the data has {num_classes} classes. "
            "Fix: store one column per class."
        )
    return _Rows([str(i) for i in ids.tolist()], matrix.astype(np.float64), named[0] == "probs",
                 [f"row {i}" for i in range(len(ids))])


# --------------------------------------------------------------- validation
def _validate(path: Path, rows: _Rows, wanted: list[str]) -> Tensor:
    """Check values and ids; return ``(len(wanted), C)`` float32 logits in the order of ``wanted``."""
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
        raise _fail(path, problems, f"write {kind}; if the values are logits, store them as 'logits'.")

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
        parts.append(f"lacks {len(missing):,} of the {n_wanted:,} sample ids ({_fmt_ids(missing)})")
    if extra:
        what = "ids that are not sample ids" if len(extra) != 1 else "id that is not a sample id"
        parts.append(f"has {len(extra):,} {what} of the data ({_fmt_ids(extra)})")
    if dups:
        more = "; ..." if len(dups) > SHOW else ""
        parts.append(f"repeats {len(dups):,} id{'s' if len(dups) != 1 else ''} ({'; '.join(dups[:SHOW])}{more})")
    if parts:
        raise TeacherError(
            f"teacher outputs file {path.name} " + "; it also ".join(parts) + ". "
            "Fix: write exactly one row of outputs for every sample id of the data (ids as the data source names "
            "them, e.g. digits-0000), and no others."
        )
    order = np.asarray([first_row[i] for i in wanted], dtype=np.int64)
    out = v[order] if len(order) else np.zeros((0, v.shape[1]))
    if rows.probs:
        out = np.log(np.maximum(out, PROB_FLOOR))
    return torch.from_numpy(out.astype(np.float32))


__all__ = ["PrecomputedTeacher"]
