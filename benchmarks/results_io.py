"""What every single-thread benchmark result starts with, and how it is written: one JSON and one
Markdown file under benchmarks/results/, the Markdown also printed. Imported by benchmark scripts."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import torch

from distill.core.fsutil import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"


def header(name: str, **fields: Any) -> dict[str, Any]:
    """The result's identity (benchmark, UTC date, machine, the command as run), then ``fields``."""
    command = " ".join([f"python benchmarks/{name}.py", *sys.argv[1:]])
    return {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
            "command": command, **fields}  # fmt: skip


def title_lines(title: str, out: dict[str, Any]) -> list[str]:
    """The Markdown title and the date · machine · threads (· wall time) line."""
    wall = f" · wall {out['wall_seconds'] / 60:.1f} min" if "wall_seconds" in out else ""
    m = out["machine"]
    return [f"# {title}", "", f"{out['date']} · {m['platform']} · torch {m['torch']} · {m['threads']} thread{wall}", ""]


def table(columns: list[str], rows: Iterable[str]) -> list[str]:
    """A Markdown table: the header row, its separator, then ``rows`` (each already ``| a | b |``), and a blank
    line."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows, ""]


def write(out: dict[str, Any], md: list[str], stem: str | Path | None = None) -> None:
    """``<stem>.json`` and ``.md`` (default stem ``results/<benchmark>``; atomically), and the Markdown on stdout."""
    stem = Path(stem) if stem is not None else RESULTS / out["benchmark"]
    write_json(stem.with_name(stem.name + ".json"), out)
    write_text(stem.with_name(stem.name + ".md"), "\n".join(md))
    print("\n".join(md))
