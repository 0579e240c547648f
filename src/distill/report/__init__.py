"""Tables and documents made from measurements (nothing upstream needs this)."""

from distill.report.table import comparison, render_markdown

__all__ = ["comparison", "render_markdown"]
