"""Token losses computed in chunks of positions, so that no full ``(B, S, V)`` float32 tensor beyond what
the caller already holds is alive at once (as Liger-Kernel's chunked and fused-linear losses do).

:func:`chunked_token_loss` takes the student's logits; :func:`fused_token_loss` takes the student's last
hidden states and its output head instead, so that the student's full logits are never materialised
either. The teacher may be dense logits, a :class:`~distill.losses.token_views.TeacherTopK`, or
:class:`HeadLogits` (its hidden states and head: the teacher's logits are made per chunk, too).

Both return what :func:`distill.losses.token.token_loss` returns times ``kd_scale``, plus, when
``ce_targets`` is given, ``ce_scale ×`` the summed next-token cross-entropy on the same logits: the
objective of one micro-batch in one pass. The gradient is computed chunk by chunk in the forward pass
(closed form for forward KL and cross-entropy: ``T (q_T − p_T)`` and ``softmax − onehot``; autograd on
the chunk for the other divergences) and kept for the backward pass, which only scales it: memory is the
gradient buffer (``(N, V)`` for logits, ``(N, H)`` and ``(V, H)`` for a fused head) plus one chunk.
Values and gradients equal the unchunked losses' up to float rounding (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.token import _check_params, per_token_divergence
from distill.losses.token_views import TeacherTopK, _check_temperature

#: bytes of one chunk's (rows, V) float32 tensor: under glibc's 32 MB mmap threshold, so chunk buffers are
#: reused from the heap instead of being handed back to the OS and faulted in again every step
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class HeadLogits:
    """Logits made on demand: ``hidden (B, S, H) @ weight (V, H).T + bias``, a model's last hidden states and
    its output head (no gradient flows into them)."""

    hidden: Tensor
    weight: Tensor
    bias: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.hidden.shape[:2], self.weight.shape[0])  # type: ignore[return-value]

    def to(self, device: Any) -> "HeadLogits":
        bias = self.bias.to(device) if self.bias is not None else None
        return HeadLogits(self.hidden.to(device), self.weight.to(device), bias)


@dataclass
class ChunkStats:
    """Side results of one call, for logs: the summed forward KL(p_T ‖ q_T) over the positions (no T²) when
    asked for, and how many positions it covers."""

    want_kl: bool = False
    kl_sum: float = 0.0
    positions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def chunk_rows(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Positions per chunk so that one (rows, V) float32 tensor stays under ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * max(1, vocab)))


def _teacher_rows(teacher: Any, flat_index: Tensor) -> Any:
    """The teacher's view of the flattened positions ``flat_index`` (of ``B · S``)."""
    if teacher is None:
        return None
    if isinstance(teacher, TeacherTopK):
        f = teacher.flat()
        return TeacherTopK(f.indices[flat_index], f.logprobs[flat_index], f.tail[flat_index], teacher.temperature)
    if isinstance(teacher, HeadLogits):
        h = teacher.hidden.reshape(-1, teacher.hidden.shape[-1])[flat_index]
        out = h.float() @ teacher.weight.float().T
        return out + teacher.bias.float() if teacher.bias is not None else out
    return teacher.reshape(-1, teacher.shape[-1])[flat_index].detach().float()


