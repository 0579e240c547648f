"""ONNX export of a text classifier (``input_ids``, ``attention_mask`` [, ``token_type_ids``] → ``logits``) into a
folder that runs on raw text: ``model.onnx``, the tokenizer's ``tokenizer.json`` and a ``config.json`` with the
label names, the token limit and the padding id (:class:`distill.export.text_runtime.TextClassifierRuntime`
reads them). Parity-checked against PyTorch on real batches; a file that disagrees is an error with the numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import ExportError
from distill.export.onnx import _quiet_legacy_exporter, eval_mode, onnx_session
from distill.core.fsutil import atomic_path, write_json


class _Logits(nn.Module):
    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, inputs, strict=True)))


def export_text_onnx(model: nn.Module, tokenizer: Any, labels: Sequence[str], out_dir: str | Path,
                     batches: Sequence[dict[str, Tensor]], *, max_length: int, max_abs_diff: float = 1e-4,
                     opset: int = 17, pairs: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the folder (see the module docstring); return the parity numbers. ``batches``: padded inputs
    (dicts of ``input_ids``, ``attention_mask`` and maybe ``token_type_ids``), the first one the tracing example."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    names = list(batches[0])
    example = tuple(batches[0][n] for n in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"logits": {0: "batch"}}
    with eval_mode(model), atomic_path(path) as tmp, _quiet_legacy_exporter(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape notes; the graph is checked below
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        try:
            torch.onnx.export(_Logits(model, names), example, str(tmp), dynamo=False, input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)  # fmt: skip
        except Exception as exc:  # the exporter raises many kinds
            raise ExportError(f"cannot export {type(model).__name__} to ONNX: {type(exc).__name__}: {exc}") from exc
    compact_tables(path, model)
    session = onnx_session(path)
    with eval_mode(model), torch.no_grad():
        ref = np.concatenate([model(**b).float().numpy() for b in batches])
    got = np.concatenate([session.run(None, {n: b[n].numpy() for n in names})[0] for b in batches])
    diff = float(np.abs(ref - got).max())
    same = float((ref.argmax(1) == got.argmax(1)).mean())
    if not diff <= max_abs_diff:
        raise ExportError(
            f"ONNX parity failed for {path}: max |onnx - torch| = {diff:.3g} > {max_abs_diff:g} on {len(ref)} texts "
            f"(same label on {100 * same:.1f}%). The file is kept for inspection. Fix: report the model type; raise "
            "export.max_abs_diff only if this difference is acceptable."
        )
    _write_tokenizer(tokenizer, out / "tokenizer.json")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    write_json(out / "config.json", {
        "labels": list(labels), "max_length": int(max_length), "pad_token_id": int(pad),
        "pad_token": tokenizer.pad_token or "[PAD]", "inputs": names, "output": "logits", "pairs": bool(pairs),
        "usage": "distill.export.text_runtime.TextClassifierRuntime(this folder).predict(texts)",
    })  # fmt: skip
    return {"file": str(path), "bytes": path.stat().st_size, "max_abs_diff": diff, "same_label": same, "texts": len(ref)}


def quantize_text_onnx(folder: str | Path, out_dir: str | Path, batches: Sequence[dict[str, Tensor]], *,
                       min_same_label: float = 0.99) -> dict[str, Any]:  # fmt: skip
    """An int8 copy of the exported folder ``folder`` in ``out_dir`` (ONNX Runtime's dynamic quantization, int8
    weights per channel; ``tokenizer.json`` and ``config.json`` beside, so it runs as the float folder does).
    The most sensitive weights (matrices, token tables) stay in float until the int8 file gives the float file's label on at least
    ``min_same_label`` of ``batches`` (texts held out from training, the validation split in a run); when even
    that fails, no file is written and the report says why."""
    import shutil

    from distill.export.onnx_encoder import quantize_onnx

    src, out = Path(folder), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    session = onnx_session(src / "model.onnx")
    feeds = [{i.name: b[i.name].numpy() for i in session.get_inputs()} for b in batches]
    ref = np.concatenate([session.run(None, f)[0] for f in feeds])
    report = quantize_onnx(src / "model.onnx", out / "model.onnx", feeds, ref, score=_same_label, bound=min_same_label,
                           key="same_label")  # fmt: skip
    if report.get("file") is None:
        shutil.rmtree(out, ignore_errors=True)
        return report
    for name in ("tokenizer.json", "config.json"):
        with atomic_path(out / name) as tmp:
            shutil.copyfile(src / name, tmp)
    return report | {"texts": len(ref)}


def _same_label(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def compact_tables(path: Path, model: nn.Module) -> None:
    """Keep a static student's tables in the ONNX file as they are kept in its folder (``model.tables``): each
    float32 table the graph gathers from becomes an int8 table and a scale per row (Gather, Cast, Mul by the
    gathered scale) or a float16 one (Gather, Cast). The values are the same: ``q * scale`` is what the run
    measured (the text task's ``StaticClassifier.store_tables``). Other models are left as exported."""
    kept = getattr(model, "tables", "float32")
    if not callable(getattr(model, "tables_of", None)) or kept == "float32":
        return
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    tables = {name: emb.weight.detach().numpy() for name, emb in model.tables_of().items()}
    found: dict[str, str] = {}  # initializer -> table name
    for init in graph.initializer:
        for name, w in tables.items():
            if tuple(init.dims) == w.shape and init.data_type == TensorProto.FLOAT and np.array_equal(numpy_helper.to_array(init), w):
                found[init.name] = name
    if sorted(found.values()) != sorted(tables):
        raise ExportError(f"{path}: the static student's tables ({', '.join(tables)}) are not all initializers of the "
                          "exported graph, so they cannot be kept as " + kept + ". Fix: report this; set "
                          "students[].tables: float32 meanwhile.")  # fmt: skip
    keep = [i for i in graph.initializer if i.name not in found]
    nodes = []
    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in found:
            nodes.append(node)
            continue
        src, idx, out = node.input[0], node.input[1], node.output[0]
        if kept == "int8":
            nodes += [helper.make_node("Gather", [src + ".int8", idx], [out + ".q"], axis=0),
                      helper.make_node("Cast", [out + ".q"], [out + ".f"], to=TensorProto.FLOAT),
                      helper.make_node("Gather", [src + ".scale", idx], [out + ".s"], axis=0),
                      helper.make_node("Mul", [out + ".f", out + ".s"], [out])]  # fmt: skip
        else:
            nodes += [helper.make_node("Gather", [src + ".f16", idx], [out + ".h"], axis=0),
                      helper.make_node("Cast", [out + ".h"], [out], to=TensorProto.FLOAT)]  # fmt: skip
    for src, name in found.items():
        if kept == "int8":
            q, scale = model.int8_table(name)
            keep += [numpy_helper.from_array(q.numpy(), src + ".int8"), numpy_helper.from_array(scale.numpy(), src + ".scale")]
        else:
            keep.append(numpy_helper.from_array(tables[name].astype(np.float16), src + ".f16"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def _write_tokenizer(tokenizer: Any, dst: Path) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ExportError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer, so it has no tokenizer.json to "
                          "ship beside the ONNX file. Fix: use a model whose folder has a tokenizer.json.")  # fmt: skip
    with atomic_path(dst) as tmp:
        tmp.write_text(backend.to_str(), encoding="utf-8")
