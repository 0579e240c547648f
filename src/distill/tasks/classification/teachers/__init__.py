"""Teachers behind one protocol: ``logits(x) -> (N, C)`` plus a weight fingerprint.

Kinds here: a torch module (built-in builder or ``package.module:function``,
optionally with safetensors weights). ``cache.py`` stores teacher outputs.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor, nn

from distill.errors import DistillError, ModelError, TeacherError
from distill.core.fingerprint import module_fingerprint
from distill.models import build, build_from_factory

log = logging.getLogger("distill")


class Teacher(Protocol):
    num_classes: int

    def logits(self, x: Tensor) -> Tensor: ...

    def fingerprint(self) -> str: ...


def _frozen_or_eager(teacher: "TorchTeacher", example: Tensor) -> Callable[[Tensor], Tensor]:
    """A frozen TorchScript copy of ``teacher.module`` that matches it on ``example``, else ``teacher.logits``."""
    if example.device.type != "cpu" or not hasattr(torch, "jit"):
        return teacher.logits
    reference = teacher.logits(example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            module = copy.deepcopy(teacher.module).eval()
            with torch.no_grad():
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, example)))
                out = frozen(example)
    except Exception as e:  # noqa: BLE001 - any tracing failure means: run the module as it is
        log.info("online teacher: runs eagerly (tracing failed: %s)", str(e).splitlines()[0][:120] if str(e) else e)
        return teacher.logits
    if not isinstance(out, Tensor) or out.shape != reference.shape:
        log.info("online teacher: runs eagerly (the traced module returns another structure)")
        return teacher.logits
    diff = float((out.float() - reference).abs().max())
    if diff > 1e-4 * max(1.0, float(reference.abs().max())):
        log.info("online teacher: runs eagerly (the frozen copy differs by %.3g)", diff)
        return teacher.logits

    @torch.no_grad()
    def fast(x: Tensor) -> Tensor:
        return frozen(x).float()

    log.info("online teacher: frozen TorchScript copy (max |difference| to eager %.2g on the first batch)", diff)
    return fast


class TorchTeacher:
    """A teacher that is an ``nn.Module`` run in eval mode without gradients."""

    def __init__(self, module: nn.Module, num_classes: int):
        self.module = module
        self.num_classes = num_classes
        self._fp: str | None = None

    @torch.no_grad()  # not inference_mode: outputs may be saved by the student's autograd graph
    def logits(self, x: Tensor) -> Tensor:
        was = self.module.training
        self.module.eval()
        try:
            out = self.module(x)
        finally:
            self.module.train(was)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if hasattr(out, "logits"):
            out = out.logits
        return out.float()

    def online(self) -> Callable[[Tensor], Tensor]:
        """``logits`` for a teacher run on every training batch, faster where possible.

        On CPU the module is traced and frozen once (TorchScript: batch norm folded into the
        convolutions, MKL-DNN layouts), about 2-4× faster for small CNNs. The frozen copy is
        used only if, on the first batch, it agrees with the eager module (max |difference|
        ≤ 1e-4 · max(1, max |logit|)); a module that cannot be traced, or disagrees, runs eagerly.
        """
        state: dict[str, Any] = {}

        def call(x: Tensor) -> Tensor:
            if "fn" not in state:
                state["fn"] = _frozen_or_eager(self, x)
            return state["fn"](x)

        return call

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = module_fingerprint(self.module)
        return self._fp

    def invalidate(self) -> None:
        self._fp = None


def load_weights(module: nn.Module, path: str | Path, what: str) -> None:
    """Load safetensors weights into ``module``; shape mismatches are reported by name."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise TeacherError(f"{what} checkpoint not found: {p}. Fix: check the path (weights must be a .safetensors file).")
    if p.suffix not in {".safetensors"}:
        raise TeacherError(
            f"{what} checkpoint {p} is not a .safetensors file. distill loads weights only from safetensors "
            "(no pickle). Fix: convert it: safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')."
        )
    try:
        state = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise TeacherError(f"cannot read {what} checkpoint {p}: {exc}. Fix: the file is corrupt or truncated.") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing in checkpoint: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("shape mismatch: " + "; ".join(wrong[:5]))
        raise TeacherError(
            f"{what} checkpoint {p} does not fit the model the recipe builds ({'; '.join(parts)}). "
            "Fix: make the recipe's arch/params match the architecture the weights were trained with."
        )
    module.load_state_dict(state)


def build_teacher_module(arch: str | None, factory: str | None, params: dict, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    try:
        if factory:
            return build_from_factory(factory, in_shape, num_classes, params)
        assert arch is not None
        return build(arch, in_shape, num_classes, params)
    except ModelError as exc:
        raise TeacherError(f"cannot build the teacher: {exc}") from None


def check_output_classes(module: nn.Module, in_shape: Sequence[int], num_classes: int, what: str) -> None:
    """Run one dummy sample and compare the output width with the data's class count."""
    module.eval()
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, *in_shape))
    except Exception as exc:
        err = TeacherError if what == "teacher" else ModelError
        raise err(f"the {what} cannot run on samples shaped {tuple(in_shape)}: {type(exc).__name__}: {exc}") from None
    if hasattr(out, "logits"):
        out = out.logits
    width = out.shape[-1]
    if width != num_classes:
        err2: type[DistillError] = TeacherError if what == "teacher" else ModelError
        raise err2(
            f"the {what} outputs {width} classes but the data has {num_classes}. "
            f"Fix: give the {what} {num_classes} outputs (or use data with {width} classes)."
        )


__all__ = ["Teacher", "TorchTeacher", "build_teacher_module", "check_output_classes", "load_weights", "module_fingerprint"]
