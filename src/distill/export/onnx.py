"""ONNX export with a dynamic batch axis, and a parity check against PyTorch on real inputs.

Export uses the TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``): in torch 2.13 it works without extra packages, while the
default torch.export-based exporter (``dynamo=True``) needs ``onnxscript``.
torch >= 2.9 marks the TorchScript exporter as legacy with a
DeprecationWarning on every call (and its internals warn about their own use
of a deprecated helper); those two messages are silenced here (they are about
our choice of exporter, not something a user can act on). When the
legacy exporter is gone, :func:`export_onnx` falls back to ``dynamo=True``.

The parity check never trusts an export: it runs the file in ONNX Runtime on
real inputs at several batch sizes and compares with the PyTorch model.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from distill.errors import ExportError
from distill.core.fsutil import atomic_path

log = logging.getLogger("distill")

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"

_LEGACY_EXPORTER_MESSAGE = r"You are using the legacy TorchScript-based ONNX export"


@contextlib.contextmanager
def _quiet_legacy_exporter() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LEGACY_EXPORTER_MESSAGE, category=DeprecationWarning)
        # raised by the legacy exporter's own internals (torch calling its deprecated logging helper)
        warnings.filterwarnings(
            "ignore", message=r"The feature will be removed", category=DeprecationWarning, module=r"torch\.onnx"
        )
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the duration; every submodule's own train/eval flag is restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _is_quantized(model: nn.Module) -> bool:
    prefixes = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")
    return any(type(m).__module__.startswith(prefixes) for m in model.modules())


def export_onnx(
    model: nn.Module,
    example_input: Tensor,
    path: str | Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (written atomically); return the path.

    The graph has one input ``'input'`` and one output ``'logits'``, both with
    a dynamic first axis ``'batch'`` (unless ``dynamic_batch=False``), so the
    file runs at any batch size. ``example_input`` (``(N, *in_shape)``, any N)
    is traced once; the model is exported in eval mode (each submodule's
    train/eval flag is restored after; the model is not copied). The file is
    checked with ``onnx.checker`` before it is moved into place.

    API (torch 2.13): ``torch.onnx.export(model, (x,), f, dynamo=False,
    input_names=['input'], output_names=['logits'],
    dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}},
    opset_version=opset)``.

    An int8 model from ``torch.ao`` cannot be exported this way: export the
    float model, then quantize the ONNX file (``distill.compress.onnx_int8``).
    """
    if _is_quantized(model):
        raise ExportError(
            "cannot export a torch.ao-quantized model to ONNX (its int8 ops have no portable ONNX form). "
            "Fix: export the float model, then quantize the file with distill.compress.onnx_int8."
        )
    if not isinstance(example_input, Tensor) or example_input.ndim < 1 or len(example_input) == 0:
        raise ExportError("export_onnx needs an example input: a tensor shaped (N, *in_shape) with N >= 1.")
    try:
        import onnx
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx package ({exc}). Fix: pip install onnx onnxruntime") from None
    target = Path(path)
    example = example_input.detach()
    with eval_mode(model):
        try:
            with torch.no_grad():
                model(example)
        except Exception as exc:
            raise ExportError(
                f"cannot export {type(model).__name__}: it does not run on the example input of shape "
                f"{tuple(example.shape)} ({type(exc).__name__}: {exc}). Fix: pass a batch shaped like the real "
                "inputs, (N, *in_shape)."
            ) from None
        axes = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}} if dynamic_batch else None
        with atomic_path(target) as tmp:
            _export(model, example, tmp, opset=opset, dynamic_axes=axes)
            try:
                onnx.checker.check_model(str(tmp))
            except Exception as exc:
                name = type(model).__name__
                raise ExportError(f"the ONNX file exported from {name} is not valid ONNX: {exc}") from exc
    return target


def _export(model: nn.Module, example: Tensor, tmp: Path, *, opset: int, dynamic_axes: dict | None) -> None:
    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
        "do_constant_folding": True,
    }
    try:
        with _quiet_legacy_exporter(), torch.no_grad():
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, dynamic_axes=dynamic_axes, **kwargs)
        log.debug("ONNX export: TorchScript exporter (dynamo=False), opset %d", opset)
        return
    except TypeError as exc:
        if not ("dynamo" in str(exc) and "unexpected keyword" in str(exc)):
            raise ExportError(_export_failed(model, exc)) from exc
        # torch < 2.5 has no `dynamo` argument; its only exporter is the TorchScript one
        try:
            with torch.no_grad():
                torch.onnx.export(model, (example,), str(tmp), dynamic_axes=dynamic_axes, **kwargs)
            return
        except Exception as exc2:
            raise ExportError(_export_failed(model, exc2)) from exc2
    except (OSError, ExportError):
        raise
    except Exception as exc:
        if not _legacy_missing(exc):
            raise ExportError(_export_failed(model, exc)) from exc
        legacy_error = exc
    # A torch without the TorchScript exporter: the torch.export-based one (needs onnxscript).
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError(
            f"cannot export {type(model).__name__} to ONNX: the TorchScript exporter is unavailable "
            f"({legacy_error}) and the torch.export-based one needs onnxscript. Fix: pip install onnxscript"
        ) from None
    try:
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, dynamic_axes=dynamic_axes, **kwargs)
        log.debug("ONNX export: torch.export-based exporter (dynamo=True), opset %d", opset)
    except Exception as exc:
        raise ExportError(_export_failed(model, exc)) from exc


