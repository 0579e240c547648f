"""The run directory's lifecycle, the same for every task.

1. :func:`plan_run_dir` decides, changing nothing, what to do with ``recipe.run_dir``: create it,
   replace it (``--overwrite``) or resume it (``--resume``). It runs after the task's preflight, so
   that an input the preflight can check never leaves a directory behind.
2. :func:`prepare_run_dir` carries the plan out: the directory, ``recipe.yaml`` and ``status.json``
   (``{"state": "running"}``).
3. :func:`lifecycle` wraps the rest of the run: an error marks the directory ``failed`` with the
   reason, Ctrl-C marks it ``interrupted``, the end marks it ``done``.

A failed run can be resumed with a corrected recipe: the keys that changed are logged, and every
stage whose inputs changed (the task's ``stages`` table: role → recipe keys it depends on, files it
left) is trained again; the others are kept. An interrupted or finished run resumes only with the
recipe it started with, so that a resumed run is bit-exact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.core.logs import log_to_file
from distill.errors import DistillError, RunDirError
from distill.core.fsutil import file_in_the_way, write_json, write_text

log = logging.getLogger("distill")
STATUS = "status.json"

# role -> (recipe key prefixes its result depends on, files and folders it leaves, relative to run_dir)
Stages = Mapping[str, tuple[Sequence[str], Sequence[str]]]


@dataclass(frozen=True)
class Plan:
    decision: str  # "create", "replace" or "resume"
    changed: frozenset[str] = field(default_factory=frozenset)  # recipe keys changed since a failed attempt


def stored_recipe(run_dir: str | Path) -> dict[str, Any]:
    """The raw ``recipe.yaml`` of a run directory; a path that is not a run is named as such."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"run directory not found: {run_dir}. Fix: pass the folder `distill run` wrote (e.g. runs/NAME).")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory. Fix: pass the folder `distill run` wrote (e.g. runs/NAME).")
    stored = run_dir / "recipe.yaml"
    if not stored.is_file():
        raise RunDirError(
            f"{run_dir} is not a distill run directory: it has no recipe.yaml. "
            "Fix: pass the folder `distill run` wrote (e.g. runs/NAME)."
        )
    try:
        raw = yaml.safe_load(stored.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise RunDirError(f"{stored} cannot be read ({type(exc).__name__}: {exc}). Fix: rerun the recipe.") from None
    if not isinstance(raw, dict):
        raise RunDirError(f"{stored} is not a recipe (a mapping of sections). Fix: rerun the recipe.")
    return raw


# ------------------------------------------------------------ files of a finished run
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".bin", ".npy")


def unreadable(path: Path) -> str | None:
    """Why a file of a finished run cannot be read (missing, empty, a weights file truncated or corrupt), or None.
    Weights are checked through their headers, not read: safetensors' header must cover the file to its end,
    torch's zip directory must be whole, numpy's header must match the file's size (the command reads them after)."""
    if not path.is_file():
        return "it is missing"
    if path.stat().st_size == 0:
        return "it is empty"
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:  # validates the header against the file's size
                f.keys()
        elif path.suffix in {".pt", ".bin"}:
            import torch

            torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        elif path.suffix == ".npy":
            import numpy as np

            np.load(str(path), mmap_mode="r", allow_pickle=False)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # each reader raises its own kinds for a truncated or corrupt file
        return f"it is not a complete {path.suffix[1:]} file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None


def folder_files(folder: Path, needs: Sequence[str] = ()) -> list[Path]:
    """The files of a saved model folder a post-run command reads: ``needs`` (names in it) and every weights file
    in it; a folder without any weights file stands for one (``model.safetensors``), so it is named missing."""
    named = [folder / n for n in needs]
    weights = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if folder.is_dir() else []
    if not weights and not any(p.suffix in WEIGHT_SUFFIXES for p in named):
        weights = [folder / "model.safetensors"]
    return named + [p for p in weights if p not in named]


def check_run_files(run_dir: str | Path, paths: Sequence[Path], command: str | None = None) -> None:
    """Refuse (``RunDirError``) when a file the finished run left, which a post-run command reads, is missing or
    unreadable; every such file is named, before the command writes anything. (A command on a finished run
    never makes such a file anew: that would be another model than the one the run measured.)"""
    run_dir = Path(run_dir)
    bad = [(p, why) for p in paths if (why := unreadable(Path(p))) is not None]
    if not bad:
        return
    listed = "; ".join(f"{p} ({why})" for p, why in bad)
    what = f"distill {command}" if command else "this command"
    raise RunDirError(
        f"a file of the finished run is missing or unreadable: {listed}. The run finished, but a file was deleted, "
        f"moved or cut short since, so {what} has no such model to work on (nothing was written). Fix: rerun the "
        f"recipe: distill run {run_dir / 'recipe.yaml'} --overwrite --set output.dir={run_dir}, or restore the file."
    )


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def mark(run_dir: Path, state: str, reason: str | None = None) -> None:
    """Record the run's state (running, failed, interrupted, done) in ``status.json``, atomically."""
    status: dict[str, Any] = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if reason:
        status["reason"] = reason
    write_json(run_dir / STATUS, status)


def diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    """The dotted keys where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return set() if a == b else {prefix or "(root)"}


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    recipe = dict(recipe)
    recipe.pop("output", None)  # where it is written, not what is computed
    return recipe


def plan_run_dir(recipe: Any, resume: bool, overwrite: bool) -> Plan:
    """What to do with the run directory, changing nothing (every process of a run reaches the same)."""
    run_dir = recipe.run_dir
    check_places(run_dir, getattr(recipe.output, "cache_dir", None))
    if not (run_dir.exists() and any(run_dir.iterdir())):
        return Plan("create")
    status = read_status(run_dir) or {}
    failed = status.get("state") == "failed"
    if resume:
        stored = run_dir / "recipe.yaml"
        if not stored.exists():
            raise RunDirError(f"cannot resume {run_dir}: it has no recipe.yaml, so it is not a distill run directory.")
        try:
            before = yaml.safe_load(stored.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RunDirError(f"cannot resume {run_dir}: its recipe.yaml is unreadable ({exc}). Fix: --overwrite.") from None
        changed = diff_keys(_comparable(before if isinstance(before, dict) else {}), _comparable(recipe.to_dict()))
        if changed and not failed:
            shown = ", ".join(sorted(changed)[:8])
            raise RunDirError(
                f"cannot resume {run_dir}: the recipe differs from the one the run started with (changed: {shown}). "
                "Fix: resume with the same recipe and --set options, or start a new run with --overwrite or another "
                "output.dir."
            )
        return Plan("resume", frozenset(changed))
    if overwrite or recipe.output.overwrite:
        return Plan("replace")
    if failed:
        reason = (status.get("reason") or "no reason recorded").splitlines()[0]
        raise RunDirError(
            f"the run directory {run_dir} holds a failed run ({reason}). Fix: correct the input, then add --resume "
            "to continue it (stages whose inputs did not change are kept), or --overwrite to start over."
        )
    raise RunDirError(
        f"the run directory {run_dir} already exists. Fix: add --resume to continue it, "
        "--overwrite to replace it, or --set output.dir=OTHER."
    )


def check_places(run_dir: Path, cache_dir: str | Path | None) -> None:
    """The run directory and the cache folder can be made and written: neither is (or lies under) a file, and
    the nearest existing folder above each is writable. Checked before anything is written."""
    import os

    for key, place in (("output.dir", Path(run_dir)), ("output.cache_dir", Path(cache_dir) if cache_dir else None)):
        if place is None:
            continue
        if place.exists() and not place.is_dir():
            raise RunDirError(f"{key} {place} is a file, not a folder. Fix: --set {key}=ANOTHER_PATH.")
        blocker = file_in_the_way(place)
        if blocker is not None and blocker != place:
            raise RunDirError(f"{key} {place} lies under {blocker}, which is a file. Fix: --set {key}=ANOTHER_PATH.")
        existing = next((p for p in (place, *place.parents) if p.exists()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunDirError(
                f"{key} {place} cannot be written: {existing} is read-only or you may not write there. "
                f"Fix: --set {key}=A_WRITABLE_PATH."
            )


def prepare_run_dir(recipe: Any, plan: Plan | str, stages: Stages | None = None) -> Path:
    """Carry out ``plan``: create or replace the directory, or, resuming a failed run with a corrected
    recipe, drop what the changed keys invalidate. Writes ``recipe.yaml`` and marks it running."""
    plan = Plan(plan) if isinstance(plan, str) else plan
    run_dir: Path = recipe.run_dir
    try:
        if plan.decision == "replace":
            shutil.rmtree(run_dir)
        if plan.decision in {"create", "replace"}:
            run_dir.mkdir(parents=True, exist_ok=True)
        log_to_file(run_dir)
        if plan.decision != "resume" or plan.changed:
            if plan.changed:
                log.info("resuming a failed run with a changed recipe: %s", ", ".join(sorted(plan.changed)))
                invalidate(run_dir, plan.changed, stages or {})
            write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        mark(run_dir, "running")
    except DistillError:
        raise
    except OSError as exc:
        raise RunDirError(
            f"cannot write the run directory {run_dir}: {exc.strerror or exc}. Fix: choose a writable place with "
            "--set output.dir=PATH."
        ) from None
    return run_dir


def invalidate(run_dir: Path, changed: set[str] | frozenset[str], stages: Stages) -> list[str]:
    """Remove the files of every stage that depends on a changed key; return the roles dropped."""
    dropped = []
    for role, (depends, files) in stages.items():
        hit = sorted(k for k in changed if any(k == d or k.startswith(d + ".") or d.startswith(k + ".") for d in depends))
        if not hit:
            continue
        for rel in files:
            path = run_dir / rel
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        log.info("  %s: depends on %s, so it is trained again", role, ", ".join(hit[:4]))
        dropped.append(role)
    return dropped


@contextlib.contextmanager
def lifecycle(run_dir: Path, *, main_process: bool = True) -> Iterator[None]:
    """Mark ``run_dir`` failed (with the reason) or interrupted when the block raises; done when it ends."""
    try:
        yield
    except KeyboardInterrupt:
        if main_process:
            mark(run_dir, "interrupted", "stopped by the user (Ctrl-C)")
        raise
    except DistillError as exc:
        if main_process:
            mark(run_dir, "failed", str(exc))
            # run.log keeps the reason; the console shows it once, as the command's error
            log.error("the run failed: %s\nFix the input, then continue with --resume.", str(exc),
                      extra={"file_only": True})
        raise
    except BaseException as exc:
        if main_process:
            mark(run_dir, "failed", f"{type(exc).__name__}: {exc}")
        raise
    if main_process:
        mark(run_dir, "done")
