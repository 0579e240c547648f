"""Readers of the teacher outputs files of :mod:`distill.tasks.classification.teachers.precomputed` (Parquet, NumPy,
JSON Lines; the formats are described there). Each returns the :class:`Rows` it found, or raises one
:class:`TeacherError` that lists every problem with its line or row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distill.errors import TeacherError

SHOW = 5  # how many ids / problems an error names

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
NPZ_SUFFIXES = (".npz",)


def fmt_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOW])
    return shown + (", ..." if len(ids) > SHOW else "")


def fail(path: Path, problems: list[str], fix: str) -> TeacherError:
    n = len(problems)
    head = f"teacher outputs file {path.name} has {n} problem{'s' if n != 1 else ''}"
    listed = "; ".join(problems[:SHOW]) + (f"; and {n - SHOW} more" if n > SHOW else "")
    return TeacherError(f"{head}: {listed}. Fix: {fix}")


class Rows:
    """What a reader found: ids, a float64 matrix, whether it holds probabilities, how rows are named."""

    def __init__(self, ids: list[str], values: np.ndarray, probs: bool, where: list[str]):
        self.ids, self.values, self.probs, self.where = ids, values, probs, where


def read_rows(path: Path, values: str, num_classes: int | None) -> Rows:
    """Read ``path`` with the reader its suffix names."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path, values, num_classes)
    if suffix in NPZ_SUFFIXES:
        return _read_npz(path, num_classes)
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, num_classes)
    raise TeacherError(
        f"unknown teacher outputs format {path.suffix or '(no suffix)'!r} for {path}. "
        "Fix: use .parquet, .npz (arrays ids and logits/probs) or .jsonl (objects with id and logits/probs)."
    )


def _width_problem(where: str, got: int, want: int, first: str | None) -> str:
    ref = f" (the width of {first})" if first else ""
    return f"{where} has {got} values, expected {want}{ref}"


def _rows_from_lists(
    ids: list[Any], lists: list[Any], where: list[str], probs: bool, num_classes: int | None, problems: list[str]
) -> Rows:
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
    return Rows(good_ids, matrix, probs, good_where)


# ------------------------------------------------------------------ JSON Lines
def _jsonl_entry(line: str, w: str, problems: list[str]) -> tuple[Any, str] | None:
    """One line's ``(object, "logits" | "probs")``, or None (after noting why) when it is unusable."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(f"{w} is not valid JSON ({exc.msg})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{w} is not a JSON object")
        return None
    if "id" not in obj:
        problems.append(f"{w} has no 'id'")
        return None
    has = [k for k in ("logits", "probs") if k in obj]
    if len(has) != 1:
        found = ", ".join(has) or "neither"
        problems.append(f"{w} needs exactly one of 'logits' or 'probs' (found {found})")
        return None
    return obj, has[0]


def _read_jsonl(path: Path, num_classes: int | None) -> Rows:
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
                entry = _jsonl_entry(line, w, problems)
                if entry is None:
                    continue
                obj, kind = entry
                kinds.setdefault(kind, w)
                ids.append(obj["id"])
                lists.append(obj[kind])
                where.append(w)
        except UnicodeDecodeError:
            raise TeacherError(
                f"teacher outputs file {path} is not UTF-8 text. Fix: write it as UTF-8 JSON Lines."
            ) from None
    if len(kinds) > 1:
        problems.append(f"it mixes 'logits' ({kinds['logits']}) and 'probs' ({kinds['probs']}); use one kind")
    rows = _rows_from_lists(ids, lists, where, "probs" in kinds and len(kinds) == 1, num_classes, problems)
    if problems:
        raise fail(path, problems, "write one JSON object per line: {\"id\": ..., \"logits\": [C numbers]}.")
    return rows


# --------------------------------------------------------------------- Parquet
def _open_parquet(path: Path) -> tuple[Any, Any]:
    """``(pyarrow, table)`` of ``path``; the table has an ``id`` column."""
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
    return pa, table


def _read_parquet(path: Path, values: str, num_classes: int | None) -> Rows:
    pa, table = _open_parquet(path)
    cols = table.column_names
    ids = table.column("id").to_pylist()
    where = [f"row {i}" for i in range(len(ids))]
    named = [c for c in ("logits", "probs") if c in cols]
    if len(named) == 2:
        raise TeacherError(f"teacher outputs file {path} has both 'logits' and 'probs' columns. Fix: keep one.")
    if named:
        return _parquet_list_column(path, pa, table, named[0], ids, where, num_classes)
    return _parquet_class_columns(path, pa, table, values, ids, where, num_classes)


def _parquet_list_column(
    path: Path, pa: Any, table: Any, name: str, ids: list[Any], where: list[str], num_classes: int | None
) -> Rows:
    """Rows from a list column ``logits`` or ``probs``."""
    problems: list[str] = []
    col = table.column(name)
    is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
    if not (is_list or pa.types.is_fixed_size_list(col.type)):
        raise TeacherError(
            f"column {name!r} of {path} is {col.type}, not a list of numbers per row. "
            f"Fix: store one list of C numbers per row in {name!r}, or one column per class."
        )
    rows = _rows_from_lists(ids, col.to_pylist(), where, name == "probs", num_classes, problems)
    if problems:
        raise fail(path, problems, f"store one list of C numbers per row in column {name!r}.")
    return rows


def _parquet_class_columns(
    path: Path, pa: Any, table: Any, values: str, ids: list[Any], where: list[str], num_classes: int | None
) -> Rows:
    """Rows from one numeric column per class."""
    class_cols = [c for c in table.column_names if c != "id"]
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
    problems: list[str] = []
    keep: list[int] = []
    for i, rid in enumerate(ids):
        if rid is None:
            problems.append(f"row {i} has no id")
        else:
            keep.append(i)
    if problems:
        raise fail(path, problems, "give every row an id.")
    return Rows([str(ids[i]) for i in keep], matrix[keep], probs, [where[i] for i in keep])


def _order_class_columns(cols: list[str]) -> list[str]:
    """Order by the integer each name ends in when all end in distinct integers; else keep file order."""
    import re

    nums = [re.search(r"(\d+)$", c) for c in cols]
    if all(nums):
        keys = [int(m.group(1)) for m in nums if m]
        if len(set(keys)) == len(keys):
            return [c for _, c in sorted(zip(keys, cols))]
    return cols


# ----------------------------------------------------------------------- NumPy
def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ids, values, "logits" | "probs")`` as stored in the archive, before any shape checks."""
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
    return ids, matrix, named[0]


def _read_npz(path: Path, num_classes: int | None) -> Rows:
    ids, matrix, name = _load_npz(path)
    if ids.ndim != 1:
        raise TeacherError(f"'ids' in {path} must be 1-D, got shape {ids.shape}.")
    if matrix.ndim != 2 or matrix.shape[0] != ids.shape[0]:
        raise TeacherError(
            f"'{name}' in {path} is shaped {matrix.shape}; it must be (len(ids), classes) = ({ids.shape[0]}, C)."
        )
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise TeacherError(f"'{name}' in {path} has dtype {matrix.dtype}; it must be numeric.")
    if num_classes is not None and matrix.shape[1] != num_classes:
        raise TeacherError(
            f"'{name}' in {path} has {matrix.shape[1]} columns but the data has {num_classes} classes. "
            "Fix: store one column per class."
        )
    return Rows([str(i) for i in ids.tolist()], matrix.astype(np.float64), name == "probs",
                [f"row {i}" for i in range(len(ids))])
