"""Run an exported distill classifier on raw samples with onnxruntime and numpy alone.

Copied beside the exported files as ``classifier.py``; it needs neither torch nor distill::

    from classifier import Classifier
    model = Classifier("export")          # the folder with classifier.json and student.onnx
    labels = model.predict(rows)          # rows: a pandas DataFrame, a dict of columns, or a numpy array
    labels = model.predict(["cat.jpg"])   # a student of an image folder: image files (or Pillow images)

A table must hold the feature columns the student was trained on, in that order: a DataFrame or dict whose
columns differ (missing, extra, or in another order) is refused with both lists, so that a row is never
read by position into the wrong features. A numpy array must be as wide as the feature list.

A student trained on an image folder also takes image files (paths, or Pillow images): each is converted and
resized as the run read its images (``classifier.json``'s ``image_file``: turned upright by its EXIF
orientation, then Pillow mode, size, bilinear), so a photo of any size gives the answer the run measured. That needs Pillow; pixel arrays do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class Classifier:
    """An exported student and what it expects (``classifier.json``)."""

    def __init__(self, folder: str | Path, file: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "classifier.json").read_text())
        self.classes: list[str] = list(self.meta["classes"])
        self.feature_names: list[str] | None = self.meta.get("feature_names")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        path = self.folder / (file or self.meta["files"][0])
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _images(self, items: list[Any]) -> np.ndarray:
        """Image files or Pillow images as the run read them: (N, C, H, W) uint8 pixels."""
        spec = self.meta["image_file"]
        try:
            from PIL import Image, ImageOps
        except ImportError:
            raise ImportError("reading image files needs Pillow: pip install pillow (or pass pixel arrays)") from None
        height, width = spec["size"]
        out = []
        for item in items:
            im = ImageOps.exif_transpose(item if hasattr(item, "convert") else Image.open(item))  # upright, as the run read it
            arr = np.asarray(im.convert(spec["mode"]).resize((width, height), Image.Resampling.BILINEAR), np.uint8)
            out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        return np.stack(out)

    def _array(self, rows: Any) -> np.ndarray:
        if isinstance(rows, (str, Path)) or hasattr(rows, "convert"):
            rows = [rows]
        if isinstance(rows, (list, tuple)) and rows and (isinstance(rows[0], (str, Path)) or hasattr(rows[0], "convert")):
            if "image_file" not in self.meta:
                raise ValueError("this student was not trained on image files; pass its samples as numbers "
                                 f"({self.meta.get('pixels') or 'rows of its features'}).")
            rows = self._images(list(rows))
        if hasattr(rows, "to_frame") and hasattr(rows, "index"):  # a pandas Series: one row, named by its index
            rows = rows.to_frame().T
        names = self.feature_names
        columns = list(rows.columns) if hasattr(rows, "columns") else list(rows) if isinstance(rows, dict) else None
        if names is not None and columns is not None:
            if [str(c) for c in columns] != names:
                missing = [n for n in names if n not in map(str, columns)]
                extra = [str(c) for c in columns if str(c) not in names]
                why = (f"missing {missing}" if missing else "") + ("; " if missing and extra else "") + \
                    (f"not features {extra}" if extra else "") or "the same names in another order"  # fmt: skip
                raise ValueError(
                    f"the rows' columns do not match the student's features ({why}). Expected, in this order: "
                    f"{names}; got: {[str(c) for c in columns]}. Fix: select the columns in this order, "
                    "e.g. rows[model.feature_names]."
                )
            data = np.column_stack([np.asarray(rows[c], dtype=np.float32) for c in columns])
        else:
            data = np.asarray(rows, dtype=np.float32)
        shape = tuple(self.meta["input_shape"])
        if self.meta["kind"] == "image" and data.ndim == len(shape) and shape[0] == 1:  # (batch, H, W), one channel
            data = data[:, None]
        if self.meta["kind"] == "image" and data.ndim == 4 and tuple(data.shape[1:]) == (*shape[1:], shape[0]):
            data = data.transpose(0, 3, 1, 2)  # (batch, H, W, C) as Pillow and most libraries give images
        if data.ndim == 1:
            data = data[None]
        if tuple(data.shape[1:]) != shape:
            raise ValueError(f"samples shaped {tuple(data.shape[1:])}, the student takes {shape} (raw values).")
        if not np.isfinite(data).all():
            raise ValueError("the samples hold NaN or infinite values; fill or drop them first.")
        return np.ascontiguousarray(data)

    def logits(self, rows: Any) -> np.ndarray:
        """``(N, classes)`` scores of raw samples."""
        (out,) = self.session.run(None, {self.input_name: self._array(rows)})[:1]
        return np.asarray(out)

    def predict_proba(self, rows: Any) -> np.ndarray:
        z = self.logits(rows)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, rows: Any) -> list[str]:
        """The class name of each sample."""
        return [self.classes[i] for i in self.logits(rows).argmax(axis=1)]
