"""A model folder that rebuilds itself: safetensors weights + config.json (builder and quantization).

::

    DIR/
      model.safetensors   the state dict; int8 tensors of a torch.ao-quantized model are stored as
                          their integer values plus scales/zero-points (layout in the file's metadata)
      config.json         {"format": "distill.torch", "builder": {...}, "quantization": {...} | null, "sha256": ...}

``save_torch`` checks before writing that the builder rebuilds exactly these
shapes (a structurally pruned model needs its pruned widths:
``distill.compress.pruned_params``). ``load_torch`` rebuilds via
``distill.models.build`` (or the factory), re-creates the quantized structure
when there is one, verifies the checksum and loads the weights strictly.
Nothing is unpickled. ``save_hf`` hands Hugging Face models to their own
``save_pretrained``.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import ExportError, ModelError
from distill.core.fsutil import sha256_file, write_json, write_with

FORMAT = "distill.torch"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_LAYOUT_KEY = "distill.layout"
_VERSIONS_KEY = "#versions"

# --------------------------------------------------------------------------- state dict <-> plain tensors


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _encode(key: str, value: Any, tensors: dict[str, Tensor]) -> dict[str, Any]:
    if isinstance(value, Tensor) and value.is_quantized:
        desc: dict[str, Any] = {"t": "qtensor", "dtype": _dtype_name(value.dtype)}
        tensors[key] = value.int_repr().contiguous().clone()
        if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            desc.update(scheme="per_tensor", scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
        elif value.qscheme() in (
            torch.per_channel_affine,
            torch.per_channel_symmetric,
            torch.per_channel_affine_float_qparams,
        ):
            desc.update(scheme="per_channel", axis=int(value.q_per_channel_axis()))
            tensors[key + "#scales"] = value.q_per_channel_scales().contiguous().clone()
            tensors[key + "#zero_points"] = value.q_per_channel_zero_points().contiguous().clone()
        else:  # pragma: no cover - no such scheme in our quantizers
            raise ExportError(f"cannot store {key}: quantization scheme {value.qscheme()} is not supported")
        return desc
    if isinstance(value, Tensor):
        tensors[key] = value.detach().contiguous().clone()
        return {"t": "tensor"}
    if isinstance(value, torch.dtype):
        return {"t": "dtype", "value": _dtype_name(value)}
    if isinstance(value, (tuple, list)):
        return {"t": "tuple", "items": [_encode(f"{key}#{i}", v, tensors) for i, v in enumerate(value)]}
    if value is None:
        return {"t": "none"}
    if isinstance(value, (bool, int, float, str)):
        return {"t": "value", "value": value}
    raise ExportError(f"cannot store state entry {key!r} of type {type(value).__name__} in safetensors")


def _decode(key: str, desc: dict[str, Any], tensors: dict[str, Tensor]) -> Any:
    kind = desc["t"]
    if kind == "tensor":
        return tensors[key]
    if kind == "qtensor":
        from distill.compress.quantize import quiet_torch_ao

        values = tensors[key]
        dtype = getattr(torch, desc["dtype"])
        with quiet_torch_ao():
            if desc["scheme"] == "per_tensor":
                return _per_tensor(values, desc["scale"], desc["zero_point"], dtype)
            return _per_channel(values, tensors[key + "#scales"], tensors[key + "#zero_points"], desc["axis"], dtype)
    if kind == "dtype":
        return getattr(torch, desc["value"])
    if kind == "tuple":
        return tuple(_decode(f"{key}#{i}", d, tensors) for i, d in enumerate(desc["items"]))
    if kind == "none":
        return None
    if kind == "value":
        return desc["value"]
    raise ModelError(f"unknown entry kind {kind!r} for {key!r} in the weights file")


def _per_tensor(values: Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> Tensor:
    # exact: quantizing the dequantized integers gives back the same integers
    real = (values.to(torch.float64) - zero_point) * scale
    return torch.quantize_per_tensor(real.float(), scale, zero_point, dtype)


def _per_channel(values: Tensor, scales: Tensor, zero_points: Tensor, axis: int, dtype: torch.dtype) -> Tensor:
    shape = [1] * values.ndim
    shape[axis] = -1
    real = (values.to(torch.float64) - zero_points.view(shape).to(torch.float64)) * scales.view(shape).to(torch.float64)
    return torch.quantize_per_channel(real.float(), scales, zero_points, axis, dtype)


def encode_state_dict(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Plain tensors (safetensors can hold them) and a JSON-able layout that restores ``state``."""
    tensors: dict[str, Tensor] = {}
    layout = {k: _encode(k, v, tensors) for k, v in state.items()}
    # Module versions (``state._metadata``): quantized modules read their state differently without them.
    meta = getattr(state, "_metadata", None)
    if meta:
        layout = {_VERSIONS_KEY: {k: dict(v) for k, v in meta.items()}, **layout}
    return tensors, layout