def _chunk_grad(name: str, logits: Tensor, teacher: Any, temperature: float, params: dict, kd_scale: float,
                ce: Tensor | None, ce_scale: float, stats: ChunkStats) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(loss of the chunk, its gradient with respect to ``logits`` (n, V)), for float32 ``logits``."""
    t = temperature
    dense = not isinstance(teacher, TeacherTopK)
    ones = torch.ones(logits.shape[0], 1, dtype=torch.bool, device=logits.device)
    if teacher is None or not kd_scale:  # cross-entropy only
        loss, grad = logits.new_zeros(()), torch.zeros_like(logits)
    elif name == "fkl" and dense:  # closed form: d/ds T² KL(p_T ‖ q_T) = T (q_T − p_T)
        s_logp = F.log_softmax(logits / t, dim=-1)
        t_logp = F.log_softmax(teacher / t, dim=-1)
        p = t_logp.exp()
        kl = (p * (t_logp - s_logp)).sum()
        loss = kd_scale * t * t * kl
        grad = (s_logp.exp() - p).mul_(kd_scale * t)
        if stats.want_kl:
            stats.kl_sum += float(kl)
    else:
        with torch.enable_grad():
            s = logits.detach().requires_grad_(True)
            values = per_token_divergence(name, s[:, None, :], _unsqueeze(teacher), ones, temperature=t, **params)
            kd = values.sum() * (kd_scale * t * t)
            (grad,) = torch.autograd.grad(kd, s)
        loss = kd.detach()
        if stats.want_kl:
            stats.kl_sum += float(per_token_divergence("fkl", logits[:, None, :], _unsqueeze(teacher), ones,
                                                       temperature=t).sum())  # fmt: skip
    if ce is not None and ce_scale:
        keep = ce >= 0
        if bool(keep.any()):
            logp = F.log_softmax(logits, dim=-1)
            picked = logp.gather(1, ce.clamp_min(0)[:, None])[:, 0]
            loss = loss + ce_scale * -(picked * keep).sum()
            g = logp.exp_()
            g[torch.arange(len(ce), device=ce.device)[keep], ce[keep]] -= 1.0
            grad = grad + g.mul_(keep[:, None].to(g.dtype) * ce_scale)
    return loss, grad


def _unsqueeze(teacher: Any) -> Any:
    if isinstance(teacher, TeacherTopK):
        return TeacherTopK(teacher.indices[:, None], teacher.logprobs[:, None], teacher.tail[:, None],
                           teacher.temperature)  # fmt: skip
    return teacher[:, None, :]


class _ChunkedLoss(torch.autograd.Function):
    """inputs: ``x`` (N, V) student logits (``weight`` None) or (N, H) hidden states with ``weight`` (V, H)
    and ``bias`` (V,); the rest rides in ``spec``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, spec: dict) -> Tensor:  # type: ignore[override]
        rows = x.shape[0]
        step = spec["chunk"]
        grad_x = torch.zeros_like(x, dtype=torch.float32)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight is not None else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for start in range(0, rows, step):
            sl = slice(start, min(rows, start + step))
            xc = x[sl].float()
            logits = xc if weight is None else xc @ weight.float().T
            if bias is not None:
                logits = logits + bias.float()
            teacher = _teacher_rows(spec["teacher"], spec["index"][sl])
            ce = spec["ce"][sl] if spec["ce"] is not None else None
            loss, g = _chunk_grad(spec["name"], logits, teacher, spec["temperature"], spec["params"], spec["kd_scale"],
                                  ce, spec["ce_scale"], spec["stats"])  # fmt: skip
            total += loss.double()
            if weight is None:
                grad_x[sl] = g
            else:
                grad_x[sl] = g @ weight.float()
                grad_w.addmm_(g.T, xc)  # type: ignore[union-attr]
                if grad_b is not None:
                    grad_b += g.sum(0)
        ctx.save_for_backward(grad_x, *(t for t in (grad_w, grad_b) if t is not None))
        ctx.has = (grad_w is not None, grad_b is not None)
        ctx.dtypes = (x.dtype, weight.dtype if weight is not None else None, bias.dtype if bias is not None else None)
        return total.float()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        gx = saved.pop(0)
        gw = saved.pop(0) if ctx.has[0] else None
        gb = saved.pop(0) if ctx.has[1] else None
        scale = grad_out.float()
        out_x = (gx * scale).to(ctx.dtypes[0])
        out_w = (gw * scale).to(ctx.dtypes[1]) if gw is not None else None
        out_b = (gb * scale).to(ctx.dtypes[2]) if gb is not None else None
        return out_x, out_w, out_b, None


