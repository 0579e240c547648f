"""Atomic file writes and checksums (imports only the error tree).

A file is written to a temporary name in the same folder, flushed, fsynced and
renamed over the target, so an interrupted run never leaves a file that looks
complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from distill.errors import StorageError

_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _storage_error(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except Exception as exc:  # torch and safetensors wrap OS errors in their own types
        if _is_storage_problem(exc):
            raise _storage_error(target, exc) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _is_storage_problem(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno in _NO_SPACE):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("no space left", "file too large", "disk quota", "os error 28", "os error 27"))


def file_in_the_way(path: Path) -> Path | None:
    """``path`` itself, or the nearest folder above it, when that is a file (nothing can be written there)."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def _storage_error(target: Path, exc: BaseException) -> StorageError:
    """The error for a file that cannot be written, with the fix for its real cause."""
    reason = getattr(exc, "strerror", None) or str(exc)
    code = getattr(exc, "errno", None)
    blocker = file_in_the_way(target)
    if blocker is not None and blocker != target:
        fix = (f"{blocker} is a file, so nothing can be written under it. Fix: point output.dir / output.cache_dir "
               "elsewhere, or move that file away")
    elif target.is_dir():
        fix = f"{target} is a folder where a file is to be written. Fix: move that folder away"
    elif isinstance(exc, PermissionError) or code in {errno.EACCES, errno.EPERM, errno.EROFS}:
        fix = ("this place is read-only or you may not write there. Fix: choose a writable place with --set "
               "output.dir=PATH (and output.cache_dir=PATH for the caches)")
    elif code in _NO_SPACE or _is_storage_problem(exc):
        fix = "the disk is full. Fix: free disk space, or point output.dir / output.cache_dir at a disk with room"
    else:
        fix = "Fix: check that the folder exists and can be written"
    return StorageError(
        f"cannot write {target}: {reason}; {fix}. Nothing was half-written (files are written to a temporary name and "
        "renamed)."
    )


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
