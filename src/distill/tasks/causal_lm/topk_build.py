"""Building the offline teacher cache of :mod:`distill.tasks.causal_lm.topk_cache` (format, reading and
layout are described there): run a causal-LM teacher once over the blocks and write its top-k, or
k draws, per position, shard by shard, atomically and resumably.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.errors import CacheError
from distill.core.fsutil import sha256_file, write_json, write_with
from distill.losses.token import TeacherTopK, dense_sample, dense_topk
from distill.losses.token_views import DRAWS
from distill.tasks.causal_lm.topk_cache import (
    _HEADER_KEYS,
    _OPTIONAL_KEYS,
    FORMAT,
    INDEX,
    MODES,
    VERSION,
    TopKCache,
    _index_dtype,
    _plan,
    _read_index,
    _shard_name,
)


def _teacher_device(teacher: torch.nn.Module) -> torch.device:
    for p in teacher.parameters():
        return p.device
    return torch.device("cpu")


def _describe_mismatch(index: dict[str, Any], header: dict[str, Any]) -> list[str]:
    out = []
    for key in (*_HEADER_KEYS, *_OPTIONAL_KEYS):
        a, b = index.get(key, _OPTIONAL_KEYS.get(key)), header[key]
        if key == "draws" and a is None and index.get("mode") == "sample":
            a = "multinomial"  # sampled caches written before `draws` existed drew independently
        same = math.isclose(float(a), float(b)) if key == "temperature" and a is not None else a == b
        if not same:
            out.append(f"{key} {a!r} there, {b!r} asked")
    return out


def _remove_cache_files(directory: Path) -> None:
    for path in directory.glob("shard-*.safetensors"):
        path.unlink()
    (directory / INDEX).unlink(missing_ok=True)


def build_topk_cache(
    teacher: torch.nn.Module,
    blocks: Tensor,
    directory: str | os.PathLike,
    *,
    k: int = 32,
    temperature: float = 1.0,
    batch_size: int = 8,
    shard_blocks: int = 256,
    fingerprint: str,
    progress: bool = True,
    overwrite: bool = False,
    mode: str = "topk",
    seed: int = 0,
    draws: str = "multinomial",
) -> TopKCache:
    """Run a causal-LM teacher over ``blocks`` once and store its top-k (or ``k`` draws) per position.

    Args:
        teacher: a Hugging Face causal LM (``teacher(input_ids=x).logits`` is
            ``(B, L, V)``); it is run under ``torch.inference_mode()`` in eval mode on its
            own device (its train/eval mode is restored afterwards).
        blocks: ``(N, L)`` int64 token ids (packed blocks, no padding).
        directory: the cache folder (created if needed).
        k: how many tokens to keep per position, ``1 ≤ k ≤ V``.
        temperature: ``T > 0`` of the stored log-probabilities; the losses must use the same T.
        batch_size: blocks per teacher call.
        shard_blocks: blocks per shard file.
        fingerprint: identifies teacher weights + data + preprocessing; a folder built
            with another fingerprint is never reused.
        progress: show a tqdm progress bar.
        overwrite: when the folder holds a cache built with other settings, delete its
            files and rebuild instead of raising.
        mode: ``"topk"`` stores the ``k`` most likely tokens and the remaining mass
            (:func:`~distill.losses.token.dense_topk`); ``"sample"`` stores ``k`` draws from
            the teacher per position as an empirical distribution (distinct ids with
            ``log(count / k)``, :func:`~distill.losses.token.dense_sample`): the same size,
            an unbiased forward-KL target instead of a biased one.
        seed: ``"sample"``: seeds the draws (shard ``i`` uses ``seed + i``, so a resumed
            build writes the same bytes as an uninterrupted one).
        draws: ``"sample"``: ``"multinomial"`` (independent draws) or ``"systematic"``
            (one uniform offset, lower variance; :func:`~distill.losses.token.dense_sample`).

    Resuming: when ``directory`` already holds an index with the same fingerprint, k,
    T, shape and shard size, shards that exist with their recorded size are kept and
    only the missing ones are computed (a corrupt kept shard is caught by its sha256
    when loaded; delete it and build again).

    Raises:
        CacheError: the folder holds a cache built with other settings (and not
            ``overwrite``), or the teacher's vocabulary differs from the one recorded.
        ValueError: bad arguments (shapes, k, T, sizes).
    """
    directory = Path(directory)
    _check_arguments(blocks, k, temperature, batch_size, shard_blocks, mode, draws, fingerprint)
    num_blocks, block_len = (int(x) for x in blocks.shape)
    header: dict[str, Any] = {
        "fingerprint": fingerprint,
        "k": int(k),
        "temperature": float(temperature),
        "block_len": block_len,
        "num_blocks": num_blocks,
        "shard_blocks": int(shard_blocks),
        "mode": mode,
        "seed": int(seed),
        "draws": draws if mode == "sample" else None,
    }
    plan = _plan(num_blocks, int(shard_blocks))
    done, vocab_size = _resume(directory, header, plan, overwrite)
    todo = [i for i in range(len(plan)) if i not in done]
    vocab_size = _build_shards(
        teacher, blocks, directory, header, plan, done, todo, vocab_size,
        k=k, temperature=temperature, batch_size=batch_size, progress=progress, mode=mode, seed=seed, draws=draws,
    )
    if not todo:
        assert vocab_size is not None
        _write_index(directory, header, vocab_size, done, complete=True)
    return TopKCache(directory)


def _build_shards(
    teacher: torch.nn.Module,
    blocks: Tensor,
    directory: Path,
    header: dict[str, Any],
    plan: list[tuple[int, int]],
    done: dict[int, dict[str, Any]],
    todo: list[int],
    vocab_size: int | None,
    *,
    k: int,
    temperature: float,
    batch_size: int,
    progress: bool,
    mode: str,
    seed: int,
    draws: str,
) -> int | None:
    """Compute and write the shards ``todo`` (adding them to ``done``, rewriting the index after each),
    with the teacher in eval mode; returns the vocabulary size (None when there was nothing to do)."""
    device = _teacher_device(teacher)
    was_training = teacher.training
    teacher.eval()
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(plan[i][1] - plan[i][0] for i in todo), desc="teacher top-k", unit="block")
    try:
        with torch.inference_mode():
            for i in todo:
                start, stop = plan[i]
                gen = torch.Generator(device=device).manual_seed(int(seed) + i) if mode == "sample" else None
                parts, vocab_size = _run_teacher(
                    teacher, blocks[start:stop], device, k=k, temperature=float(temperature), mode=mode, draws=draws,
                    batch_size=int(batch_size), gen=gen, vocab_size=vocab_size, directory=directory, bar=bar,
                )
                done[i] = _write_shard(directory, i, start, stop, _shard_tensors(parts, vocab_size), header, vocab_size)
                _write_index(directory, header, vocab_size, done, complete=len(done) == len(plan))
    finally:
        if bar is not None:
            bar.close()
        teacher.train(was_training)
    return vocab_size


def _check_arguments(
    blocks: Any, k: int, temperature: float, batch_size: int, shard_blocks: int, mode: str, draws: str, fingerprint: Any
) -> None:
    """Raise ValueError for arguments :func:`build_topk_cache` cannot work with."""
    if not isinstance(blocks, Tensor) or blocks.dim() != 2 or blocks.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"blocks must be an (N, L) integer tensor of token ids, got "
            f"{tuple(blocks.shape) if isinstance(blocks, Tensor) else type(blocks).__name__}"
            f"{' ' + str(blocks.dtype) if isinstance(blocks, Tensor) else ''}"
        )
    num_blocks, block_len = (int(x) for x in blocks.shape)
    if num_blocks == 0 or block_len == 0:
        raise ValueError(f"blocks is empty (shape {tuple(blocks.shape)}); nothing to cache")
    if int(k) < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if not (float(temperature) > 0 and math.isfinite(float(temperature))):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if int(batch_size) < 1 or int(shard_blocks) < 1:
        raise ValueError(f"batch_size and shard_blocks must be ≥ 1, got {batch_size} and {shard_blocks}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "sample" and draws not in DRAWS:
        raise ValueError(f"draws must be one of {', '.join(DRAWS)}, got {draws!r}")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("fingerprint must be a non-empty string identifying the teacher and the data")


def _resume(
    directory: Path, header: dict[str, Any], plan: list[tuple[int, int]], overwrite: bool
) -> tuple[dict[int, dict[str, Any]], int | None]:
    """The shards already written with these settings (by plan position) and the vocabulary size they
    record; a cache built with other settings raises CacheError, or is deleted when ``overwrite``."""
    done: dict[int, dict[str, Any]] = {}
    if not (directory / INDEX).exists():
        return done, None
    try:
        index = _read_index(directory)
        problems = _describe_mismatch(index, header)
    except CacheError as exc:
        index, problems = None, [str(exc)]
    if problems:
        if not overwrite:
            raise CacheError(
                f"the folder {directory} holds a top-k teacher cache built with other settings "
                f"({'; '.join(problems)}). Fix: choose another cache directory, delete this one, "
                "or pass overwrite=True to rebuild it."
            )
        _remove_cache_files(directory)
        return done, None
    assert index is not None
    for entry in index["shards"]:
        path = directory / entry["file"]
        if path.exists() and path.stat().st_size == int(entry["bytes"]):
            done[plan.index((int(entry["start"]), int(entry["stop"])))] = entry
    return done, int(index["vocab_size"])


def _run_teacher(
    teacher: torch.nn.Module,
    blocks: Tensor,
    device: torch.device,
    *,
    k: int,
    temperature: float,
    mode: str,
    draws: str,
    batch_size: int,
    gen: torch.Generator | None,
    vocab_size: int | None,
    directory: Path,
    bar: Any,
) -> tuple[list[TeacherTopK], int]:
    """One shard's blocks through the teacher, ``batch_size`` at a time: the top-k (or draws) of each
    batch, on the CPU, and the teacher's vocabulary size (checked against ``vocab_size`` when known)."""
    parts: list[TeacherTopK] = []
    for b0 in range(0, int(blocks.shape[0]), batch_size):
        ids = blocks[b0 : b0 + batch_size].to(device=device, dtype=torch.long)
        logits = teacher(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        vocab_size = _check_logits(logits, ids, k, vocab_size, directory)
        if mode == "sample":
            top = dense_sample(logits, int(k), temperature, generator=gen, draws=draws)
        else:
            top = dense_topk(logits, int(k), temperature)
        parts.append(TeacherTopK(top.indices.cpu(), top.logprobs.cpu(), top.tail.cpu()))
        if bar is not None:
            bar.update(int(ids.shape[0]))
    assert vocab_size is not None
    return parts, vocab_size


def _check_logits(logits: Tensor, ids: Tensor, k: int, vocab_size: int | None, directory: Path) -> int:
    """The vocabulary size of ``logits`` (the teacher's output for ``ids``), checked against the known one."""
    v = int(logits.shape[-1])
    if vocab_size is None:
        vocab_size = v
        if int(k) > v:
            raise ValueError(f"k = {k} exceeds the teacher's vocabulary size {v}")
    elif v != vocab_size:
        raise CacheError(
            f"the teacher's vocabulary has {v} tokens, the cache at {directory} was built with "
            f"{vocab_size}. Fix: delete the folder (or pass overwrite=True) and rebuild."
        )
    if tuple(logits.shape[:2]) != tuple(ids.shape):
        raise ValueError(
            f"the teacher returned logits {tuple(logits.shape)} for input ids {tuple(ids.shape)}; "
            "expected (B, L, V) from a causal LM"
        )
    return vocab_size


def _shard_tensors(parts: list[TeacherTopK], vocab_size: int) -> dict[str, Tensor]:
    """The batches of one shard, joined in the dtypes the shard file stores."""
    tensors = {
        "indices": torch.cat([p.indices for p in parts]).to(torch.int32).to(_index_dtype(vocab_size)),
        "logprobs": torch.cat([p.logprobs for p in parts]).to(torch.float16).contiguous(),
        "tail": torch.cat([p.tail for p in parts]).to(torch.float16).contiguous(),
    }
    tensors["indices"] = tensors["indices"].contiguous()
    return tensors


def _write_shard(
    directory: Path, i: int, start: int, stop: int, tensors: dict[str, Tensor], header: dict[str, Any], vocab_size: int
) -> dict[str, Any]:
    from safetensors.torch import save_file

    meta = {key: str(value) for key, value in header.items()}
    meta.update(format=FORMAT, vocab_size=str(vocab_size), start=str(start), stop=str(stop))
    path = directory / _shard_name(i)
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return {"file": path.name, "start": start, "stop": stop, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _write_index(
    directory: Path, header: dict[str, Any], vocab_size: int, done: dict[int, dict[str, Any]], *, complete: bool
) -> None:
    index = {
        "format": FORMAT,
        "version": VERSION,
        **header,
        "vocab_size": vocab_size,
        "index_dtype": str(_index_dtype(vocab_size)).replace("torch.", ""),
        "complete": complete,
        "shards": [done[i] for i in sorted(done)],
    }
    write_json(directory / INDEX, index)