def _positions(mask: Tensor) -> Tensor:
    return torch.nonzero(mask.reshape(-1), as_tuple=False).flatten()


def _spec(name: str, teacher: Any, mask: Tensor, temperature: float, params: dict, kd_scale: float,
          ce_targets: Tensor | None, ce_scale: float, vocab: int, chunk: int | None,
          stats: ChunkStats | None) -> tuple[dict, Tensor]:  # fmt: skip
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"mask must be a (B, S) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    resolved = _check_params(name, params)
    t = _check_temperature(temperature)
    index = _positions(mask)
    ce = ce_targets.reshape(-1)[index] if ce_targets is not None else None
    spec = {"name": name, "teacher": teacher, "index": index, "temperature": t, "params": resolved,
            "kd_scale": float(kd_scale), "ce": ce, "ce_scale": float(ce_scale), "chunk": chunk or chunk_rows(vocab),
            "stats": stats if stats is not None else ChunkStats()}  # fmt: skip
    spec["stats"].positions += int(index.numel())
    return spec, index


def chunked_token_loss(name: str, student_logits: Tensor, teacher: Any, mask: Tensor, *, temperature: float = 1.0,
                       kd_scale: float = 1.0, ce_targets: Tensor | None = None, ce_scale: float = 0.0,
                       chunk: int | None = None, stats: ChunkStats | None = None, **params: Any) -> Tensor:  # fmt: skip
    """``kd_scale · token_loss(name, student_logits, teacher, mask, temperature)`` plus ``ce_scale`` × the summed
    cross-entropy of ``student_logits`` against ``ce_targets`` ``(B, S)`` (``-100``: no target), over the masked
    positions, computed ``chunk`` positions at a time (default: :func:`chunk_rows`).

    ``student_logits``: ``(B, S, V)``; ``teacher``: dense ``(B, S, V)`` logits, a ``TeacherTopK`` or
    :class:`HeadLogits`; ``mask``: ``(B, S)`` bool. Returns a 0-dim float32 tensor."""
    b, s, v = student_logits.shape
    spec, index = _spec(name, teacher, mask, temperature, params, kd_scale, ce_targets, ce_scale, v, chunk, stats)
    flat = student_logits.reshape(b * s, v)
    x = flat if index.numel() == b * s else flat[index]
    return _ChunkedLoss.apply(x, None, None, spec)


def fused_token_loss(name: str, hidden: Tensor, weight: Tensor, bias: Tensor | None, teacher: Any, mask: Tensor, *,
                     temperature: float = 1.0, kd_scale: float = 1.0, ce_targets: Tensor | None = None,
                     ce_scale: float = 0.0, chunk: int | None = None, stats: ChunkStats | None = None,
                     **params: Any) -> Tensor:  # fmt: skip
    """:func:`chunked_token_loss` of the logits ``hidden (B, S, H) @ weight.T + bias`` (the student's output
    head), without ever making them in full: gradients flow to ``hidden``, ``weight`` and ``bias``."""
    b, s, h = hidden.shape
    spec, index = _spec(name, teacher, mask, temperature, params, kd_scale, ce_targets, ce_scale, weight.shape[0],
                        chunk, stats)  # fmt: skip
    flat = hidden.reshape(b * s, h)
    x = flat if index.numel() == b * s else flat[index]
    return _ChunkedLoss.apply(x, weight, bias, spec)


def next_token_targets(ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(B, S)`` targets of next-token cross-entropy at each position: ``ids[:, t + 1]``, and ``-100`` at the
    last position and where ``mask[:, :-1]`` is False."""
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    if mask is not None:
        targets[:, :-1][~mask[:, :-1]] = -100
    return targets


__all__ = ["CHUNK_BYTES", "ChunkStats", "HeadLogits", "chunk_rows", "chunked_token_loss", "fused_token_loss",
           "next_token_targets"]  # fmt: skip
