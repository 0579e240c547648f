"""The classification data a recipe names: its ``data`` section loaded, split with a seed and preprocessed
into a :class:`~distill.data.DataBundle` (the containers and the readers are :mod:`distill.data`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.data import (
    FASHION_CLASSES,
    IMAGE_SUFFIXES,
    DataBundle,
    Split,
    load_fashion_mnist,
    read_table,
    split_indices,
)
from distill.errors import DataError
from distill.tasks.classification.recipe import DataConfig


def _image_bundle(
    cfg: DataConfig,
    source: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    train_ids: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    test_ids: np.ndarray,
    scale: float,
    class_names: list[str],
    flip_ok: bool,
) -> DataBundle:
    keep, held = split_indices(train_y, cfg.val_fraction, cfg.seed)
    if cfg.train_limit is not None:
        keep = keep[: cfg.train_limit]
    xt = train_x[keep].astype(np.float32) / scale
    mean, std = float(xt.mean()), float(xt.std()) or 1.0

    def prep(x: np.ndarray) -> Tensor:
        x = (x.astype(np.float32) / scale - mean) / std
        return torch.from_numpy(np.ascontiguousarray(x[:, None, :, :]))

    def mk(x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> Split:
        return Split(prep(x), torch.from_numpy(y.astype(np.int64)), ids)

    h, w = train_x.shape[1:]
    return DataBundle(
        train=mk(train_x[keep], train_y[keep], train_ids[keep]),
        val=mk(train_x[held], train_y[held], train_ids[held]),
        test=mk(test_x, test_y, test_ids),
        num_classes=len(class_names),
        class_names=class_names,
        in_shape=(1, int(h), int(w)),
        kind="image",
        source=source,
        preprocessing={"scale": scale, "mean": mean, "std": std, "layout": "NCHW"},
        flip_ok=flip_ok,
    )


def _fashion(cfg: DataConfig) -> DataBundle:
    tx, ty, vx, vy = load_fashion_mnist(cfg.path)
    train_ids = np.array([f"fmnist-train-{i:05d}" for i in range(len(ty))])
    test_ids = np.array([f"fmnist-test-{i:05d}" for i in range(len(vy))])
    return _image_bundle(cfg, "fashion_mnist", tx, ty, train_ids, vx, vy, test_ids, 255.0, FASHION_CLASSES, True)


def _digits(cfg: DataConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32)
    y = d.target.astype(np.int64)
    ids = np.array([f"digits-{i:04d}" for i in range(len(y))])
    rest, test = split_indices(y, cfg.test_fraction, cfg.seed + 1)
    return _image_bundle(
        cfg, "digits", images[rest], y[rest], ids[rest], images[test], y[test], ids[test],
        16.0, [str(i) for i in range(10)], False,
    )  # fmt: skip


def _is_numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column)) and not pd.api.types.is_bool_dtype(column)


def _table(cfg: DataConfig) -> DataBundle:
    df = read_table(cfg.path)
    if len(df) == 0:
        raise DataError(f"the table {cfg.path} has no rows. Fix: point data.path at a non-empty table.")
    features, id_column = _table_columns(cfg, df)
    x = df[features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        rows, colidx = np.nonzero(bad)
        named = sorted({features[c] for c in colidx})
        raise DataError(
            f"{int(bad.sum())} missing/NaN/inf feature values in {len(set(rows))} rows (columns: {', '.join(named)}; "
            f"first row {int(rows[0])}). Fix: fill or drop them before distilling."
        )
    y, classes = _table_labels(cfg, df)
    if id_column is not None:
        ids = df[id_column].astype(str).to_numpy()
        if len(set(ids)) != len(ids):
            how = "" if cfg.id_column else " (taken as the id column because of its name)"
            raise DataError(f"id column {id_column!r}{how} has duplicate ids. Fix: ids must be unique; or set "
                            "data.id_column to a column of unique ids.")  # fmt: skip
    else:
        ids = np.array([f"row-{i}" for i in range(len(df))])
    rest, test = split_indices(y, cfg.test_fraction, cfg.seed + 1)
    keep_rel, val_rel = split_indices(y[rest], cfg.val_fraction, cfg.seed)
    train_idx, val_idx = rest[keep_rel], rest[val_rel]
    if cfg.train_limit is not None:
        train_idx = train_idx[: cfg.train_limit]
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0)
    std[std == 0] = 1.0

    def mk(idx: np.ndarray) -> Split:
        xs = ((x[idx] - mean) / std).astype(np.float32)
        return Split(torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(y[idx]), ids[idx])

    return DataBundle(
        train=mk(train_idx), val=mk(val_idx), test=mk(test),
        num_classes=len(classes), class_names=[str(c) for c in classes],
        in_shape=(len(features),), kind="table", source=f"table:{Path(str(cfg.path)).name}",
        preprocessing={"features": features, "mean": mean.tolist(), "std": std.tolist(), "classes": [str(c) for c in classes]},
    )  # fmt: skip


def _table_columns(cfg: DataConfig, df: Any) -> tuple[list[str], str | None]:
    """The feature columns and the id column of a table. Without ``data.id_column``, a column named ``id``
    is the id column; an unlisted first column that holds the row number is refused as a feature."""
    cols = [str(c) for c in df.columns]
    if cfg.label_column not in cols:
        raise DataError(
            f"label column {cfg.label_column!r} is not in {cfg.path}; its columns are: {', '.join(cols)}. "
            "Fix: set data.label_column to one of them."
        )
    if cfg.id_column is not None and cfg.id_column not in cols:
        raise DataError(f"id column {cfg.id_column!r} is not in {cfg.path}; its columns are: {', '.join(cols)}. "
                        "Fix: set data.id_column to one of them, or remove it (the row number is the id).")  # fmt: skip
    id_column = cfg.id_column
    if id_column is None and "id" in cols and cfg.label_column != "id" and "id" not in (cfg.feature_columns or []):
        id_column = "id"
    features = cfg.feature_columns or [c for c in cols if c not in {cfg.label_column, id_column}]
    absent = [c for c in features if c not in cols]
    if absent:
        raise DataError(f"feature columns not in {cfg.path}: {', '.join(absent)}. Its columns are: {', '.join(cols)}.")
    if not features:
        raise DataError(f"{cfg.path} has no feature columns besides the label. Fix: add features or set data.feature_columns.")
    non_numeric = [c for c in features if not _is_numeric(df[c])]
    if non_numeric:
        raise DataError(
            f"feature columns must be numeric; not numeric: {', '.join(non_numeric)}. "
            "Fix: encode them as numbers or leave them out of data.feature_columns."
        )
    first = cols[0]
    if cfg.feature_columns is None and first in features and _is_row_number(df[first]):
        raise DataError(
            f"the first column of {cfg.path}, {first!r}, holds the row number (0, 1, 2, ... or 1, 2, 3, ...; an index "
            "written with the table?): as a feature it would tell the model where a row sits, not what it is. "
            f"Fix: set data.id_column: {first!r} (or drop the column, e.g. to_csv(index=False)); list "
            "data.feature_columns to keep it as a feature."
        )
    return features, id_column


def _is_row_number(column: Any) -> bool:
    """True for a column of whole numbers 0..n-1 or 1..n in order (a written index)."""
    values = column.to_numpy()
    if len(values) < 3 or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        return False
    start = values[0]
    return bool(start in (0, 1) and np.array_equal(values, np.arange(start, start + len(values))))


def _table_labels(cfg: DataConfig, df: Any) -> tuple[np.ndarray, list[Any]]:
    """The class index of every row and the classes (sorted); spellings of one label that differ by spaces
    or case, and classes too small to split, are refused."""
    from distill.data.labels import label_variants, small_classes, small_classes_message, variants_message

    labels = df[cfg.label_column]
    if labels.isna().any():
        raise DataError(f"{int(labels.isna().sum())} rows have no label in column {cfg.label_column!r}. Fix: drop them.")
    classes = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
    groups = label_variants(classes)
    if groups:
        counts = {str(k): int(v) for k, v in labels.astype(str).value_counts().items()}
        raise DataError(variants_message(groups, f"the label column {cfg.label_column!r} of {cfg.path}", counts))
    if len(classes) < 2:
        raise DataError(f"label column {cfg.label_column!r} has {len(classes)} class; a classifier needs at least 2. "
                        "Fix: point data.label_column at the column of the classes, or add rows of other classes.")  # fmt: skip
    small = small_classes(labels.astype(str))
    if small:
        raise DataError(small_classes_message(small, f"the label column {cfg.label_column!r} of {cfg.path}"))
    index = {c: i for i, c in enumerate(classes)}
    return labels.map(index).to_numpy(dtype=np.int64), classes


def _image_folder(cfg: DataConfig) -> DataBundle:
    """Class subfolders of images: labels are the subfolder names (sorted), ids the paths relative to the folder,
    every image resized to ``image_size`` and converted to ``channels``; seeded stratified splits."""
    from distill.tasks.classification.images import read_image_folder

    x, y, ids, classes = read_image_folder(cfg.path, tuple(cfg.image_size), cfg.channels, IMAGE_SUFFIXES)
    rest, test = split_indices(y, cfg.test_fraction, cfg.seed + 1)
    keep_rel, val_rel = split_indices(y[rest], cfg.val_fraction, cfg.seed)
    train_idx, val_idx = rest[keep_rel], rest[val_rel]
    if cfg.train_limit is not None:
        train_idx = train_idx[: cfg.train_limit]
    scale = 255.0
    xt = x[train_idx].astype(np.float32) / scale
    mean, std = float(xt.mean()), float(xt.std()) or 1.0

    def mk(idx: np.ndarray) -> Split:
        xs = (x[idx].astype(np.float32) / scale - mean) / std
        return Split(torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(y[idx]), ids[idx])

    return DataBundle(
        train=mk(train_idx), val=mk(val_idx), test=mk(test), num_classes=len(classes), class_names=classes,
        in_shape=tuple(int(d) for d in x.shape[1:]), kind="image", source=f"images:{Path(str(cfg.path)).name}",
        preprocessing={"scale": scale, "mean": mean, "std": std, "layout": "NCHW",
                       # how a file becomes pixels: the exported classifier reads image files the same way
                       "image_file": {"mode": "L" if cfg.channels == 1 else "RGB", "size": list(cfg.image_size),
                                      "resample": "bilinear"}},
    )  # fmt: skip


SOURCES = {"fashion_mnist": _fashion, "digits": _digits, "table": _table, "image_folder": _image_folder}


def build_data(cfg: DataConfig) -> DataBundle:
    """Load, split and preprocess the data a recipe names."""
    bundle = SOURCES[cfg.source](cfg)
    for name, split in bundle.splits().items():
        if len(split) == 0:
            raise DataError(f"the {name} split is empty ({bundle.describe()}). Fix: use more data or smaller held-out fractions.")
    return bundle

