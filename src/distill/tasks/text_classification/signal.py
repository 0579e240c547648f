"""The teacher's signal: its logits on every split (kept in the run and in ``output.cache_dir``) and the check
that it is better than chance before it teaches."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.logs import log
from distill.errors import TeacherError
from distill.core.fsutil import atomic_path
from distill.tasks.text_classification import models as M
from distill.tasks.text_classification.data import LabelledTexts
from distill.tasks.text_classification.recipe import TextClassificationRecipe


def teacher_logits(recipe: TextClassificationRecipe, data: LabelledTexts, teacher: M.TextModel, folder: Path,
                   teacher_name: str, run_dir: Path, *, progress: bool) -> tuple[dict[str, np.ndarray], float]:  # fmt: skip
    """The teacher's logits on train / val / test (and the transfer set, when there is one) and the seconds its
    pass took. Kept in the run
    (``teacher_logits.npz``, with the example ids) and in ``output.cache_dir``, keyed by a hash of the teacher's
    files, the label order, the token limit and the texts: a second run of the same teacher on the same data
    reads them. Non-finite logits are an error that names the teacher (and are not cached)."""
    path = run_dir / "teacher_logits.npz"
    splits = {"train": data.train, "val": data.val, "test": data.test}
    if data.transfer is not None and len(data.transfer):
        splits["transfer"] = data.transfer
    cached = Path(recipe.output.cache_dir) / "text-logits" / f"{_logits_key(recipe, data, folder)}.npz"
    for source in (path, cached):
        stored = _read_logits(source, splits)
        if stored is not None:
            if source == cached:
                log.info("teacher logits: from the cache (%s)", cached)
                _write_logits(path, stored, splits)
            return {k: stored[k] for k in splits}, float(stored["seconds"])
    t0 = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    for k, s in splits.items():
        enc = M.encode(teacher.tokenizer, s.inputs(), recipe.data.max_length)
        out[k] = M.predict_logits(teacher, enc, recipe.teacher.batch_size, progress=progress, desc=f"teacher on {k}")
        bad = ~np.isfinite(out[k]).all(1)
        if bad.any():
            raise TeacherError(f"the teacher {teacher_name} gives non-finite logits (NaN or inf) on {int(bad.sum())} "
                               f"of {len(s)} {k} texts. Fix: check its weights (a fine-tuning that diverged, a corrupt "
                               "file); nothing was cached.")  # fmt: skip
    stored = {**out, "seconds": np.float64(time.perf_counter() - t0)}
    _write_logits(path, stored, splits)
    _write_logits(cached, stored, splits)
    return out, float(stored["seconds"])


def _logits_key(recipe: TextClassificationRecipe, data: LabelledTexts, folder: Path) -> str:
    from distill.core.fsutil import sha256_file

    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"} and p.name != "train.json":
            h.update(p.relative_to(folder).as_posix().encode() + sha256_file(p).encode())
    h.update(f"{recipe.data.max_length}|{'|'.join(data.label_names)}".encode())
    for s in (data.train, data.val, data.test):
        h.update("\n".join(s.ids).encode())
    if data.transfer is not None and len(data.transfer):
        h.update(("transfer\n" + "\n".join(data.transfer.ids)).encode())
    return h.hexdigest()[:24]


def _read_logits(path: Path, splits: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            stored = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        log.warning("teacher logits %s are unreadable (%s): computing them again", path, exc)
        return None
    if all(list(stored.get(f"{k}_ids", [])) == s.ids for k, s in splits.items()):
        return stored
    return None


def _write_logits(path: Path, stored: dict[str, np.ndarray], splits: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: stored[k] for k in (*splits, "seconds")}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, **{f"{k}_ids": np.array(s.ids) for k, s in splits.items()})


def check_against_chance(recipe: TextClassificationRecipe, data: LabelledTexts, teacher_name: str,
                         val_logits: np.ndarray) -> None:  # fmt: skip
    """Stop the run (with both numbers) when the teacher is within 2 points of always answering the most common
    class on the validation split, unless eval.allow_chance_teacher."""
    labels = data.val.labels
    acc = float((val_logits.argmax(1) == labels).mean())
    majority = float(np.bincount(labels).max() / len(labels))
    log.info("teacher: validation accuracy %.1f%% (majority class %.1f%%)", 100 * acc, 100 * majority)
    if acc <= majority + 0.02 and not recipe.eval.allow_chance_teacher:
        raise TeacherError(
            f"the teacher {teacher_name} is no better than chance on the validation split: accuracy "
            f"{100 * acc:.1f}% against {100 * majority:.1f}% for always answering the most common class. Its soft labels "
            "would teach nothing. Fix: check that it was fine-tuned on these labels (teacher.kind hf), fine-tune it longer "
            "(teacher.epochs, teacher.lr), or set eval.allow_chance_teacher: true if this is intended."
        )
