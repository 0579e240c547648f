"""The teacher's sentence embeddings (and, for static students, its per-token contextual vectors), cached on
disk: keyed by a hash of the teacher's files and settings plus the exact texts, so a rerun, a probe or a
second recipe with the same teacher and text reads them instead of running the teacher again."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.logs import log
from distill.core.fsutil import atomic_path
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


def _cached(path: Path, load: Callable[[Path], Any], compute: Callable[[], Any], save: Callable[[Any, Any], None],
            n: int, what: str) -> Any:  # fmt: skip
    """``load(path)`` when it holds ``n`` rows (its first array), else ``compute()``, saved atomically."""
    if path.exists():
        try:
            out = load(path)
            if (out[0] if isinstance(out, tuple) else out).shape[0] == n:
                log.info("%s: from the cache (%s)", what, path)
                return out
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cache %s is unreadable (%s): recomputing %s", path, exc, what)
    t0 = time.perf_counter()
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        save(fh, out)
    log.info("%s: %d sentences in %.0f s (cached)", what, n, time.perf_counter() - t0)
    return out


def _path(cache_dir: Path, fingerprint: str, texts: list[str], suffix: str) -> Path:
    key = hashlib.sha256((fingerprint + "\n" + "\n".join(texts)).encode()).hexdigest()[:24]
    return Path(cache_dir) / "embeddings" / f"{key}{suffix}"


def cached_embeddings(
    encode: Callable[[list[str]], np.ndarray], texts: list[str], cache_dir: Path, fingerprint: str, what: str
) -> np.ndarray:
    """Teacher embeddings of ``texts``, from ``cache_dir`` when the same teacher already encoded the same texts."""
    return _cached(
        _path(cache_dir, fingerprint, texts, ".npy"), lambda p: np.load(p, allow_pickle=False),
        lambda: encode(texts), lambda fh, arr: np.save(fh, arr, allow_pickle=False), len(texts),
        f"teacher embeddings of {what}",
    )  # fmt: skip


def cached_context(teacher: SentenceEncoder, texts: list[str], cache_dir: Path, fingerprint: str, *,
                   batch_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The teacher's sentence embeddings of ``texts`` and its per-token contextual sums and counts
    (for static students with ``init: context``), cached like :func:`cached_embeddings`."""
    from distill.tasks.embedding.static_build import contextual_token_vectors

    def load(p: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = np.load(p, allow_pickle=False)
        return z["emb"], z["sums"], z["counts"]

    return _cached(
        _path(cache_dir, fingerprint, texts, ".context.npz"), load,
        lambda: contextual_token_vectors(teacher, texts, batch_size=batch_size, progress=progress),
        lambda fh, out: np.savez(fh, emb=out[0], sums=out[1], counts=out[2]), len(texts), "teacher token contexts",
    )  # fmt: skip
