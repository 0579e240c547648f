"""ONNX export of a sentence encoder (``input_ids``, ``attention_mask`` → ``sentence_embedding``), parity-
checked against PyTorch on real sentences, and an int8 file whose float-kept layers are chosen by
sensitivity to hold a cosine bound.

int8: ONNX Runtime's dynamic quantization (int8 weights, per channel). If the fully quantized file's
mean cosine to the float model on the given sentences is under ``min_cosine``, each node it quantizes that
holds weights (MatMul and Gemm on a weight matrix, Gather from a table: the token embeddings) is quantized
alone to measure how far it moves the output, and the most sensitive are kept in float, one at a time,
until the bound holds (or every such node is float: then no int8 file is worth writing); then each kept node,
least sensitive first, is quantized again if the bound still holds without it (a node kept early can be
needless once a later one is float).
"""

from __future__ import annotations

import logging
import shutil
import warnings
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import ExportError
from distill.export.onnx import _quiet_legacy_exporter, eval_mode, onnx_session
from distill.core.fsutil import atomic_path
from distill.models.sentence import SentenceEncoder


class _Wrapper(nn.Module):
    def __init__(self, encoder: SentenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder(input_ids, attention_mask)


def _batches(encoder: SentenceEncoder, texts: Sequence[str], size: int = 32) -> list[dict[str, np.ndarray]]:
    out = []
    for s in range(0, len(texts), size):
        enc = encoder.tokenize(texts[s : s + size])
        out.append({"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})
    return out


def _run(session: Any, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run(None, b)[0] for b in batches])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(1).mean())


def export_encoder_onnx(
    encoder: SentenceEncoder, out_dir: str | Path, texts: Sequence[str], *, int8: bool = True, min_cosine: float = 0.98,
    max_abs_diff: float = 1e-4, opset: int = 17,
) -> dict[str, Any]:  # fmt: skip
    """Write ``model.onnx`` (and ``model_int8.onnx``) into ``out_dir``; return the parity and int8 numbers.

    Raises :class:`ExportError` with the numbers when the float file disagrees with PyTorch by more
    than ``max_abs_diff`` on ``texts``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    example = encoder.tokenize(["a short example sentence", "and a second, longer example sentence to pad"])
    with eval_mode(encoder), atomic_path(path) as tmp, _quiet_legacy_exporter(), torch.no_grad(), warnings.catch_warnings():
        # tracing notes about Python control flow on shapes: the graph is checked against PyTorch below
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        try:
            torch.onnx.export(
                _Wrapper(encoder), (example["input_ids"], example["attention_mask"]), str(tmp), dynamo=False,
                input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"], opset_version=opset,
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "sentence_embedding": {0: "batch"}},
                do_constant_folding=True,
            )  # fmt: skip
        except Exception as exc:  # the exporter raises many kinds
            raise ExportError(f"cannot export {type(encoder.backbone).__name__} to ONNX: {type(exc).__name__}: {exc}") from exc
    batches = _batches(encoder, list(texts))
    with eval_mode(encoder), torch.no_grad():
        ref = np.concatenate([encoder(torch.from_numpy(b["input_ids"]), torch.from_numpy(b["attention_mask"])).numpy() for b in batches])
    got = _run(onnx_session(path), batches)
    diff = float(np.abs(ref - got).max())
    report: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "max_abs_diff": diff, "cosine": _cos(ref, got),
                              "sentences": len(texts)}  # fmt: skip
    if not diff <= max_abs_diff:
        raise ExportError(
            f"ONNX parity failed for {path}: max |onnx - torch| = {diff:.3g} > {max_abs_diff:g} on {len(texts)} sentences "
            f"(mean cosine {report['cosine']:.6f}). The file is kept for inspection. Fix: report the model type; "
            "raise export.max_abs_diff only if this difference is acceptable."
        )
    if int8:
        report["int8"] = quantize_encoder_onnx(path, out / "model_int8.onnx", batches, ref, min_cosine=min_cosine)
    return report


def _weight_nodes(path: Path) -> list[str]:
    """The nodes dynamic quantization turns to int8 that hold weights: MatMul / Gemm on a weight matrix, and
    Gather from a table (a token embedding: left out, an int8 table the search could not keep in float)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    tables = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    return [n.name for n in model.graph.node
            if (n.op_type in {"MatMul", "Gemm"} and any(x in inits for x in n.input))
            or (n.op_type == "Gather" and n.input and n.input[0] in tables)]  # fmt: skip


def quantize_encoder_onnx(
    src: Path, dst: Path, batches: list[dict[str, np.ndarray]], reference: np.ndarray, *, min_cosine: float
) -> dict[str, Any]:
    """Dynamic int8 of ``src`` into ``dst``, keeping the most sensitive MatMuls in float until mean cosine
    to ``reference`` >= ``min_cosine``. Returns the cosine, kept-float node names, file size."""
    return quantize_onnx(src, dst, batches, reference, score=_cos, bound=min_cosine, key="cosine")


def quantize_onnx(
    src: Path, dst: Path, batches: list[dict[str, np.ndarray]], reference: np.ndarray, *,
    score: Callable[[np.ndarray, np.ndarray], float], bound: float, key: str,
) -> dict[str, Any]:  # fmt: skip
    """Dynamic int8 of ``src`` into ``dst``, keeping the most sensitive MatMuls in float until
    ``score(reference, outputs on batches) >= bound`` (the module docstring says how). Returns the score (as
    ``key``), kept-float node names, file size; ``file`` None when even all-float MatMuls miss the bound."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = _weight_nodes(src)
    work = Path(tempfile.mkdtemp(prefix="int8-", dir=dst.parent))
    try:
        def quant(exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> tuple[Path, np.ndarray]:
            p = work / f"q{len(list(work.iterdir()))}.onnx"
            kwargs: dict[str, Any] = {"per_channel": True, "weight_type": QuantType.QInt8}
            if only is not None:
                kwargs["nodes_to_quantize"] = list(only)
            else:
                kwargs["nodes_to_exclude"] = list(exclude)
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing hint on the root logger every call
            try:
                quantize_dynamic(str(src), str(p), **kwargs)
            finally:
                root.setLevel(level)
            return p, _run(onnx_session(p), batches)

        best, out = quant()
        cos = score(reference, out)
        kept: list[str] = []
        if cos < bound:
            # each node's sensitivity: how far quantizing it alone moves the outputs (mean |difference|, a
            # finer measure than the bound's score, which for labels only counts the few that flip)
            drift = {n: float(np.abs(quant(only=[n])[1] - reference).mean()) for n in nodes}
            for n in sorted(nodes, key=lambda n: -drift[n]):
                kept.append(n)
                if len(kept) == len(nodes):
                    break
                best, out = quant(exclude=kept)
                cos = score(reference, out)
                if cos >= bound:
                    break
            if cos >= bound:  # then each kept node, least sensitive first, goes back to int8 if the bound still holds
                for n in sorted(kept[:-1], key=lambda n: drift[n]):
                    trial = [k for k in kept if k != n]
                    p, out = quant(exclude=trial)
                    trial_score = score(reference, out)
                    if trial_score >= bound:
                        kept, best, cos = trial, p, trial_score
        if cos < bound:
            return {"file": None, key: cos, "kept_float": kept, "note": f"no int8 file: {key} {cos:.4f} < {bound}"}
        with atomic_path(dst) as tmp:
            shutil.copyfile(best, tmp)
        return {"file": str(dst), "bytes": dst.stat().st_size, key: cos, "kept_float": kept, "quantized": len(nodes) - len(kept)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
