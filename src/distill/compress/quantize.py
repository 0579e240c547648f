"""Post-training int8 quantization: PyTorch (dynamic, static, per-layer sensitivity) and ONNX Runtime.

PyTorch side (CPU inference; the result runs on the x86/fbgemm or qnnpack
quantized engine that ``torch.backends.quantized.engine`` names):

* :func:`dynamic_int8` — int8 weights, activations quantized on the fly, for
  ``nn.Linear`` (``torch.ao.quantization.quantize_dynamic``). No calibration.
* :func:`static_int8` — eager-mode post-training static quantization of the
  mlp/cnn students: QuantStub/DeQuantStub around the model, Conv+BN+ReLU and
  Linear+ReLU fused, activation ranges calibrated on real batches.
* :func:`sensitivity_int8` — how much int8 in each Linear alone moves the
  output, then greedy: keep the most sensitive layers in float until the
  quality bound holds. Works on any module with named ``nn.Linear`` layers
  (e.g. a Hugging Face encoder), through a ``run_model`` callable. (In
  :mod:`distill.compress.sensitivity`, with
  :func:`cosine_similarity` and :class:`SensitivityReport`.)

ONNX side: :func:`onnx_int8` (in :mod:`distill.compress.onnx_int8`, re-exported
here) quantizes an exported ``.onnx`` file with ONNX Runtime's quantizer
(dynamic, or static QDQ with calibration).

torch 2.13 still ships ``torch.ao.quantization`` (eager and FX) and it works,
but announces its move to the separate ``torchao`` package with a
DeprecationWarning on every call, and a UserWarning on the first creation of
a quantized tensor. Neither is something a user of distill can act on, so the
functions here silence exactly those two messages while they call into
``torch.ao`` (nothing else is filtered; see :func:`quiet_torch_ao`). If a
future torch removes ``torch.ao.quantization``, these functions raise a
``ModelError`` that says so; ONNX Runtime quantization is unaffected.

Every quantized model returned here carries ``distill_quantization``, a plain
dict that says how it was made (kind, options); ``distill.export.save_torch``
records it so that ``load_torch`` can rebuild the same structure.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from distill.errors import ModelError
from distill.compress.onnx_int8 import ONNX_CALIBRATION_METHODS, onnx_int8  # the ONNX side, re-exported

log = logging.getLogger("distill")

ATTR = "distill_quantization"
CALIBRATION_METHODS = ("minmax", "histogram")

# The two messages torch.ao emits on every use in torch >= 2.9 (see the module docstring).
_TORCH_AO_MESSAGES = (
    r"torch\.ao\.quantization is deprecated",
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation functions",
)


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """Silence only torch.ao's own deprecation notices (not thread-safe, like all of ``warnings``)."""
    with warnings.catch_warnings():
        for msg in _TORCH_AO_MESSAGES:
            warnings.filterwarnings("ignore", message=msg)
        yield


def _ao() -> Any:
    try:
        with quiet_torch_ao():
            import torch.ao.quantization as ao
    except ImportError as exc:  # pragma: no cover - depends on a future torch
        raise ModelError(
            f"this torch ({torch.__version__}) has no torch.ao.quantization: {exc}. "
            "Fix: quantize the exported ONNX file instead (onnx_int8), or use torch <= 2.13."
        ) from None
    engine = torch.backends.quantized.engine
    if engine in (None, "none"):
        raise ModelError(
            "this torch build has no quantized CPU engine (torch.backends.quantized.engine is 'none'). "
            "Fix: use ONNX Runtime quantization (onnx_int8)."
        )
    return ao


def _check_cpu(model: nn.Module, what: str) -> None:
    devices = {t.device.type for t in [*model.parameters(), *model.buffers()]}
    if devices - {"cpu"}:
        raise ModelError(
            f"{what}: int8 PyTorch models run on the CPU, but this model is on {', '.join(sorted(devices))}. "
            "Fix: quantize model.cpu()."
        )


def _linear_names(model: nn.Module) -> list[str]:
    # exactly nn.Linear: subclasses such as MultiheadAttention's out_proj
    # (NonDynamicallyQuantizableLinear) have no int8 version and stay float
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and n]


