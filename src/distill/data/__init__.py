"""Data sources for classification, split with a seed, every sample with a stable id.

``build_data(config)`` returns a :class:`DataBundle` of preprocessed tensors in
memory (train / val / test), the number of classes, the sample shape and a
description of the preprocessing (which is part of the teacher-cache key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.data.idx import read_idx, write_idx
from distill.errors import DataError
from distill.recipe import FASHION_MNIST_DIR, DataConfig

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass
class Split:
    """Preprocessed samples of one split. ``ids[i]`` is the stable id of sample i."""

    x: Tensor
    y: Tensor
    ids: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(str(tuple(self.x.shape)).encode())
        h.update(self.x.contiguous().numpy().tobytes())
        h.update(self.y.numpy().tobytes())
        h.update("\n".join(map(str, self.ids)).encode())
        return h.hexdigest()

    def subset(self, index: np.ndarray) -> "Split":
        idx = torch.as_tensor(index, dtype=torch.long)
        return Split(self.x[idx], self.y[idx], self.ids[index])


@dataclass
class DataBundle:
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    in_shape: tuple[int, ...]
    kind: str  # "image" or "table"
    source: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    flip_ok: bool = False

    def to_raw(self, x: Tensor) -> Tensor:
        """Undo the preprocessing: samples as in the user's data (table values, pixels 0-255)."""
        p = self.preprocessing
        if self.kind == "table":
            return x * torch.tensor(p["std"], dtype=x.dtype) + torch.tensor(p["mean"], dtype=x.dtype)
        return (x * p["std"] + p["mean"]) * p["scale"]

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def describe(self) -> str:
        return (
            f"{self.source}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_classes} classes, samples {self.in_shape}"
        )


def transfer_set(bundle: DataBundle, exclude_classes: list[int], labeled_fraction: float, seed: int) -> tuple[DataBundle, np.ndarray]:
    """The students' training split: without ``exclude_classes``, and with the labels of all but a
    seeded ``labeled_fraction`` of the samples replaced by -100 (unlabeled). Returns the new bundle
    (validation and test unchanged) and the indices of its training rows in ``bundle.train``."""
    import dataclasses

    bad = [c for c in exclude_classes if not 0 <= c < bundle.num_classes]
    if bad:
        raise DataError(f"transfer.exclude_classes {bad} are not classes of the data (0..{bundle.num_classes - 1}).")
    if len(set(exclude_classes)) >= bundle.num_classes:
        raise DataError("transfer.exclude_classes leaves no class to train on.")
    y = bundle.train.y.numpy()
    keep = np.flatnonzero(~np.isin(y, exclude_classes))
    train = bundle.train.subset(keep)
    if labeled_fraction < 1.0:
        rng = np.random.default_rng(seed)
        n_labeled = max(1, int(round(len(keep) * labeled_fraction)))
        unlabeled = rng.permutation(len(keep))[n_labeled:]
        labels = train.y.clone()
        labels[torch.as_tensor(unlabeled, dtype=torch.long)] = -100
        train = Split(train.x, labels, train.ids)
    return dataclasses.replace(bundle, train=train), keep


def labeled_only(bundle: DataBundle) -> DataBundle:
    """The bundle with only the labeled training rows (for the hard-label baseline)."""
    import dataclasses

    mask = (bundle.train.y >= 0).numpy()
    if mask.all():
        return bundle
    return dataclasses.replace(bundle, train=bundle.train.subset(np.flatnonzero(mask)))


