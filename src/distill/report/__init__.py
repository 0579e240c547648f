"""Tables and documents made from measurements (nothing upstream needs this)."""


from pathlib import Path

from distill.report.card import licence_status, write_model_card
from distill.report.html import write_report, write_tensorboard
from distill.report.table import comparison, render_markdown


def write_classification_report(run_dir: str | Path) -> list[Path]:
    """A classification run's report.html, its model card (README.md) and, when tensorboard is installed,
    its curves as event files; returns what was written."""
    from distill.tasks.classification.run_files import check_run_files

    check_run_files(run_dir, "report")
    written = [write_model_card(run_dir), write_report(run_dir)]
    tb = write_tensorboard(run_dir)
    if tb is not None:
        written.append(tb)
    return written


__all__ = ["comparison", "licence_status", "render_markdown", "write_classification_report", "write_model_card",
           "write_report", "write_tensorboard"]  # fmt: skip
