"""On-disk store of teacher outputs, keyed by a fingerprint.

The key is sha256(teacher weights fingerprint, split fingerprint (inputs,
labels, ids), preprocessing). Each entry is one safetensors file whose metadata
holds the key and a sha256 of the stored logits; an entry whose key or checksum
does not match, or that cannot be read, is reported and rebuilt, never used.
Files are written atomically, so a killed run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from distill.core.fsutil import write_with

log = logging.getLogger("distill")


def cache_key(teacher_fp: str, split_fp: str, preprocessing: dict[str, Any], extra: str = "") -> str:
    h = hashlib.sha256()
    for part in (teacher_fp, split_fp, json.dumps(preprocessing, sort_keys=True, default=str), extra):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _digest(t: Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


class TeacherCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / f"teacher-{key[:32]}.safetensors"

    def load(self, key: str) -> Tensor | None:
        """Return the cached tensor, or None when absent, stale or corrupt (with a log line)."""
        from safetensors import safe_open

        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensor = fh.get_tensor("logits")
        except Exception as exc:  # truncated/corrupt file: never used
            log.warning("teacher cache %s is unreadable (%s); rebuilding it", path, exc)
            return None
        if meta.get("key") != key:
            log.warning("teacher cache %s belongs to another teacher/data (stale); rebuilding it", path)
            return None
        if meta.get("sha256") != _digest(tensor):
            log.warning("teacher cache %s fails its checksum (corrupt); rebuilding it", path)
            return None
        return tensor

    def store(self, key: str, tensor: Tensor, info: dict[str, str] | None = None) -> Path:
        from safetensors.torch import save_file

        tensor = tensor.detach().cpu().contiguous()
        meta = {"key": key, "sha256": _digest(tensor), **(info or {})}
        path = self.path_for(key)
        write_with(path, lambda tmp: save_file({"logits": tensor}, str(tmp), metadata=meta))
        return path

    def get_or_compute(self, key: str, compute: Callable[[], Tensor], info: dict[str, str] | None = None) -> tuple[Tensor, bool]:
        """Return ``(tensor, hit)``; compute and store it on a miss."""
        cached = self.load(key)
        if cached is not None:
            return cached, True
        tensor = compute()
        self.store(key, tensor, info)
        return tensor, False
