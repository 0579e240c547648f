"""Pruning: unstructured (zeros in the weights) and structured (smaller layers).

Both are pure functions: the caller's model is never changed, a pruned copy is
returned. Recovery (fine-tuning after pruning) is ordinary training with
``distill.tasks.classification.loop.fit``: prune first, then distil into the pruned model.

* :func:`magnitude_prune` zeroes the globally smallest-magnitude weights of
  every ``nn.Linear``/``nn.Conv2d``. Shapes, size on disk and dense latency do
  not change; :func:`sparsity` reports the share of zeros.
* :func:`structured_prune` removes whole hidden neurons and conv channels and
  rebuilds the layers smaller, so parameters, FLOPs and latency really fall.
  :func:`pruned_params` gives the builder parameters of the result, so that it
  can be rebuilt with ``distill.models.build`` (and saved with
  ``distill.export.save_torch``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import ModelError

# Layers that keep the channel/feature axis as it is (unit i in, unit i out).
_PASS_THROUGH = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.ELU,
    nn.Hardswish,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)

CRITERIA = ("auto", "l1", "l2", "bn")


def _weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def sparsity(model: nn.Module) -> float:
    """Share of exactly-zero entries among the weights of all Linear/Conv2d layers (biases excluded).

    Returns 0.0 for a model without such layers.
    """
    total = zeros = 0
    for _, m in _weight_modules(model):
        w = m.weight.detach()
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


def magnitude_prune(model: nn.Module, sparsity: float) -> nn.Module:
    """Global unstructured magnitude pruning of Linear/Conv2d weights; returns a pruned copy.

    The ``round(sparsity · N)`` weights of smallest absolute value over all N
    Linear/Conv2d weights (biases excluded) become exact zeros; the masks are
    made permanent (no ``weight_orig``/``weight_mask`` left behind), so the
    result is a plain model of the same shapes that trains and saves as usual.
    ``sparsity(result)`` reports what was achieved (at least the target: weights
    that were zero already count too).
    """
    target = float(sparsity)
    if not (0.0 <= target < 1.0) or math.isnan(target):
        raise ModelError(
            f"magnitude_prune: sparsity must be in [0, 1) (got {sparsity}). Fix: e.g. 0.5 zeroes half the weights."
        )
    pruned = copy.deepcopy(model)
    layers = _weight_modules(pruned)
    if not layers:
        raise ModelError("magnitude_prune: the model has no nn.Linear or nn.Conv2d layer to prune.")
    if target == 0.0:
        return pruned
    weights = [m.weight for _, m in layers]
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    k = int(round(target * flat.numel()))
    if k == 0:
        return pruned
    # Exactly k weights are zeroed: ties at the threshold are broken by position
    # (the order torch.topk returns), so the achieved sparsity is not overshot.
    idx = torch.topk(flat, k, largest=False, sorted=False).indices
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[idx] = False
    offset = 0
    with torch.no_grad():
        for w in weights:
            n = w.numel()
            w.mul_(mask[offset : offset + n].view_as(w).to(w.dtype))
            offset += n
    return pruned


# --------------------------------------------------------------------------- structured


@dataclass
class _Unit:
    """A prunable producer layer and everything its output units flow through."""

    index: int  # position of the producer in the Sequential
    followers: list[int]  # positions of channel-wise layers after it (BN, activations, pools, flatten)
    consumer: int  # position of the next Linear/Conv2d, whose input dim shrinks


def _plan(layers: list[nn.Module]) -> list[_Unit]:
    weight_pos = [i for i, m in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if len(weight_pos) < 2:
        return []
    units = []
    for a, b in zip(weight_pos, weight_pos[1:]):
        units.append(_Unit(index=a, followers=list(range(a + 1, b)), consumer=b))
    return units


def _check_sequential(model: nn.Module) -> list[nn.Module]:
    if not isinstance(model, nn.Sequential):
        raise ModelError(
            f"structured_prune works on an nn.Sequential of Linear/Conv2d/BatchNorm2d/activation/pool/Flatten "
            f"layers (the mlp and cnn builders); got {type(model).__name__}. "
            "Fix: use magnitude_prune for other architectures."
        )
    layers = list(model)
    allowed = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.Flatten, *_PASS_THROUGH)
    for i, m in enumerate(layers):
        if not isinstance(m, allowed):
            raise ModelError(
                f"structured_prune cannot follow channels through layer {i} ({type(m).__name__}); it knows "
                "Linear, Conv2d, BatchNorm1d/2d, Flatten, Dropout, pools and element-wise activations. "
                "Fix: use magnitude_prune for this model."
            )
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise ModelError(
                f"structured_prune: layer {i} is a grouped/depthwise Conv2d (groups={m.groups}); not supported. "
                "Fix: use magnitude_prune for this model."
            )
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not m.track_running_stats:
            raise ModelError(f"structured_prune: layer {i} is a BatchNorm without running statistics; not supported.")
    return layers


def _input_shapes(model: nn.Sequential, example_input: Tensor) -> list[tuple[int, ...]]:
    """The input shape (without batch) of every layer, from one forward pass in eval mode."""
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[1:]))) for m in model]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as exc:
        raise ModelError(
            f"structured_prune: the model cannot run on example_input of shape {tuple(example_input.shape)}: {exc}. "
            "Fix: pass a batch shaped like the training inputs, e.g. torch.zeros(1, *in_shape)."
        ) from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return shapes


def _scores(layers: list[nn.Module], unit: _Unit, criterion: str) -> Tensor:
    producer = layers[unit.index]
    w = producer.weight.detach().float().reshape(producer.weight.shape[0], -1)
    bn = next((layers[i] for i in unit.followers if isinstance(layers[i], (nn.BatchNorm1d, nn.BatchNorm2d))), None)
    if criterion == "bn" or (criterion == "auto" and bn is not None and bn.affine):
        if bn is None or not bn.affine:
            raise ModelError(
                f"structured_prune: criterion 'bn' needs an affine BatchNorm after layer {unit.index}; there is none. "
                "Fix: use criterion 'l1' or 'l2' (or 'auto')."
            )
        return bn.weight.detach().float().abs()
    if criterion == "l2":
        return w.norm(p=2, dim=1)
    return w.abs().sum(dim=1)  # l1, and auto without BatchNorm


def keep_indices(scores: Tensor, amount: float) -> Tensor:
    n = scores.numel()
    n_keep = max(1, n - int(round(amount * n)))
    top = torch.topk(scores, n_keep, largest=True, sorted=False).indices
    return torch.sort(top).values


def _like(param: Tensor) -> dict[str, Any]:
    return {"device": param.device, "dtype": param.dtype}


def _rebuild(m: nn.Module, *, keep_out: Tensor | None, keep_in: Tensor | None) -> nn.Module:
    w = m.weight.detach()
    if keep_out is not None:
        w = w.index_select(0, keep_out.to(w.device))
    if keep_in is not None:
        w = w.index_select(1, keep_in.to(w.device))
    b = m.bias.detach() if m.bias is not None else None
    if b is not None and keep_out is not None:
        b = b.index_select(0, keep_out.to(b.device))
    if isinstance(m, nn.Linear):
        new: nn.Module = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, **_like(m.weight))
    else:
        new = nn.Conv2d(
            w.shape[1],
            w.shape[0],
            kernel_size=m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=1,
            bias=b is not None,
            padding_mode=m.padding_mode,
            **_like(m.weight),
        )
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(m.training)
    return new


def _shrink_bn(bn: nn.Module, keep: Tensor) -> nn.Module:
    cls = type(bn)
    new = cls(
        len(keep),
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        **_like(bn.running_mean),
    )
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight.detach()[keep])
            new.bias.copy_(bn.bias.detach()[keep])
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new


def structured_prune(
    model: nn.Module,
    amount: float,
    example_input: Tensor,
    *,
    criterion: str = "auto",
) -> nn.Module:
    """Remove a share ``amount`` of the hidden neurons / conv channels of every layer; return a smaller copy.

    ``model`` is an ``nn.Sequential`` as built by ``distill.models`` (mlp, cnn):
    Linear/Conv2d layers with BatchNorm, activations, Dropout, pools and
    Flatten between them. In every Linear/Conv2d except the last (the output
    layer keeps its classes, the first keeps its input), the
    ``round(amount · units)`` least important output units are removed (at
    least one unit stays): the layer, its BatchNorm, and the input dimension
    of the next Linear/Conv2d are rebuilt smaller. Across a Flatten after a
    conv, channel c owns the features ``[c·H·W, (c+1)·H·W)`` of the next
    Linear, and those blocks are removed with it.

    ``criterion`` ranks units: ``'l1'``/``'l2'`` the norm of a unit's own weights
    (its filter or row, Li et al. 2017), ``'bn'`` the |γ| of the BatchNorm after
    it (network slimming, Liu et al. 2017), ``'auto'`` (default) 'bn' where an
    affine BatchNorm follows, else 'l1'.

    ``example_input``: one batch shaped like real inputs, ``(N, *in_shape)``
    (only its shape matters; it finds H·W at the Flatten and checks the
    result). At ``amount=0`` the copy computes exactly what ``model`` does.
    The result has the same output shape, trains like any model, and
    :func:`pruned_params` gives its builder parameters.
    """
    amount = float(amount)
    if not (0.0 <= amount < 1.0) or math.isnan(amount):
        raise ModelError(
            f"structured_prune: amount must be in [0, 1) (got {amount}). Fix: e.g. 0.5 removes half the channels."
        )
    if criterion not in CRITERIA:
        raise ModelError(f"structured_prune: unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    layers = _check_sequential(model)
    shapes = _input_shapes(model, example_input)
    layers = [copy.deepcopy(m) for m in layers]
    units = _plan(layers)
    if not units:
        raise ModelError(
            "structured_prune: the model has no hidden Linear/Conv2d layer (only an output layer), nothing to prune. "
            "Fix: use a model with hidden layers."
        )
    for unit in units:
        producer = layers[unit.index]
        keep = keep_indices(_scores(layers, unit, criterion), amount).cpu()
        layers[unit.index] = _rebuild(producer, keep_out=keep, keep_in=None)
        keep_in = keep
        for i in unit.followers:
            f = layers[i]
            if isinstance(f, (nn.BatchNorm1d, nn.BatchNorm2d)):
                layers[i] = _shrink_bn(f, keep)
            elif isinstance(f, nn.Flatten):
                in_shape = shapes[i]
                if f.start_dim != 1 or (f.end_dim != -1 and f.end_dim != len(in_shape)):
                    raise ModelError(
                        f"structured_prune: layer {i} is a Flatten that does not flatten all but the batch axis. "
                        "Fix: use magnitude_prune for this model."
                    )
                block = math.prod(in_shape[1:]) if len(in_shape) > 1 else 1
                keep_in = (keep[:, None] * block + torch.arange(block)[None, :]).reshape(-1)
        consumer = layers[unit.consumer]
        expected = consumer.weight.shape[1]
        if int(keep_in.max()) >= expected:
            raise ModelError(
                f"structured_prune: cannot map the units of layer {unit.index} onto the inputs of layer "
                f"{unit.consumer} "
                f"({expected} inputs); the layers between them change the feature layout."
            )
        layers[unit.consumer] = _rebuild(consumer, keep_out=None, keep_in=keep_in)
    pruned = nn.Sequential(*layers)
    pruned.train(model.training)
    out_before = _output_shape(model, example_input)
    out_after = _output_shape(pruned, example_input)
    if out_before != out_after:  # a bug in the planner, never the user's fault
        raise RuntimeError(f"structured_prune changed the output shape {out_before} -> {out_after}")
    return pruned


def _output_shape(model: nn.Module, x: Tensor) -> tuple[int, ...]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return tuple(model(x).shape[1:])
    finally:
        model.train(was)


def pruned_params(model: nn.Module, arch: str, params: dict[str, Any]) -> dict[str, Any]:
    """Builder parameters of a structurally pruned ``mlp``/``cnn`` (a new dict; ``params`` is not changed).

    ``distill.models.build(arch, in_shape, num_classes, pruned_params(...))``
    then builds a model with exactly the pruned model's shapes, into which its
    weights load. The other parameters (dropout, batch_norm) are kept.
    """
    out = copy.deepcopy(dict(params))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if arch == "mlp":
        out["hidden"] = [m.out_features for m in linears[:-1]]
    elif arch == "cnn":
        out["channels"] = [m.out_channels for m in convs]
        if len(linears) >= 2:
            out["hidden"] = linears[0].out_features
    else:
        raise ModelError(f"pruned_params knows the builders 'mlp' and 'cnn' (got {arch!r}).")
    return out


def count_nonzero_parameters(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what magnitude pruning removes)."""
    return sum(int((p.detach() != 0).sum()) for p in model.parameters())


__all__ = [
    "CRITERIA",
    "count_nonzero_parameters",
    "magnitude_prune",
    "pruned_params",
    "sparsity",
    "structured_prune",
]
