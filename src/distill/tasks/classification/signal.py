"""What the students learn from: the teacher's outputs for every split (cached on disk,
computed in shards across processes) and the students' transfer set aligned with them."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from distill.data import DataBundle, transfer_set
from distill.tasks.classification.recipe import Recipe
from distill.tasks.classification.objective import predict_logits
from distill.tasks.classification.teachers import TorchTeacher
from distill.tasks.classification.teachers.cache import TeacherCache, cache_key
from distill.tasks.classification.teachers.ensemble import teacher_logits_for

log = logging.getLogger("distill")


def sharded_predict(module: nn.Module, x: torch.Tensor, batch_size: int, accelerator: Any) -> torch.Tensor:
    """Logits for all rows of ``x``; with several processes each computes a contiguous
    shard and the shards are gathered (every process gets the whole result)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if world == 1:
        return predict_logits(module, x, batch_size)
    n = x.shape[0]
    chunk = -(-n // world)
    part = predict_logits(module, x[rank * chunk : (rank + 1) * chunk], batch_size)
    width = part.shape[1] if part.numel() else predict_logits(module, x[:1], 1).shape[1]
    padded = torch.zeros(chunk, width)
    padded[: part.shape[0]] = part
    gathered = accelerator.gather(padded.to(accelerator.device)).cpu()
    return gathered[:n].contiguous()


def teacher_outputs(
    teacher: Any, data: DataBundle, recipe: Recipe, eval_batch: int, accelerator: Any
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Teacher logits for every split: from the cache when possible.

    With several processes the cache is read by all of them (they agree on hit or
    miss: nothing writes between the barrier and the read), a miss is computed
    in shards across the processes and merged, and the main process stores it.
    """
    out: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {"cache": "off", "seconds": 0.0}
    use_cache = recipe.teacher.cache
    cache = TeacherCache(recipe.output.cache_dir) if use_cache else None
    hits = []
    module = getattr(teacher, "module", None)
    fingerprint = teacher.fingerprint()

    def predict(split: Any) -> torch.Tensor:
        if isinstance(teacher, TorchTeacher):
            return sharded_predict(module, split.x, eval_batch, accelerator)
        return teacher_logits_for(teacher, split.x, split.ids).float()

    t0 = time.perf_counter()
    for name, split in data.splits().items():
        if cache is None:
            out[name] = predict(split)
            continue
        key = cache_key(fingerprint, split.fingerprint(), data.preprocessing, "classification-logits-v1")
        accelerator.wait_for_everyone()
        cached = cache.load(key)
        if cached is not None:
            out[name] = cached
        else:
            out[name] = predict(split)
            if accelerator.is_main_process:
                cache.store(key, out[name], {"split": name, "source": data.source})
        hits.append(cached is not None)
        info.setdefault("files", {})[name] = str(cache.path_for(key))
    accelerator.wait_for_everyone()
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["processes"] = accelerator.num_processes
    if cache is not None:
        info["cache"] = "hit" if all(hits) else ("partial" if any(hits) else "miss")
        log.info(
            "teacher outputs: cache %s (%s), %.2fs", info["cache"], recipe.output.cache_dir, info["seconds"]
        )
    return out, info


def student_view(data: DataBundle, recipe: Recipe, train_logits: torch.Tensor | None = None) -> tuple[DataBundle, torch.Tensor | None]:
    """The students' data (the recipe's ``transfer`` section: classes left out, labels kept
    for a share) and the teacher's training-split logits aligned with its rows."""
    tr = recipe.transfer
    if not tr.exclude_classes and tr.labeled_fraction >= 1.0:
        return data, train_logits
    student_data, index = transfer_set(data, tr.exclude_classes, tr.labeled_fraction, tr.seed)
    aligned = None if train_logits is None else train_logits[torch.as_tensor(index, dtype=torch.long)]
    return student_data, aligned
