"""A teacher that is an ONNX model, run by onnxruntime on the CPU.

The model takes one float input shaped like the samples with a leading batch
axis, e.g. ``(batch, 64)`` or ``(batch, 1, 28, 28)``, and returns ``(batch, C)``
scores. The fingerprint is the sha256 of the model file (and of any external
data files it references), so the teacher-output cache is rebuilt when the
model changes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.errors import TeacherError

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _dims(shape: Sequence[Any]) -> list[int | None]:
    """onnxruntime shapes hold ints for fixed axes and strings/None for symbolic ones."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _show(dims: Sequence[int | None]) -> str:
    parts = ["batch" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(dims)]
    return "(" + ", ".join(parts) + ")"


def _external_data_files(path: Path) -> list[Path]:
    """Files named by initializers stored outside the .onnx file (large models), sorted."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnxruntime reports invalid files with a better message
        return []
    names: set[str] = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    names.add(entry.value)
    return [path.parent / n for n in sorted(names)]


def _is_column(inp: Any) -> bool:
    """A float input that holds one table column: (batch,) or (batch, 1)."""
    dims = _dims(inp.shape)
    return inp.type in _NUMPY_TYPES and (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1))


def _meta_list(meta: dict[str, str], key: str) -> list[Any] | None:
    """A list stored in the model's metadata, as JSON or comma-separated."""
    import json

    raw = meta.get(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = [part.strip() for part in raw.split(",")]
    return list(value) if isinstance(value, list) and value else None


def _classifier_labels(path: Path) -> list[Any] | None:
    """The class labels an ONNX-ML classifier node declares (LinearClassifier, TreeEnsembleClassifier,
    SVMClassifier, ZipMap ...: ``classlabels_ints``/``_int64s``/``_strings``), when there is exactly one set."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    found: list[list[Any]] = []
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name.startswith("classlabels_"):
                values = helper.get_attribute_value(attr)
                labels = [v.decode() if isinstance(v, bytes) else v for v in values]
                if labels and labels not in found:
                    found.append(labels)
    return found[0] if len(found) == 1 else None


def _import_runtime() -> Any:
    """The onnxruntime module (onnx too must be installed: the fingerprint reads external-data references with it)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise TeacherError(
            f"an ONNX teacher needs the onnx and onnxruntime packages ({exc}). "
            "Fix: pip install onnx onnxruntime (or: pip install 'distill[onnx]')."
        ) from None
    del onnx
    return ort


def _open_session(ort: Any, path: Path, num_threads: int | None) -> Any:
    """An onnxruntime CPU session on ``path``, reporting errors only."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only; we report problems ourselves
    if num_threads is not None:
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, NoSuchFile ... (pybind types)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TeacherError(
            f"cannot load the ONNX teacher {path}: it is not a valid ONNX model ({first}). "
            "Fix: re-export the model, and check the file is complete (not truncated) and not another format."
        ) from None


class OnnxTeacher:
    """An ONNX classifier run with onnxruntime's ``CPUExecutionProvider``.

    Args:
        path: the ``.onnx`` file.
        input_name: which model input receives the samples; default: the only input.
        output_name: which model output holds the class scores; default: the first output.
        num_classes: the number of classes, needed only when the model's output width is
            symbolic; when given it must agree with a fixed width.
        batch_size: rows per onnxruntime call.
        num_threads: onnxruntime intra-op threads (default: onnxruntime's choice).

    Raises:
        TeacherError: the file is missing or not a valid ONNX model, the input/output names
            do not exist, or the output is not ``(batch, C)``.
    """

    needs_ids = False

    def __init__(
        self,
        path: str | Path,
        *,
        input_name: str | None = None,
        output_name: str | None = None,
        num_classes: int | None = None,
        batch_size: int = 1024,
        num_threads: int | None = None,
    ):
        ort = _import_runtime()
        self.path = Path(path)
        if not self.path.is_file():
            raise TeacherError(
                f"ONNX teacher file not found: {self.path}. "
                "Fix: check the path (export the model with torch.onnx.export or your framework's ONNX exporter)."
            )
        if batch_size <= 0:
            raise TeacherError(f"ONNX teacher batch_size must be > 0 (got {batch_size})")
        self._session = _open_session(ort, self.path, num_threads)
        meta = dict(self._session.get_modelmeta().custom_metadata_map or {})
        self._columns_in: list[Any] | None = None  # one input per table column (e.g. skl2onnx from a DataFrame)
        self._input = self._resolve_input(input_name)
        self._output = self._resolve_output(output_name)
        if self._input.type not in _NUMPY_TYPES:
            raise TeacherError(
                f"the ONNX teacher {self.path} takes {self._input.type} input {self._input.name!r}; distill feeds "
                "float samples. Fix: export the model with a float32 input."
            )
        self._in_dtype = _NUMPY_TYPES[self._input.type]
        self.input_dims = _dims(self._input.shape)
        self.num_classes = self._resolve_num_classes(num_classes)
        self.input_name = self._input.name
        self.output_name = self._output.name
        self.batch_size = int(batch_size)
        self._fp: str | None = None
        self.feature_names: list[str] | None = (
            [i.name for i in self._columns_in] if self._columns_in is not None else _meta_list(meta, "feature_names")
        )
        self.class_labels: list[Any] | None = _meta_list(meta, "classes") or _classifier_labels(self.path)
        self._features: np.ndarray | None = None  # which sample columns it takes, in its order
        self._order: np.ndarray | None = None  # output column for each of the data's classes

    def _resolve_input(self, input_name: str | None) -> Any:
        """The session input that receives the samples (the first column when the model takes one input per
        table column, which sets ``_columns_in``)."""
        inputs = self._session.get_inputs()
        in_names = [i.name for i in inputs]
        if input_name is None and len(inputs) > 1 and all(_is_column(i) for i in inputs):
            self._columns_in = list(inputs)
            input_name = inputs[0].name
            inputs = inputs[:1]
        if input_name is None:
            if len(inputs) != 1:
                raise TeacherError(
                    f"the ONNX teacher {self.path} has {len(inputs)} inputs ({', '.join(in_names)}); distill feeds "
                    "the samples into exactly one. Fix: export a model with a single input."
                )
            return inputs[0]
        if input_name not in in_names:
            raise TeacherError(
                f"the ONNX teacher {self.path} has no input {input_name!r}; its inputs: {', '.join(in_names)}. "
                "Fix: set input_name to one of them."
            )
        if len(inputs) != 1:
            others = [n for n in in_names if n != input_name]
            raise TeacherError(
                f"the ONNX teacher {self.path} also needs inputs {', '.join(others)} besides {input_name!r}; "
                "distill feeds only the samples. Fix: export a model with a single input."
            )
        return inputs[in_names.index(input_name)]

    def _resolve_output(self, output_name: str | None) -> Any:
        """The session output that holds the class scores: the named one, or the first 2-D float output."""
        outputs = self._session.get_outputs()
        out_names = [o.name for o in outputs]
        if output_name is None:
            scores = [o for o in outputs if o.type in _NUMPY_TYPES and len(o.shape) == 2]
            if not scores:
                shown = ", ".join(f"{o.name} {o.type} {_show(_dims(o.shape)) if isinstance(o.shape, list) else ''}"
                                  for o in outputs)
                raise TeacherError(
                    f"the ONNX teacher {self.path} has no (batch, classes) float output (its outputs: {shown}). "
                    "Fix: export the class scores as a 2-D float tensor (with skl2onnx: "
                    "options={'zipmap': False}), or name the output with teacher.output_name."
                )
            return scores[0]
        if output_name not in out_names:
            raise TeacherError(
                f"the ONNX teacher {self.path} has no output {output_name!r}; its outputs: "
                f"{', '.join(out_names)}. Fix: set output_name to one of them."
            )
        return outputs[out_names.index(output_name)]

    def _resolve_num_classes(self, num_classes: int | None) -> int:
        """The output's width, which must be fixed or given as ``num_classes`` (and agree with it)."""
        out_dims = _dims(self._output.shape)
        if len(self._output.shape) != 2:
            raise TeacherError(
                f"the ONNX teacher {self.path} output {self._output.name!r} is shaped {_show(out_dims)}; a classifier "
                "teacher returns (batch, classes). Fix: pick the logits output with output_name, or export it 2-D."
            )
        width = out_dims[1]
        if width is None and num_classes is None:
            raise TeacherError(
                f"the ONNX teacher {self.path} has a symbolic number of classes in output {self._output.name!r}. "
                "Fix: pass num_classes, or export the model with a fixed output width."
            )
        if width is not None and num_classes is not None and width != num_classes:
            raise TeacherError(
                f"the ONNX teacher {self.path} outputs {width} classes but {num_classes} were expected. "
                f"Fix: use a teacher with {num_classes} outputs (or data with {width} classes)."
            )
        return int(width if width is not None else num_classes)  # type: ignore[arg-type]

    def take_features(self, index: np.ndarray | None) -> None:
        """Feed it the sample columns ``index`` (in its own feature order) instead of all columns as given."""
        self._features = None if index is None else np.asarray(index, dtype=np.int64)

    def map_classes(self, columns: np.ndarray, num_classes: int) -> None:
        """Output column ``j`` holds class ``columns[j]``; the outputs are reordered to the data's classes."""
        columns = np.asarray(columns, dtype=np.int64)
        if len(columns) != num_classes or sorted(columns.tolist()) != list(range(num_classes)):
            raise TeacherError(
                f"the ONNX teacher {self.path} knows {len(columns)} classes but the data has {num_classes}. "
                "Fix: use a teacher trained on all the data's classes."
            )
        self._order = None if np.array_equal(columns, np.arange(num_classes)) else np.argsort(columns)

    def check_sample_shape(self, sample_shape: Sequence[int]) -> None:
        """Raise :class:`TeacherError` unless samples shaped ``sample_shape`` (no batch axis) fit the input."""
        if self._columns_in is not None or self._features is not None:
            need = len(self._columns_in) if self._columns_in is not None else self.input_dims[-1]
            width = len(self._features) if self._features is not None else int(sample_shape[0]) if sample_shape else 0
            if len(sample_shape) != 1 or (need is not None and width != need):
                raise TeacherError(
                    f"the ONNX teacher {self.path} takes {need} table columns but the samples are shaped "
                    f"{tuple(sample_shape)}. Fix: give it the table it was exported for."
                )
            return
        want = self.input_dims
        got = [None, *map(int, sample_shape)]
        fits = len(want) == len(got) and all(w is None or w == g for w, g in zip(want[1:], got[1:]))
        if not fits:
            raise TeacherError(
                f"the ONNX teacher {self.path} expects input {self.input_name!r} shaped {_show(want)} but the samples "
                f"are shaped {tuple(sample_shape)}. Fix: export the teacher for this data's sample shape, or change "
                "the data preprocessing to match what the teacher was exported with."
            )

    def logits(self, x: Tensor) -> Tensor:
        """``(N, *sample_shape) → (N, C)`` float32 scores, computed in batches of ``batch_size``."""
        self.check_sample_shape(tuple(x.shape[1:]))
        arr = x.detach().cpu().numpy().astype(self._in_dtype, copy=False)
        if self._features is not None:
            arr = arr[:, self._features]
        outs = []
        for i in range(0, arr.shape[0], self.batch_size):
            chunk = np.ascontiguousarray(arr[i : i + self.batch_size])
            try:
                (out,) = self._session.run([self.output_name], self._feed(chunk))
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise TeacherError(
                    f"the ONNX teacher {self.path} failed on a batch shaped {tuple(chunk.shape)}: {first}. "
                    "Fix: check the model runs on inputs of this shape and dtype (float32)."
                ) from None
            outs.append(np.asarray(out))
        if not outs:
            return torch.empty(0, self.num_classes)
        result = torch.from_numpy(np.concatenate(outs).astype(np.float32, copy=False))
        if result.dim() != 2 or result.shape[1] != self.num_classes:
            raise TeacherError(
                f"the ONNX teacher {self.path} returned {tuple(result.shape)}, expected (N, {self.num_classes}). "
                "Fix: export the model so that its output is (batch, classes)."
            )
        return result if self._order is None else result[:, torch.from_numpy(self._order)]

    def _feed(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        if self._columns_in is None:
            return {self.input_name: chunk}
        feed = {}
        for j, inp in enumerate(self._columns_in):
            column = chunk[:, j : j + 1].astype(_NUMPY_TYPES[inp.type], copy=False)
            feed[inp.name] = np.ascontiguousarray(column if len(inp.shape) == 2 else column[:, 0])
        return feed

    def fingerprint(self) -> str:
        """sha256 over the model file and any external data files (their names and bytes)."""
        if self._fp is None:
            h = hashlib.sha256(b"onnx\0")
            for p in [self.path, *_external_data_files(self.path)]:
                h.update(p.name.encode() + b"\0")
                with open(p, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            h.update(f"\0{self.input_name}\0{self.output_name}".encode())
            for arr in (self._features, self._order):
                h.update(b"\0" + (b"-" if arr is None else arr.tobytes()))
            self._fp = h.hexdigest()
        return self._fp


__all__ = ["OnnxTeacher"]