def _check_names(model: nn.Module, names: Sequence[str], what: str) -> list[str]:
    known = _linear_names(model)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ModelError(
            f"{what}: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not the name of an "
            f"nn.Linear in the model. Known: {', '.join(known) or '(none)'}."
        )
    return list(names)


def _dynamic_qconfig(per_channel: bool) -> Any:
    ao = _ao()
    return ao.per_channel_dynamic_qconfig if per_channel else ao.default_dynamic_qconfig


# --------------------------------------------------------------------------- dynamic


def dynamic_int8(model: nn.Module, *, per_channel: bool = True, keep_float: Sequence[str] = ()) -> nn.Module:
    """Dynamic int8 quantization of the ``nn.Linear`` layers; returns a quantized copy (eval mode).

    Weights are stored as int8 (per output channel when ``per_channel``, else
    one scale per tensor); activations are quantized per batch at run time, so
    no calibration data is needed. Linear layers whose module names (as in
    ``model.named_modules()``) are in ``keep_float`` stay float. Other layers
    (convolutions, norms) stay float: dynamic quantization only speeds up
    Linear layers. CPU only.

    API: ``torch.ao.quantization.quantize_dynamic(model, {name: qconfig}, dtype=torch.qint8)``
    with ``per_channel_dynamic_qconfig`` or ``default_dynamic_qconfig``.
    """
    _check_cpu(model, "dynamic_int8")
    keep = _check_names(model, keep_float, "dynamic_int8 keep_float")
    ao = _ao()
    qconfig = _dynamic_qconfig(per_channel)
    spec = {n: qconfig for n in _linear_names(model) if n not in keep}
    src = copy.deepcopy(model).eval()
    if spec:
        with quiet_torch_ao():
            quantized = ao.quantize_dynamic(src, spec, dtype=torch.qint8, inplace=False)
    else:
        quantized = src
    setattr(quantized, ATTR, {"kind": "dynamic_int8", "per_channel": bool(per_channel), "keep_float": sorted(keep)})
    return quantized


# --------------------------------------------------------------------------- static