# ------------------------------------------------------------------ sources
def load_fashion_mnist(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = Path(path or FASHION_MNIST_DIR)
    missing = [name for name in FASHION_FILES.values() if not (folder / name).is_file()]
    if missing:
        if path is None or Path(path) == Path(FASHION_MNIST_DIR):
            fix = (
                "Fix: install Debian's package (`sudo apt-get install dataset-fashion-mnist`), "
                "set data.path to a folder holding the four files, or use data.source: digits."
            )
        else:
            fix = "Fix: set data.path to the folder that holds the four Fashion-MNIST IDX .gz files."
        raise DataError(f"Fashion-MNIST not found in {folder}: missing {', '.join(missing)}. {fix}")
    arrays = {k: read_idx(folder / v) for k, v in FASHION_FILES.items()}
    for part in ("train", "test"):
        imgs, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{folder}: {part} images must be (N, H, W) and labels (N,), got {imgs.shape} and {labels.shape}")
        if imgs.shape[0] != labels.shape[0]:
            raise DataError(
                f"{folder}: {imgs.shape[0]} {part} images but {labels.shape[0]} labels. Fix: the files do not belong together."
            )
        if imgs.shape[0] == 0:
            raise DataError(f"{folder}: the {part} split is empty. Fix: use the complete IDX files.")
        if labels.size and int(labels.max()) >= 10:
            raise DataError(f"{folder}: {part} labels must be in 0..9, found {int(labels.max())}")
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


def _split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (stratified where possible) split of ``range(len(y))`` into (keep, held_out)."""
    n = len(y)
    n_out = int(round(n * fraction))
    if n_out < 1 or n - n_out < 1:
        raise DataError(
            f"cannot hold out {fraction:.3g} of {n} samples (would leave an empty split). "
            "Fix: use more data or change data.val_fraction/test_fraction."
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() >= 2 and n_out >= len(classes) and n - n_out >= len(classes):
        out = []
        for c in classes:  # proportional per class
            members = np.flatnonzero(y == c)
            rng.shuffle(members)
            k = int(round(len(members) * fraction))
            out.append(members[:k])
        held = np.sort(np.concatenate(out))
    else:
        held = np.sort(rng.permutation(n)[:n_out])
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    keep = np.flatnonzero(mask)
    keep = keep[rng.permutation(len(keep))]
    return keep, held


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
    keep, held = _split_indices(train_y, cfg.val_fraction, cfg.seed)
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
    rest, test = _split_indices(y, cfg.test_fraction, cfg.seed + 1)
    return _image_bundle(
        cfg, "digits", images[rest], y[rest], ids[rest], images[test], y[test], ids[test],
        16.0, [str(i) for i in range(10)], False,
    )  # fmt: skip


def _read_table(path: str | None) -> Any:
    import pandas as pd

    if not path:
        raise DataError("data.source is 'table' but data.path is not set. Fix: set data.path to a .csv or .parquet file.")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"table file not found: {p}. Fix: check data.path.")
    suffix = p.suffix.lower()
    try:
        if suffix in {".csv", ".txt", ".tsv"}:
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(p)
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text. Fix: re-save the CSV as UTF-8.") from None
    except Exception as exc:  # pandas/pyarrow raise many kinds for corrupt files
        raise DataError(f"cannot read table {p}: {type(exc).__name__}: {exc}. Fix: check the file is a valid {suffix[1:]} file.") from None
    raise DataError(f"unsupported table format {suffix!r} for {p}. Fix: use .csv, .tsv or .parquet.")


def _is_numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column)) and not pd.api.types.is_bool_dtype(column)


def _table(cfg: DataConfig) -> DataBundle:
    df = _read_table(cfg.path)
    if len(df) == 0:
        raise DataError(f"the table {cfg.path} has no rows. Fix: point data.path at a non-empty table.")
    cols = [str(c) for c in df.columns]
    if cfg.label_column not in cols:
        raise DataError(
            f"label column {cfg.label_column!r} is not in {cfg.path}; its columns are: {', '.join(cols)}. "
            "Fix: set data.label_column to one of them."
        )
    if cfg.id_column is not None and cfg.id_column not in cols:
        raise DataError(f"id column {cfg.id_column!r} is not in {cfg.path}; its columns are: {', '.join(cols)}.")
    features = cfg.feature_columns or [c for c in cols if c not in {cfg.label_column, cfg.id_column}]
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
    x = df[features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        rows, colidx = np.nonzero(bad)
        named = sorted({features[c] for c in colidx})
        raise DataError(
            f"{int(bad.sum())} missing/NaN/inf feature values in {len(set(rows))} rows (columns: {', '.join(named)}; "
            f"first row {int(rows[0])}). Fix: fill or drop them before distilling."
        )
    labels = df[cfg.label_column]
    if labels.isna().any():
        raise DataError(f"{int(labels.isna().sum())} rows have no label in column {cfg.label_column!r}. Fix: drop them.")
    classes = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise DataError(f"label column {cfg.label_column!r} has {len(classes)} class; a classifier needs at least 2.")
    index = {c: i for i, c in enumerate(classes)}
    y = labels.map(index).to_numpy(dtype=np.int64)
    if cfg.id_column is not None:
        ids = df[cfg.id_column].astype(str).to_numpy()
        if len(set(ids)) != len(ids):
            raise DataError(f"id column {cfg.id_column!r} has duplicate ids. Fix: ids must be unique.")
    else:
        ids = np.array([f"row-{i}" for i in range(len(df))])
    rest, test = _split_indices(y, cfg.test_fraction, cfg.seed + 1)
    keep_rel, val_rel = _split_indices(y[rest], cfg.val_fraction, cfg.seed)
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _image_folder(cfg: DataConfig) -> DataBundle:
    """Class subfolders of images: labels are the subfolder names (sorted), ids the paths relative to the folder,
    every image resized to ``image_size`` and converted to ``channels``; seeded stratified splits."""
    from distill.data.images import read_image_folder

    x, y, ids, classes = read_image_folder(cfg.path, tuple(cfg.image_size), cfg.channels, IMAGE_SUFFIXES)
    rest, test = _split_indices(y, cfg.test_fraction, cfg.seed + 1)
    keep_rel, val_rel = _split_indices(y[rest], cfg.val_fraction, cfg.seed)
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
        preprocessing={"scale": scale, "mean": mean, "std": std, "layout": "NCHW"},
    )  # fmt: skip


SOURCES = {"fashion_mnist": _fashion, "digits": _digits, "table": _table, "image_folder": _image_folder}


def build_data(cfg: DataConfig) -> DataBundle:
    """Load, split and preprocess the data a recipe names."""
    bundle = SOURCES[cfg.source](cfg)
    for name, split in bundle.splits().items():
        if len(split) == 0:
            raise DataError(f"the {name} split is empty ({bundle.describe()}). Fix: use more data or smaller held-out fractions.")
    return bundle


__all__ = ["DataBundle", "Split", "build_data", "labeled_only", "transfer_set", "load_fashion_mnist", "read_idx", "write_idx", "FASHION_CLASSES"]
