"""The "distill" logger: console and run.log handlers, set up once per run or command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("distill")
_HANDLER_TAG = "_distill_handler"


def setup_logging(run_dir: Path | None, *, console: bool = True, level: int = logging.INFO) -> None:
    log.setLevel(level)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, _HANDLER_TAG, False):
            log.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if console:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(logging.Formatter("%(message)s"))
        setattr(ch, _HANDLER_TAG, True)
        log.addHandler(ch)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
        fh.setFormatter(fmt)
        setattr(fh, _HANDLER_TAG, True)
        log.addHandler(fh)


def log_to_file(run_dir: Path) -> None:
    """Also write the log to ``run_dir/run.log`` (appending), keeping the console handler as it is."""
    target = str((run_dir / "run.log").resolve())
    if any(getattr(h, _HANDLER_TAG, False) and getattr(h, "baseFilename", None) == target for h in log.handlers):
        return
    fh = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    setattr(fh, _HANDLER_TAG, True)
    log.addHandler(fh)
