"""The teacher's sentence embeddings (and, for static students, its per-token contextual vectors), cached on
disk: keyed by a hash of the teacher's files and settings plus the exact texts, so a rerun, a probe or a
second recipe with the same teacher and text reads them instead of running the teacher again."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from distill.engine.logs import log
from distill.fsutil import atomic_path
from distill.models.sentence import SentenceEncoder


def teacher_fingerprint(path: Path, teacher: SentenceEncoder) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt"}:
            h.update(p.relative_to(path).as_posix().encode())
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    h.update(f"{teacher.pooling}|{teacher.normalize}|{teacher.max_seq_length}".encode())
    return h.hexdigest()[:16]


def cached_embeddings(
    encode: Callable[[list[str]], np.ndarray], texts: list[str], cache_dir: Path, fingerprint: str, what: str
) -> np.ndarray:
    """Teacher embeddings of ``texts``, from ``cache_dir`` when the same teacher already encoded the same texts."""
    key = hashlib.sha256((fingerprint + "\n" + "\n".join(texts)).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "embeddings" / f"{key}.npy"
    if path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape[0] == len(texts):
                log.info("teacher embeddings of %s: from the cache (%s)", what, path)
                return arr
        except (OSError, ValueError) as exc:
            log.warning("teacher-embedding cache %s is unreadable (%s): recomputing", path, exc)
    t0 = time.perf_counter()
    arr = encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    log.info("teacher embeddings of %s: %d sentences in %.0f s (cached)", what, len(texts), time.perf_counter() - t0)
    return arr


def cached_context(teacher: SentenceEncoder, texts: list[str], cache_dir: Path, fingerprint: str, *,
                   batch_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The teacher's sentence embeddings of ``texts`` and its per-token contextual sums and counts
    (for static students with ``init: context``), cached like :func:`cached_embeddings`."""
    from distill.models.static_embed import contextual_token_vectors

    key = hashlib.sha256((fingerprint + "\n" + "\n".join(texts)).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "embeddings" / f"{key}.context.npz"
    if path.exists():
        try:
            z = np.load(path, allow_pickle=False)
            if z["emb"].shape[0] == len(texts):
                log.info("teacher token contexts: from the cache (%s)", path)
                return z["emb"], z["sums"], z["counts"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("context cache %s is unreadable (%s): recomputing", path, exc)
    t0 = time.perf_counter()
    emb, sums, counts = contextual_token_vectors(teacher, texts, batch_size=batch_size, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, emb=emb, sums=sums, counts=counts)
    log.info("teacher token contexts of %d sentences in %.0f s (cached)", len(texts), time.perf_counter() - t0)
    return emb, sums, counts
