"""Data parallelism for the loops distill writes out (the sentence-embedding students), over the process
group that Accelerate sets up under torchrun (``distill run --nproc N``).

Every rank draws the same global batch (the same seeded order), takes its share (``batch[rank::world]``),
and computes its part of the loss normalised by the *global* batch; a term that needs the whole batch
(relational losses compare every pair of sentences) is computed on the gathered embeddings, the same on
every rank. Gradients are summed across ranks before the optimizer step (dense ones in one flat buffer;
sparse ones, as a static table's, sparse). So N processes take the steps one process takes on the global
batch, up to float rounding (dropout masks are drawn per rank, so a student with dropout agrees in
distribution, not to the digit).

Without a process group every helper is the identity, at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor


def _dist() -> Any:
    import torch.distributed as dist

    return dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world`` (0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Ranks":
        dist = _dist()
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def many(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, batch: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch (of indices)."""
        return batch[self.rank :: self.world] if self.many else batch

    def sizes(self, n: int) -> list[int]:
        """How many rows of an ``n``-row global batch each rank takes."""
        return [len(range(r, n, self.world)) for r in range(self.world)]

    def gathered_order(self, batch: np.ndarray) -> np.ndarray:
        """The global batch in the order :meth:`gather_rows` returns it: rank 0's share, then rank 1's, ..."""
        if not self.many:
            return batch
        return np.concatenate([batch[r :: self.world] for r in range(self.world)])

    def sum(self, value: Tensor) -> Tensor:
        """The sum over ranks of ``value`` (no gradient)."""
        if not self.many:
            return value
        out = value.detach().clone()
        _dist().all_reduce(out)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a decision all ranks must take together)."""
        if not self.many:
            return flag
        return bool(self.sum(torch.tensor(float(flag))) > 0)

    def gather_rows(self, x: Tensor, sizes: Sequence[int]) -> Tensor:
        """Every rank's rows ``x`` (``sizes[r]`` rows on rank r) concatenated in rank order; the gradient flows
        back to this rank's own rows (each rank computes the same loss from the result)."""
        if not self.many:
            return x
        return _GatherRows.apply(x, self, tuple(int(s) for s in sizes))

    def sum_gradients(self, params: Iterable[torch.nn.Parameter], sparse: Iterable[torch.nn.Parameter] = ()) -> None:
        """Sum the gradients of ``params`` (dense, in one flat buffer) and ``sparse`` (parameters with sparse
        gradients, as an ``nn.Embedding(sparse=True)`` weight) across ranks, in place. A missing gradient counts
        as zero; one that is missing on every rank stays missing, as in one process."""
        if not self.many:
            return
        dist = _dist()
        dense = list(params)
        if dense:
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in dense])
            had = self.sum(torch.tensor([float(p.grad is not None) for p in dense]))
            dist.all_reduce(flat)
            offset = 0
            for p, seen in zip(dense, had.tolist()):
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone() if seen else None
                offset += n
        for p in sparse:
            grad = p.grad if p.grad is not None else _empty_sparse(p)
            dist.all_reduce(grad)
            grad = grad.coalesce()
            p.grad = grad if grad._nnz() else None


def _empty_sparse(p: Tensor) -> Tensor:
    return torch.sparse_coo_tensor(torch.empty((1, 0), dtype=torch.long), p.new_empty((0, *p.shape[1:])), p.shape)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, ranks: Ranks, sizes: tuple[int, ...]) -> Tensor:  # type: ignore[override]
        dist = _dist()
        width = max(sizes)
        padded = x.new_zeros((width, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(ranks.world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start = sum(sizes[: ranks.rank])
        ctx.rows = x.shape[0]
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return grad[ctx.start : ctx.start + ctx.rows], None, None


__all__ = ["Ranks"]
