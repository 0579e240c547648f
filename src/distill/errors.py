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
    ├── UnsupportedError   a command or option that does not apply to this run's task
    └── PreflightError     several of the above, found together before a run wrote anything

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


class PreflightError(DistillError):
    """Several problems found by a preflight before anything was written. ``problems`` holds each error."""

    def __init__(self, problems: list[DistillError]):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problems found before anything was written (each with its fix):"]
        for p in self.problems:
            text = str(p).splitlines() or [type(p).__name__]
            lines.append(f"  - {text[0]}")
            lines.extend(f"    {more}" for more in text[1:])
        super().__init__("\n".join(lines))


class Problems:
    """Collects the errors of independent checks so that a preflight reports them all at once::

        problems = Problems()
        with problems.check():
            check_the_teacher()
        with problems.check():
            check_the_student()
        problems.raise_any()   # the one error as it is, or a PreflightError with all of them
    """

    def __init__(self) -> None:
        self.errors: list[DistillError] = []

    def check(self) -> "_Check":
        return _Check(self)

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise PreflightError(self.errors)


class _Check:
    def __init__(self, problems: Problems):
        self.problems = problems
        self.failed = False

    def __enter__(self) -> "_Check":
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, PreflightError):
            self.problems.errors.extend(exc.problems)
        elif isinstance(exc, DistillError):
            self.problems.errors.append(exc)
        else:
            return False
        self.failed = True
        return True