def _legacy_missing(exc: Exception) -> bool:
    text = str(exc).lower()
    return "torchscript" in text and ("removed" in text or "no longer" in text)


def _export_failed(model: nn.Module, exc: BaseException) -> str:
    return (
        f"cannot export {type(model).__name__} to ONNX: {type(exc).__name__}: {exc}. "
        "Fix: an op without an ONNX form needs a higher opset (opset=...) or a rewrite of that layer; "
        "data-dependent Python control flow cannot be traced."
    )


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on the same inputs."""

    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float  # share of samples whose argmax over the last axis agrees (1.0 for 1-wide outputs)
    n: int  # samples compared
    passed: bool
    atol: float = 0.0
    min_argmax_agreement: float = 0.0
    batch_sizes: tuple[int, ...] = ()  # the batch sizes ONNX Runtime ran

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


def _batches(n: int, sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Slices of [0, n): first the given sizes in turn, then chunks of the largest."""
    out, start = [], 0
    for size in sizes:
        if start >= n:
            break
        out.append((start, min(n, start + size)))
        start += size
    big = max(sizes)
    while start < n:
        out.append((start, min(n, start + big)))
        start += big
    return out


def onnx_session(path: str | Path, *, threads: int | None = None, config: dict[str, str] | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` (ExportError if the file does not load); ``threads``: intra-op
    threads (one inter-op thread), as for timing beside torch; ``config``: session config entries."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"the ONNX parity check needs onnxruntime ({exc}). Fix: pip install onnxruntime") from None
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"no ONNX file at {p}. Fix: export the model first (export_onnx).")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load {p}: {exc}") from exc


def run_onnx(session: Any, inputs: Tensor) -> Tensor:
    """Run a one-input session on ``inputs`` (one call) and return the first output as a float tensor."""
    feeds = {session.get_inputs()[0].name: inputs.detach().cpu().float().numpy()}
    return torch.from_numpy(session.run(None, feeds)[0]).float()


class OrtRunner:
    """A one-input, one-output ONNX Runtime session called the way an app calls it repeatedly:
    through an IOBinding with preallocated (float32) input and output buffers per input shape.

    At batch 1 a small student's compute (a few µs) is smaller than what ``session.run`` spends
    per call in Python (building the feed dict, wrapping the input, allocating the output): the
    bound call removes that cost for every model alike. Each call still copies the new input into
    the bound buffer. The returned tensor is a view of the output buffer, valid until the next call
    with the same input shape (``copy=True`` returns a copy instead). Buffers are kept for up to 8
    input shapes at a time.
    """

    def __init__(self, session: Any, *, copy: bool = False) -> None:
        if len(session.get_inputs()) != 1 or len(session.get_outputs()) < 1:
            raise ExportError("OrtRunner needs a session with one input. Fix: call session.run directly.")
        kinds = (session.get_inputs()[0].type, session.get_outputs()[0].type)
        if kinds != ("tensor(float)", "tensor(float)"):
            raise ExportError(
                f"OrtRunner binds a float32 input and a float32 first output; this model has {kinds[0]} in and "
                f"{kinds[1]} out. Fix: call session.run directly."
            )
        self.session, self.copy = session, copy
        self._in, self._out = session.get_inputs()[0].name, session.get_outputs()[0].name
        self._run = session.run_with_iobinding
        self._bound: dict[torch.Size, tuple[Tensor, Any, Tensor]] = {}

    def _bind(self, shape: torch.Size) -> tuple[Tensor, Any, Tensor]:
        import numpy as np

        x = np.zeros(tuple(shape), dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._in, x)
        binding.bind_output(self._out, "cpu")
        self.session.run_with_iobinding(binding)  # learn the output shape once
        oshape = list(binding.get_outputs()[0].shape())
        out = np.empty(oshape, dtype=np.float32)
        binding.clear_binding_outputs()
        binding.bind_output(self._out, "cpu", 0, np.float32, oshape, out.ctypes.data)
        # the tensors share memory with the bound numpy buffers (which they keep alive)
        entry = (torch.from_numpy(x), binding, torch.from_numpy(out))
        if len(self._bound) >= 8:  # many batch shapes (a ragged last batch each time): keep memory bounded
            self._bound.clear()
        self._bound[shape] = entry
        return entry

    def __call__(self, inputs: Tensor) -> Tensor:
        entry = self._bound.get(inputs.shape) or self._bind(inputs.shape)
        entry[0].copy_(inputs.detach())
        self._run(entry[1])
        return entry[2].clone() if self.copy else entry[2]


def check_onnx_parity(
    model: nn.Module,
    path: str | Path,
    inputs: Tensor,
    *,
    atol: float = 1e-4,
    min_argmax_agreement: float = 0.999,
    batch_sizes: Sequence[int] = (1, 7, 64),
    raise_on_failure: bool = True,
) -> ParityReport:
    """Compare ONNX Runtime (CPUExecutionProvider) on ``path`` with ``model`` on real ``inputs``.

    ``inputs`` (``(N, *in_shape)``) are fed to ONNX Runtime in slices of the
    ``batch_sizes`` in turn (1, then 7, then 64s: this proves the dynamic
    batch axis) and to ``model`` (in eval mode; its flags are restored after). Passes when
    ``max |Δ| <= atol`` and the argmax agreement over the last axis is at least
    ``min_argmax_agreement``. A failure raises :class:`ExportError` with the
    numbers (or, with ``raise_on_failure=False``, returns a report with
    ``passed=False``); it is never hidden.

    For an int8 ONNX file compared with the float model, loosen ``atol``
    (e.g. 1.0) and rely on the argmax agreement (e.g. 0.99).
    """
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or len(inputs) == 0:
        raise ExportError("check_onnx_parity needs real inputs: a non-empty tensor shaped (N, *in_shape).")
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise ExportError(f"check_onnx_parity: batch_sizes must be positive (got {list(batch_sizes)})")
    session = onnx_session(path)
    with eval_mode(model), torch.no_grad():
        expected = torch.cat([model(inputs[i : i + 1024]).detach().float().cpu() for i in range(0, len(inputs), 1024)])
    slices = _batches(len(inputs), batch_sizes)
    try:
        got = torch.cat([run_onnx(session, inputs[a:b]) for a, b in slices])
    except Exception as exc:
        raise ExportError(
            f"ONNX Runtime cannot run {Path(path).name} on inputs of shape {tuple(inputs.shape[1:])} "
            f"at batch sizes {sorted({b - a for a, b in slices})}: {exc}. "
            "Fix: export with a dynamic batch axis (export_onnx does) and the same input shape."
        ) from exc
    if got.shape != expected.shape:
        raise ExportError(
            f"ONNX export {Path(path).name} disagrees with PyTorch on the output shape: {tuple(got.shape)} vs "
            f"{tuple(expected.shape)}. Fix: export again from this model."
        )
    diff = (got - expected).abs()
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        agreement = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
    else:
        agreement = 1.0
    max_abs = float(diff.max()) if diff.numel() else 0.0
    mean_abs = float(diff.mean()) if diff.numel() else 0.0
    passed = bool(max_abs <= atol and agreement >= min_argmax_agreement)
    if not torch.isfinite(got).all():
        passed = False
    report = ParityReport(
        max_abs_diff=max_abs,
        mean_abs_diff=mean_abs,
        argmax_agreement=agreement,
        n=len(inputs),
        passed=passed,
        atol=float(atol),
        min_argmax_agreement=float(min_argmax_agreement),
        batch_sizes=tuple(sorted({b - a for a, b in slices})),
    )
    if not passed and raise_on_failure:
        raise ExportError(parity_message(type(model).__name__, Path(path), report))
    return report


def parity_message(what: str, path: Path, r: ParityReport) -> str:
    problems = []
    if not r.max_abs_diff <= r.atol:
        problems.append(f"max |Δ| {r.max_abs_diff:.3g} > {r.atol:.3g} (mean |Δ| {r.mean_abs_diff:.3g})")
    else:
        problems.append(f"max |Δ| {r.max_abs_diff:.3g} <= {r.atol:.3g}")
    if r.argmax_agreement < r.min_argmax_agreement:
        problems.append(f"argmax agreement {r.argmax_agreement:.1%} < {r.min_argmax_agreement:.1%}")
    else:
        problems.append(f"argmax agreement {r.argmax_agreement:.1%}")
    return (
        f"ONNX export of {what} ({path.name}) disagrees with PyTorch on {r.n} inputs: {', '.join(problems)}. "
        "Fix: export again from this very model (a stale file, or weights changed after export, are the usual "
        "causes); Python control flow that depends on the data is frozen at export time and must be rewritten "
        "with tensor ops; for an int8 file compare with a looser atol."
    )


__all__ = [
    "BATCH_AXIS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ParityReport",
    "check_onnx_parity",
    "export_onnx",
    "onnx_session",
    "parity_message",
    "eval_mode",
    "run_onnx",
]
