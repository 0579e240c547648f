"""The files a finished classification run must still hold for a post-run command (eval, compress, export,
bench, report): checked, all of them, before the command writes anything, so that a deleted or truncated
weights file is named at once instead of after half the outputs are written (or, for the report, never)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.errors import RunDirError


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


def unreadable(path: Path) -> str | None:
    """Why a safetensors file cannot be read (missing, empty, truncated or corrupt), or None."""
    if not path.is_file():
        return "it is missing"
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except Exception as exc:  # safetensors raises its own kinds for a truncated or corrupt file
        return f"it is not a complete safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None


def check_run_files(run_dir: str | Path, command: str) -> None:
    """Refuse (``RunDirError``) when a weights file the finished run needs is missing or unreadable."""
    run_dir = Path(run_dir)
    bad = [(p, why) for p in required_files(run_dir) if (why := unreadable(p)) is not None]
    if not bad:
        return
    listed = "; ".join(f"{p} ({why})" for p, why in bad)
    raise RunDirError(
        f"a file of the finished run is missing or unreadable: {listed}. The run finished, but a file was deleted, "
        f"moved or cut short since, so distill {command} has no such model to work on (nothing was written). "
        f"Fix: rerun the recipe: distill run {run_dir / 'recipe.yaml'} --overwrite --set output.dir={run_dir}"
    )


__all__ = ["check_run_files", "required_files", "unreadable"]
