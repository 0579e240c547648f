"""The offline teacher cache for language models: top-k log-probabilities per position.

A causal-LM teacher is run once over a dataset of fixed-length token blocks; per
position it keeps the ``k`` most likely next tokens with their log-probabilities at
temperature ``T`` and the log of the remaining mass (:class:`~distill.losses.token.TeacherTopK`).
Training then reads the cache instead of running the teacher; the token losses
compute the exact divergence of the coarsened ``k + 1``-bucket distributions.

With ``mode="sample"`` the same ``k`` slots hold ``k`` draws from the teacher per
position instead (distinct ids, ``log(count / k)``, unused slots ``-inf``, tail at the
floor): random-sampling KD, whose forward-KL gradient is unbiased where the top-k
one is not (``benchmarks/results/lm.md`` measures both).

Folder layout::

    <directory>/
        index.json                 rewritten after each shard (complete: false until the last)
        shard-00000.safetensors    rows [0, shard_blocks)
        shard-00001.safetensors    rows [shard_blocks, 2·shard_blocks)
        ...

Each shard is a safetensors file with three tensors for its ``n`` blocks of length ``L``:

- ``indices`` ``(n, L, k)`` **uint16** when the vocabulary has ≤ 65 536 tokens, else int32;
- ``logprobs`` ``(n, L, k)`` float16, most likely token first;
- ``tail`` ``(n, L)`` float16, ``log(1 − Σ exp(logprobs))`` floored at ``log 1e-12``;

and string metadata (format, fingerprint, k, temperature, vocab size, block length,
row range). ``index.json`` holds ``format``, ``version``, ``fingerprint``, ``k``,
``temperature``, ``vocab_size``, ``block_len``, ``num_blocks``, ``shard_blocks``,
``index_dtype``, ``complete`` and ``shards``: a list of ``{"file", "start", "stop",
"sha256", "bytes"}``. Shards are written atomically (temporary name, fsync,
rename) and the index after each one, so an interrupted build resumes where it
stopped; a shard's sha256 is checked when it is first loaded.

Size: ``k · (2 + 2) + 2`` bytes per position with uint16 ids (130 B at k = 32)
against ``2 · V`` for dense fp16 logits: 1.59 % at V = 4 096, 0.79 % at V = 8 192,
0.20 % at V = 32 000, 0.13 % at V = 50 257 (plus ~0.5 KB of safetensors header
per shard; measured in ``tests/test_topk_cache.py``). The ≤ 1 % target at k = 32
therefore needs V ≥ ~6 500 (or a smaller k: k = 16 at V = 4 096 is 0.81 %).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.errors import CacheError
from distill.fsutil import sha256_file, write_json, write_with
from distill.losses.token import TeacherTopK, dense_sample, dense_topk

FORMAT = "distill-topk-cache"
VERSION = 1
INDEX = "index.json"
_UINT16_MAX_VOCAB = 1 << 16
# what must agree between an existing folder and a new build for the build to resume
_HEADER_KEYS = ("fingerprint", "k", "temperature", "block_len", "num_blocks", "shard_blocks")
# added later; an index without them was built with these values
_OPTIONAL_KEYS = {"mode": "topk", "seed": 0}
MODES = ("topk", "sample")


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def _index_dtype(vocab_size: int) -> torch.dtype:
    return torch.uint16 if vocab_size <= _UINT16_MAX_VOCAB else torch.int32


def _read_index(directory: Path) -> dict[str, Any]:
    path = directory / INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(
            f"no top-k teacher cache at {directory}: {INDEX} is missing. "
            "Fix: build it with build_topk_cache (or point to the folder that holds index.json)."
        ) from None
    except (OSError, ValueError) as exc:
        raise CacheError(
            f"the top-k teacher cache index {path} is unreadable ({exc}). "
            f"Fix: delete the folder {directory} and rebuild the cache."
        ) from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CacheError(
            f"{path} is not a distill top-k teacher cache index (format {index.get('format') if isinstance(index, dict) else None!r}). "
            f"Fix: delete the folder {directory} or choose another cache directory."
        )
    if index.get("version") != VERSION:
        raise CacheError(
            f"the top-k teacher cache at {directory} has format version {index.get('version')!r}, this distill reads "
            f"version {VERSION}. Fix: delete the folder and rebuild the cache."
        )
    missing = [key for key in (*_HEADER_KEYS, "vocab_size", "index_dtype", "shards", "complete") if key not in index]
    if missing:
        raise CacheError(
            f"the top-k teacher cache index {path} lacks {', '.join(missing)}. "
            f"Fix: delete the folder {directory} and rebuild the cache."
        )
    return index


def _plan(num_blocks: int, shard_blocks: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_blocks, num_blocks)) for start in range(0, num_blocks, shard_blocks)]


class TopKCache:
    """A finished top-k teacher cache, opened read-only.

    ``TopKCache(directory)`` reads and validates ``index.json`` and checks that every
    shard exists with the recorded size; shards are loaded lazily on first use, each
    verified against its sha256 (a corrupt or truncated shard raises
    :class:`~distill.errors.CacheError` naming it). Loaded shards stay in memory.

    Attributes: ``k``, ``mode`` (``topk`` or ``sample``), ``temperature``, ``num_blocks``, ``block_len``, ``vocab_size``,
    ``fingerprint``, ``directory``.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index = _read_index(self.directory)
        if not index["complete"]:
            done = len(index["shards"])
            total = len(_plan(int(index["num_blocks"]), int(index["shard_blocks"])))
            raise CacheError(
                f"the top-k teacher cache at {self.directory} is incomplete ({done} of {total} shards): its build was "
                "interrupted. Fix: run the build again (it resumes), or delete the folder."
            )
        self.k = int(index["k"])
        self.temperature = float(index["temperature"])
        self.num_blocks = int(index["num_blocks"])
        self.block_len = int(index["block_len"])
        self.vocab_size = int(index["vocab_size"])
        self.fingerprint = str(index["fingerprint"])
        self.shard_blocks = int(index["shard_blocks"])
        self.mode = str(index.get("mode", _OPTIONAL_KEYS["mode"]))
        self._shards: list[dict[str, Any]] = sorted(index["shards"], key=lambda s: int(s["start"]))
        plan = _plan(self.num_blocks, self.shard_blocks)
        if [(int(s["start"]), int(s["stop"])) for s in self._shards] != plan:
            raise CacheError(
                f"the top-k teacher cache index at {self.directory} lists shards that do not cover rows "
                f"0..{self.num_blocks} in steps of {self.shard_blocks}. Fix: delete the folder and rebuild the cache."
            )
        for entry in self._shards:
            path = self.directory / entry["file"]
            size = path.stat().st_size if path.exists() else None
            if size != int(entry["bytes"]):
                what = (
                    "is missing" if size is None else f"has {size} bytes, the index says {entry['bytes']} (truncated?)"
                )
                raise CacheError(
                    f"top-k teacher cache shard {path} {what}. "
                    f"Fix: run the build again (it recomputes missing shards), or delete {self.directory} and rebuild."
                )
        self._loaded: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return self.num_blocks

    def __repr__(self) -> str:
        return (
            f"TopKCache({str(self.directory)!r}, blocks={self.num_blocks}, block_len={self.block_len}, "
            f"k={self.k}, vocab={self.vocab_size}, T={self.temperature}, mode={self.mode})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the shard files (without ``index.json``)."""
        return sum(int(s["bytes"]) for s in self._shards)

    def dense_fp16_nbytes(self) -> int:
        """What dense fp16 logits of the same positions would take: ``N · L · V · 2`` bytes."""
        return self.num_blocks * self.block_len * self.vocab_size * 2

    def _shard(self, i: int) -> dict[str, Tensor]:
        if i not in self._loaded:
            self._loaded[i] = _load_shard(self.directory, self._shards[i], self)
        return self._loaded[i]

    def verify(self) -> None:
        """Load and checksum every shard now (raises :class:`CacheError` on the first bad one)."""
        for i in range(len(self._shards)):
            self._shard(i)

    def get(self, rows: Tensor | Sequence[int]) -> TeacherTopK:
        """The teacher's top-k for the given blocks (any order, repeats allowed).

        Returns a :class:`TeacherTopK` with ``indices`` ``(len(rows), L, k)`` int64,
        ``logprobs`` ``(len(rows), L, k)`` float32, ``tail`` ``(len(rows), L)`` float32,
        and ``temperature`` set to the cache's.
        """
        rows_t = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
        if rows_t.numel() and (int(rows_t.min()) < 0 or int(rows_t.max()) >= self.num_blocks):
            raise IndexError(f"rows must lie in [0, {self.num_blocks}) for this cache, got {rows_t.tolist()}")
        n = rows_t.numel()
        indices = torch.empty(n, self.block_len, self.k, dtype=torch.int64)
        logprobs = torch.empty(n, self.block_len, self.k, dtype=torch.float32)
        tail = torch.empty(n, self.block_len, dtype=torch.float32)
        shard_of = torch.div(rows_t, self.shard_blocks, rounding_mode="floor")
        for i in shard_of.unique().tolist():
            where = (shard_of == i).nonzero().reshape(-1)
            local = rows_t[where] - i * self.shard_blocks
            data = self._shard(int(i))
            indices[where] = data["indices"][local].to(torch.int64)
            logprobs[where] = data["logprobs"][local].float()
            tail[where] = data["tail"][local].float()
        return TeacherTopK(indices, logprobs, tail, self.temperature)


def _load_shard(directory: Path, entry: dict[str, Any], cache: TopKCache) -> dict[str, Tensor]:
    from safetensors.torch import load as st_load

    path = directory / entry["file"]
    fix = f"Fix: delete {path} and run the build again (it recomputes only that shard), or delete {directory} and rebuild."
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CacheError(f"top-k teacher cache shard {path} cannot be read ({exc}). {fix}") from None
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise CacheError(f"top-k teacher cache shard {path} fails its sha256 check (corrupt or truncated). {fix}")
    try:
        data = st_load(raw)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CacheError(f"top-k teacher cache shard {path} is unreadable ({exc}). {fix}") from None
    n = int(entry["stop"]) - int(entry["start"])
    want = {
        "indices": (n, cache.block_len, cache.k),
        "logprobs": (n, cache.block_len, cache.k),
        "tail": (n, cache.block_len),
    }
    for name, shape in want.items():
        if name not in data or tuple(data[name].shape) != shape:
            got = tuple(data[name].shape) if name in data else "nothing"
            raise CacheError(f"top-k teacher cache shard {path} holds {name} {got}, expected {shape}. {fix}")
    return data


# --------------------------------------------------------------------------- building


def _teacher_device(teacher: torch.nn.Module) -> torch.device:
    for p in teacher.parameters():
        return p.device
    return torch.device("cpu")


def _describe_mismatch(index: dict[str, Any], header: dict[str, Any]) -> list[str]:
    out = []
    for key in (*_HEADER_KEYS, *_OPTIONAL_KEYS):
        a, b = index.get(key, _OPTIONAL_KEYS.get(key)), header[key]
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
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("fingerprint must be a non-empty string identifying the teacher and the data")

    header: dict[str, Any] = {
        "fingerprint": fingerprint,
        "k": int(k),
        "temperature": float(temperature),
        "block_len": block_len,
        "num_blocks": num_blocks,
        "shard_blocks": int(shard_blocks),
        "mode": mode,
        "seed": int(seed),
    }
    plan = _plan(num_blocks, int(shard_blocks))
    done: dict[int, dict[str, Any]] = {}
    vocab_size: int | None = None
    if (directory / INDEX).exists():
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
        else:
            assert index is not None
            vocab_size = int(index["vocab_size"])
            for entry in index["shards"]:
                path = directory / entry["file"]
                if path.exists() and path.stat().st_size == int(entry["bytes"]):
                    done[plan.index((int(entry["start"]), int(entry["stop"])))] = entry

    todo = [i for i in range(len(plan)) if i not in done]
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
                parts: list[TeacherTopK] = []
                gen = torch.Generator(device=device).manual_seed(int(seed) + i) if mode == "sample" else None
                for b0 in range(start, stop, int(batch_size)):
                    ids = blocks[b0 : min(b0 + int(batch_size), stop)].to(device=device, dtype=torch.long)
                    logits = teacher(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
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
                    if mode == "sample":
                        top = dense_sample(logits, int(k), float(temperature), generator=gen)
                    else:
                        top = dense_topk(logits, int(k), float(temperature))
                    parts.append(TeacherTopK(top.indices.cpu(), top.logprobs.cpu(), top.tail.cpu()))
                    if bar is not None:
                        bar.update(int(ids.shape[0]))
                tensors = {
                    "indices": torch.cat([p.indices for p in parts]).to(torch.int32).to(_index_dtype(vocab_size)),
                    "logprobs": torch.cat([p.logprobs for p in parts]).to(torch.float16).contiguous(),
                    "tail": torch.cat([p.tail for p in parts]).to(torch.float16).contiguous(),
                }
                tensors["indices"] = tensors["indices"].contiguous()
                done[i] = _write_shard(directory, i, start, stop, tensors, header, vocab_size)
                _write_index(directory, header, vocab_size, done, complete=len(done) == len(plan))
    finally:
        if bar is not None:
            bar.close()
        teacher.train(was_training)
    if not todo:
        assert vocab_size is not None
        _write_index(directory, header, vocab_size, done, complete=True)
    return TopKCache(directory)


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
