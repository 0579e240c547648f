"""Exported classifiers that ship with their preprocessing: the ONNX file takes the samples as they are in the
user's data (a table's raw values, in its feature order; image pixels as stored) and the files say what
they expect and what they return.

* :class:`WithPreprocessing` puts the run's standardisation in front of the student, so that it is part of
  the ONNX graph;
* :func:`shipping_metadata` is what the export records, in the ONNX file's metadata and in
  ``classifier.json`` beside it: the feature names and their order, the standardisation, the class names,
  the input shape;
* ``classifier.py`` (copied next to the files from :mod:`distill.export.classifier_runtime`) loads them
  with onnxruntime and numpy alone, refuses a table whose columns are not the feature names in their
  order (naming both), and returns class names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

RUNTIME = Path(__file__).with_name("classifier_runtime.py")


class WithPreprocessing(nn.Module):
    """``model`` fed raw samples: ``(x / scale − mean) / std`` first (a table: per feature; images: one value)."""

    def __init__(self, model: nn.Module, preprocessing: dict[str, Any], kind: str):
        super().__init__()
        self.model = model
        mean, std = torch.tensor(preprocessing["mean"], dtype=torch.float32), torch.tensor(preprocessing["std"],
                                                                                             dtype=torch.float32)  # fmt: skip
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.scale = float(preprocessing.get("scale", 1.0)) if kind == "image" else 1.0

    def forward(self, x: Tensor) -> Tensor:
        if self.scale != 1.0:
            x = x / self.scale
        return self.model((x - self.mean) / self.std)


def shipping_metadata(data: Any, *, teacher: str | None = None) -> dict[str, Any]:
    """What a user of the exported file needs to call it on raw samples and read its answer."""
    p = data.preprocessing
    meta: dict[str, Any] = {
        "task": "classification", "inputs": "raw", "kind": data.kind, "input_shape": list(data.in_shape),
        "classes": list(map(str, data.class_names)), "outputs": "logits (batch, classes): argmax is the class",
    }  # fmt: skip
    if data.kind == "table":
        meta["feature_names"] = list(map(str, p["features"]))
        meta["standardisation"] = {"mean": list(map(float, p["mean"])), "std": list(map(float, p["std"]))}
    else:
        meta["standardisation"] = {"scale": float(p["scale"]), "mean": float(p["mean"]), "std": float(p["std"]),
                                   "layout": p.get("layout", "NCHW")}  # fmt: skip
        meta["pixels"] = f"as stored (0..{p['scale']:g}), shaped (batch, {', '.join(map(str, data.in_shape))})"
        if p.get("image_file"):  # an image folder's files: Pillow's mode and resize, as the run read them
            meta["image_file"] = dict(p["image_file"])
    if teacher:
        meta["teacher"] = teacher
    return meta


def write_metadata(onnx_path: Path, meta: dict[str, Any]) -> None:
    """Record ``meta`` in the ONNX file's metadata (each key a JSON value), rewriting the file atomically."""
    import onnx

    model = onnx.load(str(onnx_path))
    keep = [m for m in model.metadata_props if m.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(onnx_path)


def read_metadata(onnx_path: Path) -> dict[str, Any]:
    """The metadata :func:`write_metadata` recorded (empty for a file without it)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    out: dict[str, Any] = {}
    for m in model.metadata_props:
        try:
            out[m.key] = json.loads(m.value)
        except ValueError:
            out[m.key] = m.value
    return out


def ship_folder(folder: Path, meta: dict[str, Any], files: list[str]) -> None:
    """``classifier.json``, ``classifier.py`` and a README saying how to call the files, in ``folder``."""
    from distill.core.fsutil import write_json, write_text

    write_json(folder / "classifier.json", {**meta, "files": files})
    shutil.copyfile(RUNTIME, folder / "classifier.py")
    example = "rows = pandas.read_csv('new.csv')  # the columns " + ", ".join(meta["feature_names"][:4]) + \
        (", ..." if len(meta["feature_names"]) > 4 else "") + " in this order" if meta["kind"] == "table" else \
        "rows = pixels  # numpy, shaped (batch, " + ", ".join(map(str, meta["input_shape"])) + "), values as stored"  # fmt: skip
    if meta.get("image_file"):  # an image folder's student: the files themselves, any size
        spec = meta["image_file"]
        example = "rows = ['photo.jpg', 'scan.png']  # image files (or Pillow images), any size: converted to " + \
            f"{spec['mode']} and resized to {spec['size'][0]}x{spec['size'][1]} ({spec['resample']}) as in the run; needs Pillow"  # fmt: skip
    write_text(folder / "README.md", f"""# Exported student: how to call it

`{files[0]}` takes **raw samples**, as they are in your data: the run's standardisation is inside the graph.
{"Its input is one row per sample of the feature columns, in this order: " + ", ".join(meta["feature_names"]) + "." if meta["kind"] == "table" else "Its input is images " + meta["pixels"] + "."}
It returns logits `(batch, {len(meta["classes"])})`; the class of each row is the argmax, in this order:
{", ".join(meta["classes"])}.

With onnxruntime and numpy alone (`classifier.py` is in this folder):

```python
from classifier import Classifier
model = Classifier(".")            # reads classifier.json and {files[0]}
{example}
labels = model.predict(rows)       # class names; predict_proba(rows) for the probabilities
```

A table whose columns are not these names in this order is refused with both lists, never read by position.
Everything is also in the ONNX file's metadata (`feature_names`, `standardisation`, `classes`, `inputs`).
""")


__all__ = ["WithPreprocessing", "read_metadata", "ship_folder", "shipping_metadata", "write_metadata"]