class QuantWrapper(nn.Module):
    """``dequant(model(quant(x)))``: the float boundary of an eager-mode statically quantized model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        ao = _ao()
        self.quant = ao.QuantStub()
        self.model = model
        self.dequant = ao.DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self.model(self.quant(x)))


_STATIC_OK = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Flatten,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
)


def _fusion_groups(layers: list[nn.Module]) -> list[list[str]]:
    """Runs of [Conv2d, BatchNorm2d, ReLU], [Conv2d, BatchNorm2d], [Conv2d, ReLU], [Linear, ReLU]."""
    groups, i = [], 0
    while i < len(layers):
        m = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        nxt2 = layers[i + 2] if i + 2 < len(layers) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            if isinstance(nxt2, nn.ReLU):
                groups.append([str(i), str(i + 1), str(i + 2)])
                i += 3
            else:
                groups.append([str(i), str(i + 1)])
                i += 2
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(nxt, nn.ReLU):
            groups.append([str(i), str(i + 1)])
            i += 2
            continue
        i += 1
    return groups


def _static_qconfig(method: str, per_channel: bool) -> Any:
    ao = _ao()
    # x86/fbgemm kernels need 7-bit activations (reduce_range) to avoid overflow
    # in their int16 accumulation; the range is given explicitly because
    # `reduce_range=True` itself now warns.
    seven_bit = torch.backends.quantized.engine in ("x86", "fbgemm", "onednn")
    act_cls = ao.MinMaxObserver if method == "minmax" else ao.HistogramObserver
    activation = act_cls.with_args(
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=127 if seven_bit else 255
    )
    if per_channel:
        weight = ao.PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-128, quant_max=127
        )
    else:
        weight = ao.MinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-128, quant_max=127
        )
    return ao.QConfig(activation=activation, weight=weight)


def prepare_static(model: nn.Module, *, method: str = "minmax", per_channel: bool = True) -> nn.Module:
    """The observed (not yet converted) copy of ``model``: fused, wrapped, with observers.

    Run calibration batches through it, then :func:`convert_static`. Used by
    :func:`static_int8` and by ``load_torch`` to rebuild the structure.
    """
    if method not in CALIBRATION_METHODS:
        raise ModelError(f"static_int8: unknown calibration method {method!r}; known: {', '.join(CALIBRATION_METHODS)}")
    if not isinstance(model, nn.Sequential):
        raise ModelError(
            f"static_int8 (eager mode) works on an nn.Sequential student (mlp, cnn); got {type(model).__name__}. "
            "Fix: use dynamic_int8, or export to ONNX and use onnx_int8 with calibration."
        )
    for i, m in enumerate(model):
        if not isinstance(m, _STATIC_OK):
            raise ModelError(
                f"static_int8: layer {i} ({type(m).__name__}) has no int8 kernel in eager mode. "
                "Fix: use dynamic_int8, or export to ONNX and use onnx_int8 with calibration."
            )
    _check_cpu(model, "static_int8")
    ao = _ao()
    src = copy.deepcopy(model).eval()
    with quiet_torch_ao():
        groups = _fusion_groups(list(src))
        if groups:
            src = ao.fuse_modules(src, groups, inplace=False)
        wrapped = QuantWrapper(src).eval()
        wrapped.qconfig = _static_qconfig(method, per_channel)
        ao.prepare(wrapped, inplace=True)
    return wrapped


def convert_static(prepared: nn.Module, *, method: str, per_channel: bool) -> nn.Module:
    ao = _ao()
    with quiet_torch_ao():
        quantized = ao.convert(prepared.eval(), inplace=False)
    setattr(quantized, ATTR, {"kind": "static_int8", "method": method, "per_channel": bool(per_channel)})
    return quantized


def static_int8(
    model: nn.Module,
    calibration: Tensor,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    batch_size: int = 256,
) -> nn.Module:
    """Eager-mode post-training static int8 quantization of an mlp/cnn student; returns a quantized copy.

    Conv2d+BatchNorm2d(+ReLU), Conv2d+ReLU and Linear+ReLU are fused; the model
    is wrapped in QuantStub/DeQuantStub (float in, float out: callers see no
    difference); ``calibration`` (a few hundred real inputs, ``(N, *in_shape)``)
    runs through observers to fix every activation's scale: ``method='minmax'``
    (the observed range) or ``'histogram'`` (a range that minimises the
    quantization error of the observed histogram: robust to outliers, slower).
    Weights are int8 per output channel when ``per_channel``. CPU only.

    API: ``torch.ao.quantization.fuse_modules``, ``prepare``, ``convert``
    (eager mode), observers ``MinMaxObserver``/``HistogramObserver`` (quint8,
    7-bit on x86/fbgemm) and ``PerChannelMinMaxObserver`` (qint8, symmetric).
    """
    if not isinstance(calibration, Tensor) or calibration.ndim < 2 or len(calibration) == 0:
        raise ModelError(
            "static_int8 needs calibration inputs: a non-empty tensor shaped (N, *in_shape). "
            "Fix: pass a few hundred training inputs."
        )
    if batch_size <= 0:
        raise ModelError(f"static_int8: batch_size must be > 0 (got {batch_size})")
    prepared = prepare_static(model, method=method, per_channel=per_channel)
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            prepared(calibration[start : start + batch_size].float())
    return convert_static(prepared, method=method, per_channel=per_channel)


def quantized_like(model: nn.Module, spec: dict[str, Any], example_input: Tensor) -> nn.Module:
    """A model with the quantized structure ``spec`` (a ``distill_quantization`` dict) around float ``model``.

    Its weights and scales are placeholders until a quantized state dict is
    loaded into it (``distill.export.load_torch`` does that).
    """
    kind = spec.get("kind")
    if kind == "dynamic_int8":
        return dynamic_int8(model, per_channel=spec.get("per_channel", True), keep_float=spec.get("keep_float", ()))
    if kind == "static_int8":
        method, per_channel = spec.get("method", "minmax"), spec.get("per_channel", True)
        prepared = prepare_static(model, method="minmax", per_channel=per_channel)
        with torch.no_grad():
            prepared(example_input.float())  # any data: the loaded state dict replaces the scales
        return convert_static(prepared, method=method, per_channel=per_channel)
    raise ModelError(f"unknown quantization kind {kind!r}; known: dynamic_int8, static_int8")


__all__ = [
    "ATTR",
    "CALIBRATION_METHODS",
    "ONNX_CALIBRATION_METHODS",
    "QuantWrapper",
    "convert_static",
    "dynamic_int8",
    "onnx_int8",
    "prepare_static",
    "quantized_like",
    "static_int8",
]
