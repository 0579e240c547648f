"""Run under torchrun (or alone): the gradient of a global batch's loss, computed by the ranks' shares with
distill.core.distributed, saved per rank for tests/test_distributed_core.py to compare with one process."""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from distill.core.distributed import Ranks


def main(out: str) -> None:
    if "WORLD_SIZE" in __import__("os").environ:
        torch.distributed.init_process_group("gloo")
    ranks = Ranks.current()
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 8, sparse=True)
    head = torch.nn.Linear(8, 6)
    tokens = torch.randint(0, 50, (13, 4))  # 13 sentences: shares of 7 and 6 on two ranks
    targets = torch.randn(13, 6)
    batch = np.arange(13)
    mine = ranks.share(batch)
    emb = head(table(tokens[mine]).mean(1))
    n = len(batch)
    local = (1 - F.cosine_similarity(emb, targets[mine], dim=-1)).sum() / n  # per-sentence term, global mean
    everyone = ranks.gather_rows(emb, ranks.sizes(n))  # a whole-batch term on the gathered rows
    order = ranks.gathered_order(batch)
    s, t = F.normalize(everyone, dim=-1), F.normalize(targets[order], dim=-1)
    shared = ((s @ s.T - t @ t.T) ** 2).mean()
    (local + shared).backward()
    ranks.sum_gradients(list(head.parameters()), sparse=[table.weight])
    loss = float(ranks.sum(local.detach())) + float(shared)
    torch.save({"loss": loss, "head.weight": head.weight.grad, "head.bias": head.bias.grad,
                "table": table.weight.grad.to_dense()}, f"{out}.{ranks.rank}.pt")  # fmt: skip
    if ranks.many:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
