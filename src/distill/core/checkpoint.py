"""Per-epoch checkpoints that survive a kill.

Each role (teacher, baseline, student) has a folder ``checkpoints/<role>/``
with ``epoch-NNNN.pt`` files (``torch.save``, loaded back with
``weights_only=True``) and ``latest.json``, written last, which lists the
newest checkpoints with their sha256. A checkpoint whose checksum does not
match (truncated by a kill, corrupted on disk) is skipped with a warning and
the previous one is used; nothing unverified is ever loaded.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from distill.errors import CheckpointError
from distill.core.fsutil import sha256_file, write_json, write_with

log = logging.getLogger("distill")
KEEP = 2


class CheckpointStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def index_path(self) -> Path:
        return self.folder / "latest.json"

    def _index(self) -> list[dict[str, Any]]:
        if not self.index_path.exists():
            return []
        try:
            data = json.loads(self.index_path.read_text())
            return list(data["checkpoints"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{self.index_path} is unreadable ({exc}). Fix: delete the folder {self.folder} to start this stage afresh."
            ) from None

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        path = self.folder / f"epoch-{epoch:04d}.pt"
        def save(tmp: Path) -> None:
            # serialise in memory first: a full disk then raises a plain OSError on write,
            # not one of torch's opaque zip-writer errors
            buffer = io.BytesIO()
            torch.save(state, buffer)
            tmp.write_bytes(buffer.getbuffer())

        write_with(path, save)
        entries = [e for e in self._index() if e["epoch"] != epoch]
        entries.append({"epoch": epoch, "file": path.name, "sha256": sha256_file(path)})
        entries.sort(key=lambda e: e["epoch"])
        keep, drop = entries[-KEEP:], entries[:-KEEP]
        write_json(self.index_path, {"checkpoints": keep})
        for e in drop:
            (self.folder / e["file"]).unlink(missing_ok=True)
        return path

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that passes its checksum, or None when there is none."""
        entries = self._index()
        for entry in reversed(entries):
            path = self.folder / entry["file"]
            if not path.exists():
                log.warning("checkpoint %s is listed but missing; trying an older one", path)
                continue
            if sha256_file(path) != entry["sha256"]:
                log.warning("checkpoint %s fails its checksum (truncated or corrupt); trying an older one", path)
                continue
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                log.warning("checkpoint %s cannot be loaded (%s); trying an older one", path, exc)
        if entries:
            log.warning("no valid checkpoint in %s; this stage starts from the beginning", self.folder)
        return None
