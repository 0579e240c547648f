"""The files a finished classification run must still hold for a post-run command (eval, compress, export,
bench, report): checked, all of them, before the command writes anything, so that a deleted or truncated
weights file is named at once instead of after half the outputs are written (or, for the report, never)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml



def required_files(run_dir: Path) -> list[Path]:
    """The weights of every model the run reports: its torch teacher, the students (baseline included
    when it was trained), read from the run's metrics.json and recipe.yaml."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return []  # what is missing or broken there is named by the command's own reading
    roles = {str(r.get("role")) for r in metrics.get("models", []) if isinstance(r, dict)} or {"teacher", "student"}
    names = ["student.safetensors"]
    if "baseline" in roles:
        names.append("baseline.safetensors")
    teacher = recipe.get("teacher") or {}
    if "teacher" in roles and isinstance(teacher, dict) and teacher.get("kind", "torch") == "torch":
        names.insert(0, "teacher.safetensors")
    return [run_dir / n for n in names]


def check_run_files(run_dir: str | Path, command: str) -> None:
    """Refuse (``RunDirError``) when a weights file the finished run needs is missing or unreadable."""
    from distill.core.rundir import check_run_files as check

    check(run_dir, required_files(Path(run_dir)), command)


__all__ = ["check_run_files", "required_files"]
