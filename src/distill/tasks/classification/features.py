"""Intermediate features for feature-based losses: capture by module path with forward
hooks (the models are not touched), learned adapters where shapes differ, and the
teacher's features for a whole split computed once (inputs are deterministic)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from distill.errors import ModelError

LAYER_PARAMS = ("student_layer", "teacher_layer")


def resolve_layer(module: nn.Module, name: str, what: str) -> nn.Module:
    """The submodule at ``name`` (e.g. ``"3"`` or ``"encoder.layer.2"``), or a clear error."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        shown = ", ".join(f"{n} ({type(module.get_submodule(n)).__name__})" for n in names[:30])
        raise ModelError(
            f"the {what} has no layer {name!r}. Its layers: {shown}{' ...' if len(names) > 30 else ''}. "
            f"Fix: set {what}_layer to one of these module paths."
        ) from None


class FeatureCapture:
    """Registers forward hooks on named layers; ``outputs[name]`` holds the latest output."""

    def __init__(self, module: nn.Module, names: Iterable[str], what: str):
        self.module = module
        self.names = sorted(set(names))
        self.what = what
        self.outputs: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "FeatureCapture":
        for name in self.names:
            layer = resolve_layer(self.module, name, self.what)
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Any:
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            self.outputs[name] = out[0] if isinstance(out, (tuple, list)) else out

        return hook

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def feature_terms(objective: Sequence[Any]) -> list[Any]:
    return [t for t in objective if "teacher_features" in t.spec.needs]


def layer_names(objective: Sequence[Any]) -> tuple[set[str], set[str]]:
    terms = feature_terms(objective)
    return {t.params["student_layer"] for t in terms}, {t.params["teacher_layer"] for t in terms}


@torch.no_grad()
def feature_shapes(module: nn.Module, names: Iterable[str], in_shape: Sequence[int], what: str) -> dict[str, torch.Size]:
    was = module.training
    module.eval()
    try:
        with FeatureCapture(module, names, what) as cap:
            module(torch.zeros(2, *in_shape))
        return {k: v.shape[1:] for k, v in cap.outputs.items()}
    finally:
        module.train(was)


def build_adapters(
    objective: Sequence[Any], student: nn.Module, teacher: nn.Module, in_shape: Sequence[int]
) -> nn.ModuleDict:
    """A learned adapter for every hint term whose student and teacher features differ in
    shape: a 1×1 convolution for feature maps, a linear layer for vectors."""
    s_names, t_names = layer_names(objective)
    s_shapes = feature_shapes(student, s_names, in_shape, "student")
    t_shapes = feature_shapes(teacher, t_names, in_shape, "teacher")
    adapters = nn.ModuleDict()
    for term in feature_terms(objective):
        if not term.spec.adapter:
            continue
        s, t = s_shapes[term.params["student_layer"]], t_shapes[term.params["teacher_layer"]]
        if s == t:
            continue
        key = term.label.replace("#", "_")
        if len(s) == 3 and len(t) == 3:
            if s[1:] != t[1:]:
                raise ModelError(
                    f"{term.label}: student features {tuple(s)} and teacher features {tuple(t)} differ in spatial "
                    "size; a 1x1 adapter cannot fix that. Fix: pick layers with the same height and width."
                )
            adapters[key] = nn.Conv2d(s[0], t[0], kernel_size=1, bias=False)
        elif len(s) == 1 and len(t) == 1:
            adapters[key] = nn.Linear(s[0], t[0], bias=False)
        else:
            adapters[key] = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(s).prod()), int(torch.tensor(t).prod())),
                                          nn.Unflatten(1, tuple(t)))  # fmt: skip
    return adapters


@torch.no_grad()
def teacher_feature_table(
    teacher: nn.Module, names: Iterable[str], x: Tensor, batch_size: int, prepare: dict[str, Any] | None = None
) -> dict[str, Tensor]:
    """Teacher features of every named layer for all rows of ``x`` (eval mode), each passed
    through ``prepare[name]`` (e.g. reduced to an attention map) when given."""
    names = sorted(set(names))
    was = teacher.training
    teacher.eval()
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    try:
        with FeatureCapture(teacher, names, "teacher") as cap:
            for i in range(0, x.shape[0], batch_size):
                teacher(x[i : i + batch_size])
                for n in names:
                    out = cap.outputs[n].float()
                    parts[n].append(prepare[n](out) if prepare and n in prepare else out)
    finally:
        teacher.train(was)
    return {n: torch.cat(v) for n, v in parts.items()}
