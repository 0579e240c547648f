"""A classification run's report: ``report.html``, its model card (``README.md``) and, when tensorboard is
installed, its curves as event files (the shared writers of :mod:`distill.report`)."""

from __future__ import annotations

from pathlib import Path

from distill.report import write_model_card, write_report, write_tensorboard
from distill.tasks.classification.run_files import check_run_files


def write_classification_report(run_dir: str | Path) -> list[Path]:
    """Write the report of a finished classification run (its weights checked first); return what was written."""
    check_run_files(run_dir, "report")
    written = [write_model_card(run_dir), write_report(run_dir)]
    tb = write_tensorboard(run_dir)
    if tb is not None:
        written.append(tb)
    return written


__all__ = ["write_classification_report"]