def decode_state_dict(tensors: dict[str, Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    entries = {k: d for k, d in layout.items() if k != _VERSIONS_KEY}
    state: dict[str, Any] = OrderedDict((k, _decode(k, d, tensors)) for k, d in entries.items())
    if _VERSIONS_KEY in layout:
        versions = OrderedDict((k, dict(v)) for k, v in layout[_VERSIONS_KEY].items())
        state._metadata = versions  # type: ignore[attr-defined]
    return state


# --------------------------------------------------------------------------- save / load


def _check_builder(builder: Any) -> dict[str, Any]:
    if not isinstance(builder, dict):
        raise ExportError(f"save_torch: builder must be a dict (got {type(builder).__name__})")
    b = copy.deepcopy(builder)
    missing = [k for k in ("in_shape", "num_classes") if k not in b]
    if ("arch" in b) == ("factory" in b):
        missing.append("arch or factory (exactly one)")
    if missing:
        raise ExportError(
            f"save_torch: builder lacks {', '.join(missing)}. Fix: pass "
            "{'arch': 'mlp', 'in_shape': [1, 28, 28], 'num_classes': 10, 'params': {...}}."
        )
    b["in_shape"] = [int(d) for d in b["in_shape"]]
    b["num_classes"] = int(b["num_classes"])
    b.setdefault("params", {})
    try:
        json.dumps(b)
    except TypeError as exc:
        raise ExportError(f"save_torch: builder must be JSON-serialisable: {exc}") from None
    return b


def _build(builder: dict[str, Any], quantization: dict[str, Any] | None) -> nn.Module:
    from distill.models import build, build_from_factory

    if "factory" in builder:
        model = build_from_factory(builder["factory"], builder["in_shape"], builder["num_classes"], builder["params"])
    else:
        model = build(builder["arch"], builder["in_shape"], builder["num_classes"], builder["params"])
    if quantization:
        from distill.compress.quantize import quantized_like

        model = quantized_like(model.eval(), quantization, torch.zeros(2, *builder["in_shape"]))
    return model


def _shape_mismatches(a: dict[str, Tensor], b: dict[str, Tensor]) -> list[str]:
    out = [f"{k} missing" for k in a if k not in b] + [f"{k} unexpected" for k in b if k not in a]
    out += [
        f"{k} is {tuple(a[k].shape)} here but {tuple(b[k].shape)} when rebuilt"
        for k in a
        if k in b and a[k].shape != b[k].shape
    ]
    return out


def save_torch(
    model: nn.Module,
    dir: str | Path,  # noqa: A002 - the name the callers use
    *,
    builder: dict[str, Any],
    quantization: dict[str, Any] | None = None,
) -> Path:
    """Write ``dir/model.safetensors`` and ``dir/config.json``; return ``dir``.

    ``builder``: ``{'arch': 'mlp'|'cnn', 'in_shape': [...], 'num_classes': C,
    'params': {...}}`` (or ``'factory': 'pkg.mod:fn'`` instead of ``'arch'``).
    ``quantization``: how the model was quantized; by default what the
    distill quantizers recorded on it (``model.distill_quantization``).
    Before anything is written, the model is rebuilt from this description
    and its state-dict shapes compared: a mismatch (e.g. a pruned model saved
    with its original widths) raises :class:`ExportError` naming the first
    differing entries. The weights are written first, config.json last,
    each atomically: a folder with a config.json is complete.
    """
    from safetensors.torch import save_file

    from distill.compress.quantize import ATTR

    b = _check_builder(builder)
    quant = copy.deepcopy(quantization if quantization is not None else getattr(model, ATTR, None))
    tensors, layout = encode_state_dict(model.state_dict())
    if quant is None and any(d.get("t") == "qtensor" for d in layout.values()):
        raise ExportError(
            "save_torch: the model holds int8 tensors but says nothing of how it was quantized. "
            "Fix: quantize it with distill.compress (which records it), or pass quantization={...}."
        )
    try:
        rebuilt = _build(b, quant)
    except ModelError as exc:
        raise ExportError(f"save_torch: the builder {b} cannot rebuild the model: {exc}") from None
    rebuilt_tensors, _ = encode_state_dict(rebuilt.state_dict())
    problems = _shape_mismatches(tensors, rebuilt_tensors)
    if problems:
        raise ExportError(
            f"save_torch: the weights do not fit the builder {b.get('arch') or b.get('factory')} "
            f"with params {b['params']}: {'; '.join(problems[:4])}"
            f"{f' (and {len(problems) - 4} more)' if len(problems) > 4 else ''}. "
            "Fix: pass the params of the model as it is now (after structured pruning: "
            "distill.compress.pruned_params(model, arch, params))."
        )
    target = Path(dir)
    weights = target / WEIGHTS
    metadata = {_LAYOUT_KEY: json.dumps(layout), "format": FORMAT}
    write_with(weights, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "builder": b,
        "quantization": quant,
        "weights": WEIGHTS,
        "sha256": sha256_file(weights),
        "size_bytes": weights.stat().st_size,
        "torch_version": torch.__version__.split("+")[0],
    }
    write_json(target / CONFIG, config)
    return target


def load_torch(dir: str | Path) -> nn.Module:  # noqa: A002
    """Rebuild the model saved by :func:`save_torch` in ``dir`` (eval mode).

    Raises :class:`ModelError` when the folder is incomplete, its checksum does
    not match, or the weights do not fit the rebuilt model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    src = Path(dir)
    cfg_path = src / CONFIG
    if not cfg_path.is_file():
        raise ModelError(
            f"{src} holds no {CONFIG}: not a model folder written by save_torch (or an interrupted one). "
            "Fix: export the model again."
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {cfg_path}: {exc}. Fix: export the model again.") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else None
        raise ModelError(f"{cfg_path} is not a distill model config (format {found!r}). Fix: export the model again.")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{cfg_path} has format version {cfg['format_version']}, newer than this distill reads ({FORMAT_VERSION}). "
            "Fix: upgrade distill."
        )
    name = str(cfg.get("weights", WEIGHTS))
    if Path(name).name != name:
        raise ModelError(f"{cfg_path}: 'weights' must be a file name inside the folder (got {name!r}).")
    weights = src / name
    if not weights.is_file():
        raise ModelError(f"{src} lacks its weights file {weights.name}. Fix: export the model again.")
    if cfg.get("sha256") and sha256_file(weights) != cfg["sha256"]:
        raise ModelError(
            f"{weights} does not match the checksum in {CONFIG} (changed or truncated). Fix: export the model again."
        )
    with safe_open(str(weights), framework="pt") as fh:
        layout_json = (fh.metadata() or {}).get(_LAYOUT_KEY)
    tensors = load_file(str(weights))
    layout = json.loads(layout_json) if layout_json else {k: {"t": "tensor"} for k in tensors}
    state = decode_state_dict(tensors, layout)
    model = _build(cfg["builder"], cfg.get("quantization"))
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"the weights in {weights} do not fit the model rebuilt from {CONFIG}: {exc}") from None
    return model.eval()


# --------------------------------------------------------------------------- Hugging Face


def save_hf(model: Any, tokenizer: Any | None, dir: str | Path) -> Path:  # noqa: A002
    """Save a Hugging Face model (and its tokenizer or processor) with their own ``save_pretrained``.

    Weights as safetensors (``safe_serialization=True`` where the method
    takes it). Everything is written into a temporary folder beside ``dir``
    and renamed into place, so ``dir`` is either the old or the complete new
    export, never a half-written one. Models without ``save_pretrained``
    (plain ``nn.Module``) belong in :func:`save_torch`.
    """
    for what, obj in (("model", model), ("tokenizer", tokenizer)):
        if obj is not None and not callable(getattr(obj, "save_pretrained", None)):
            raise ExportError(
                f"save_hf: the {what} ({type(obj).__name__}) has no save_pretrained: not a Hugging Face object. "
                "Fix: use save_torch for plain PyTorch models."
            )
    target = Path(dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise ExportError(f"save_hf: cannot create a folder beside {target}: {exc}") from None
    old = None
    try:
        kwargs = {}
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
            kwargs["safe_serialization"] = True
        model.save_pretrained(str(tmp), **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return target


__all__ = [
    "CONFIG",
    "FORMAT",
    "WEIGHTS",
    "decode_state_dict",
    "encode_state_dict",
    "load_torch",
    "save_hf",
    "save_torch",
]
