"""Tables and documents made from measurements (nothing upstream needs this)."""


from distill.report.card import licence_status, write_model_card
from distill.report.html import write_report, write_tensorboard
from distill.report.table import comparison, render_markdown


__all__ = ["comparison", "licence_status", "render_markdown", "write_model_card",
           "write_report", "write_tensorboard"]  # fmt: skip
