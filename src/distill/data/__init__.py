"""Data for classification: the in-memory splits (every sample with a stable id), the students' transfer set,
and the readers of the sources (Fashion-MNIST's IDX files, tables, image folders), each taking plain arguments.

The recipe's ``data`` section is turned into a :class:`DataBundle` of preprocessed tensors (train / val / test,
the number of classes, the sample shape and a description of the preprocessing, which is part of the
teacher-cache key) by the classification task, :func:`distill.tasks.classification.data.build_data`.
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

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts the files
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
    names = ", ".join(f"{i}: {n}" for i, n in enumerate(bundle.class_names[:12]))
    if bad:
        raise DataError(f"transfer.exclude_classes {bad} are not classes of the data (0..{bundle.num_classes - 1}). "
                        f"Fix: name classes by their index ({names}).")  # fmt: skip
    if len(set(exclude_classes)) >= bundle.num_classes:
        raise DataError(
            f"transfer.exclude_classes {sorted(set(exclude_classes))} leaves out every class of the data "
            f"({bundle.num_classes}), so the students would have nothing to train on. Fix: leave at least one class "
            "out of transfer.exclude_classes (it names the classes the students never see)."
        )
    y = bundle.train.y.numpy()
    keep = np.flatnonzero(~np.isin(y, exclude_classes))
    train = bundle.train.subset(keep)
    if labeled_fraction < 1.0:
        rng = np.random.default_rng(seed)
        n_labeled = labeled_count(len(keep), labeled_fraction)
        unlabeled = rng.permutation(len(keep))[n_labeled:]
        labels = train.y.clone()
        labels[torch.as_tensor(unlabeled, dtype=torch.long)] = -100
        train = Split(train.x, labels, train.ids)
    return dataclasses.replace(bundle, train=train), keep


def labeled_count(n: int, labeled_fraction: float) -> int:
    """How many of ``n`` training samples keep their label with ``transfer.labeled_fraction``."""
    return n if labeled_fraction >= 1.0 else max(1, int(round(n * labeled_fraction)))


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


def split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def read_table(path: str | None) -> Any:
    import pandas as pd

    if not path:
        raise DataError("data.source is 'table' but data.path is not set. Fix: set data.path to a .csv or .parquet file.")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"table file not found: {p}. Fix: check data.path.")
    suffix = p.suffix.lower()
    try:
        if suffix in {".csv", ".txt", ".tsv"}:
            sep = "\t" if suffix == ".tsv" else ","
            check_header(p, sep)
            return pd.read_csv(p, sep=sep)
        if suffix in {".parquet", ".pq"}:
            df = pd.read_parquet(p)
            _refuse_duplicates(p, [str(c) for c in df.columns])
            return df
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text. Fix: re-save the CSV as UTF-8.") from None
    except Exception as exc:  # pandas/pyarrow raise many kinds for corrupt files
        raise DataError(f"cannot read table {p}: {type(exc).__name__}: {exc}. Fix: check the file is a valid {suffix[1:]} file.") from None
    raise DataError(f"unsupported table format {suffix!r} for {p}. Fix: use .csv, .tsv or .parquet.")


def check_header(p: Path, sep: str) -> None:
    """A CSV's header names every column once (pandas would rename a second ``a`` to ``a.1`` unasked), and a
    header that reads as one column holding another separator (``text;label`` in a .csv) is refused: its rows
    would read as one column."""
    import csv

    with open(p, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    others = {";": "semicolons", "\t": "tabs", "|": "bars", ",": "commas"}
    if len(header) == 1:
        found = [name for mark, name in others.items() if mark != sep and mark in header[0]]
        if found:
            kind = "comma" if sep == "," else "tab"
            raise DataError(
                f"{p} reads as one column named {header[0]!r}: its header is split by {found[0]}, not the {kind}s "
                f"a {p.suffix} file is read with. Fix: save it {kind}-separated"
                + (" (or tab-separated, named .tsv)." if sep == "," else " (or comma-separated, named .csv).")
            )
    _refuse_duplicates(p, header)


def _refuse_duplicates(p: Path, names: list[str]) -> None:
    from collections import Counter

    dup = [name for name, n in Counter(names).items() if n > 1]
    if dup:
        raise DataError(
            f"the table {p} has more than one column named {', '.join(map(repr, dup))}: a column would be taken for "
            "another (or renamed, e.g. to 'a.1'), so features or labels would be silently wrong. "
            "Fix: give every column its own name in the header."
        )


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


__all__ = ["FASHION_CLASSES", "FASHION_MNIST_DIR", "IMAGE_SUFFIXES", "DataBundle", "Split", "labeled_count", "labeled_only",
           "load_fashion_mnist", "read_idx", "read_table", "split_indices", "transfer_set", "write_idx"]  # fmt: skip
