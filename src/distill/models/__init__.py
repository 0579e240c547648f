"""Model builders: plain functions returning ``nn.Module``, in one explicit table."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Sequence

from torch import nn

from distill.errors import ModelError
from distill.models.zoo import cnn, mlp

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
}


def build(arch: str, in_shape: Sequence[int], num_classes: int, params: dict[str, Any]) -> nn.Module:
    """Build a built-in model by name."""
    if arch not in BUILDERS:
        raise ModelError(f"unknown model {arch!r}; known: {', '.join(BUILDERS)}")
    try:
        return BUILDERS[arch](tuple(in_shape), int(num_classes), **params)
    except TypeError as exc:
        raise ModelError(f"cannot build {arch!r} with {params}: {exc}") from None


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Import ``'package.module:function'``."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(
            f"cannot import module {mod_name!r} of factory {spec!r}: {exc}. "
            "Fix: install the package or put its folder on PYTHONPATH."
        ) from None
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise ModelError(f"module {mod_name!r} has no callable {fn_name!r} (factory {spec!r})")
    return fn


def build_from_factory(
    spec: str, in_shape: Sequence[int], num_classes: int, params: dict[str, Any]
) -> nn.Module:
    """Call a user factory; ``in_shape``/``num_classes`` are passed when it accepts them."""
    fn = resolve_factory(spec)
    kwargs = dict(params)
    try:
        sig = inspect.signature(fn)
        if "in_shape" in sig.parameters:
            kwargs.setdefault("in_shape", tuple(in_shape))
        if "num_classes" in sig.parameters:
            kwargs.setdefault("num_classes", int(num_classes))
    except (TypeError, ValueError):
        pass
    try:
        model = fn(**kwargs)
    except Exception as exc:  # user code: report, do not crash with its traceback
        raise ModelError(f"factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["BUILDERS", "build", "build_from_factory", "cnn", "count_parameters", "mlp", "resolve_factory"]
