"""The error tree of `distill`.

Every error a user can cause is a :class:`DistillError`; the CLI prints its
message and exits with code 2 (``--debug`` shows the traceback). Anything else
that escapes is a bug in `distill`.

::

    DistillError
    ├── RecipeError        the recipe file or an override is wrong
    ├── DataError          data missing, unreadable, empty or inconsistent
    ├── TeacherError       the teacher cannot be built, loaded or run
    ├── ModelError         a model cannot be built or its weights do not fit
    ├── CacheError         a teacher-output cache is stale or corrupt
    ├── CheckpointError    a checkpoint is missing, truncated or does not fit
    ├── TrainingError      training diverged (non-finite loss) or cannot go on
    ├── RunDirError        a run directory is missing, incomplete or in the way
    ├── StorageError       a file cannot be written (disk full, no permission)
    ├── ExportError        export or its parity check failed
    └── UnsupportedError   a command or option that does not apply to this run's task

Messages follow one shape: what is wrong, why, and how to fix it.
"""

from __future__ import annotations


class DistillError(Exception):
    """Base of all user-facing errors. ``str(err)`` is the full message."""

    exit_code = 2


class RecipeError(DistillError):
    """The recipe is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)  # one problem, never its characters
        self.source = source
        where = f" in {source}" if source else ""
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the recipe{where}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class DataError(DistillError):
    """Data is missing, unreadable, empty or inconsistent."""


class TeacherError(DistillError):
    """The teacher cannot be built, loaded or run."""


class ModelError(DistillError):
    """A model cannot be built, or weights do not fit it."""


class CacheError(DistillError):
    """A teacher-output cache is stale or corrupt (it is rebuilt, never used)."""


class CheckpointError(DistillError):
    """A checkpoint is missing, truncated, or does not fit the run."""


class TrainingError(DistillError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""


class RunDirError(DistillError):
    """A run directory is missing, incomplete, or would be overwritten."""


class StorageError(DistillError):
    """A file cannot be written: no space left, file too large, no permission."""


class ExportError(DistillError):
    """Export failed or its parity check broke."""


class UnsupportedError(DistillError):
    """A command or option does not apply to this task (the message says why, and what does)."""
