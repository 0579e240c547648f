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
stopped; a shard's sha256 is checked when it is first loaded. Building lives in
:mod:`distill.tasks.causal_lm.topk_build`; this module reads.

Size: ``k · (2 + 2) + 2`` bytes per position with uint16 ids (130 B at k = 32)
against ``2 · V`` for dense fp16 logits: 1.59 % at V = 4 096, 0.79 % at V = 8 192,
0.20 % at V = 32 000, 0.13 % at V = 50 257 (plus ~0.5 KB of safetensors header
per shard; measured in ``tests/test_topk_cache.py``). The ≤ 1 % target at k = 32
therefore needs V ≥ ~6 500 (or a smaller k: k = 16 at V = 4 096 is 0.81 %).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.errors import CacheError
from distill.losses.token import TeacherTopK

FORMAT = "distill-topk-cache"
VERSION = 1
INDEX = "index.json"
_UINT16_MAX_VOCAB = 1 << 16
# what must agree between an existing folder and a new build for the build to resume
_HEADER_KEYS = ("fingerprint", "k", "temperature", "block_len", "num_blocks", "shard_blocks")
# added later; an index without them was built with these values
_OPTIONAL_KEYS = {"mode": "topk", "seed": 0, "draws": None}
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
            "Fix: build it with distill.tasks.causal_lm.topk_build.build_topk_cache (or point to the folder that holds index.json)."
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
