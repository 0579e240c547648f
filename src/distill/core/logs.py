"""The "distill" logger: console and run.log handlers, set up once per run or command.

Before a run directory exists (the preflight), records are kept in memory as well as shown; the first
file handler of the run (:func:`log_to_file`) writes them first, so run.log has the whole story."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("distill")
_HANDLER_TAG = "_distill_handler"
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")


class _Pending(logging.Handler):
    """Holds the records logged before the run directory exists (at most ``limit``)."""

    def __init__(self, limit: int = 2000):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.limit:
            self.records.append(record)


def _file_handler(run_dir: Path) -> logging.FileHandler:
    fh = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    fh.setFormatter(_FORMAT)
    setattr(fh, _HANDLER_TAG, True)
    return fh


def setup_logging(run_dir: Path | None, *, console: bool = True, level: int = logging.INFO) -> None:
    log.setLevel(level)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, _HANDLER_TAG, False):
            log.removeHandler(h)
            h.close()
    if console:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(logging.Formatter("%(message)s"))
        ch.addFilter(lambda record: not getattr(record, "file_only", False))  # said on stderr in another way
        setattr(ch, _HANDLER_TAG, True)
        log.addHandler(ch)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        log.addHandler(_file_handler(run_dir))
    else:
        pending = _Pending()
        setattr(pending, _HANDLER_TAG, True)
        log.addHandler(pending)


def setup_rank_logging(run_dir: Path | None, console: bool, main: bool) -> None:
    """:func:`setup_logging` for one process of a run under torchrun: the main process tells the story (console
    and run.log); the others log warnings only, and write no file."""
    setup_logging(run_dir if main else None, console=console and main)
    if not main:
        log.setLevel(logging.WARNING)


def log_to_file(run_dir: Path) -> None:
    """Also write the log to ``run_dir/run.log`` (appending), first the records logged before it existed;
    the console handler stays as it is."""
    target = str((run_dir / "run.log").resolve())
    if any(getattr(h, _HANDLER_TAG, False) and getattr(h, "baseFilename", None) == target for h in log.handlers):
        return
    fh = _file_handler(run_dir)
    for h in list(log.handlers):
        if isinstance(h, _Pending):
            for record in h.records:
                fh.handle(record)
            log.removeHandler(h)
    log.addHandler(fh)


def warnings_once(fn):
    """Decorate a command so that each distinct warning raised while it runs (a library that warns on every
    batch: scikit-learn's feature names, a deprecation inside a loop) is logged once, to the console and
    run.log, instead of being printed once per call site or per batch. Filters still apply: a warning the
    caller turned into an error stays one."""
    import functools
    import warnings

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        seen: set[tuple[type, str]] = set()
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
            key = (category, str(message))
            if key in seen:
                return
            seen.add(key)
            log.warning("%s: %s (%s:%s; shown once)", category.__name__, message, Path(filename).name, lineno)

        warnings.showwarning = show
        try:
            return fn(*args, **kwargs)
        finally:
            warnings.showwarning = previous

    return wrapper
