"""The embedding task's students: built from the teacher (its layers, a narrower encoder, or a static
table), trained, saved, loaded and called as they run at inference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.core.checkpoint import CheckpointStore
from distill.models.sentence import (
    SentenceEncoder,
    layer_selected_student,
    load_sentence_encoder,
    narrow_student,
    save_sentence_encoder,
)
from distill.tasks.embedding.recipe import EmbedStudentConfig, EmbeddingRecipe


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build_student(spec: EmbedStudentConfig, teacher: SentenceEncoder, train_texts: list[str], *, progress: bool,
                  context: tuple[np.ndarray, np.ndarray] | None = None) -> Any:  # fmt: skip
    if spec.kind == "layers":
        student = layer_selected_student(teacher, spec.layers or [], ffn_keep=spec.ffn_keep)
        if spec.heads_keep < 1:
            from distill.compress.heads import prune_heads

            student = prune_heads(student, 1.0 - spec.heads_keep)[0]
        return student
    if spec.kind == "narrow":
        return narrow_student(teacher, layers=spec.num_layers, hidden=spec.hidden, heads=spec.heads,
                              seed=(spec.train.seed if spec.train else 0))  # fmt: skip
    from distill.tasks.embedding.static_build import build_static

    return build_static(teacher, dim=spec.dim, weighting=spec.weighting, corpus=train_texts,
                        extend_vocab=spec.extend_vocab, progress=progress, anchor=spec.anchor,
                        pair_min_count=spec.pair_min_count,
                        context=context if spec.init == "context" else None)  # fmt: skip


def train_student(
    recipe: EmbeddingRecipe, spec: EmbedStudentConfig, student: Any, teacher: SentenceEncoder, texts: list[str],
    targets: np.ndarray, ckpt: CheckpointStore, *, resume: bool, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    cfg = recipe.train_of(spec)
    if spec.kind == "static":
        if not spec.finetune or cfg.epochs == 0:
            return {"seconds": 0.0, "epochs": 0}
        from distill.tasks.embedding.static_training import finetune_static
        from distill.tasks.embedding.training import DEFAULT_LR

        stats = finetune_static(student, texts, torch.as_tensor(targets), epochs=cfg.epochs, lr=cfg.lr or DEFAULT_LR["static"],
                                batch_size=cfg.batch_size, seed=cfg.seed, relational=cfg.relational, pair_lr=cfg.pair_lr,
                                time_budget_s=cfg.max_minutes * 60 if cfg.max_minutes else None, progress=progress)  # fmt: skip
        return {"seconds": float(stats["seconds"]), "epochs": stats["epochs"], "final_loss": stats.get("final_loss")}
    from distill.tasks.embedding.training import fit_encoder

    fit = fit_encoder(student, texts, targets, cfg, kind=spec.kind, teacher=teacher,
                      kept_layers=spec.layers if spec.kind == "layers" else None, checkpoint=ckpt, resume=resume,
                      progress=progress)  # fmt: skip
    return {"seconds": fit.seconds, "epochs": fit.epochs_done, "steps": fit.steps, "stopped_by_time": fit.stopped_by_time,
            "history": fit.history}  # fmt: skip


def student_encoder(spec: EmbedStudentConfig, student: Any, out_dir: Path) -> Callable[[list[str]], np.ndarray]:
    """How a saved student encodes at inference: a static one through the light format (numpy), the others
    through their sentence-transformers module."""
    if spec.kind == "static":
        from distill.tasks.embedding.static_model import StaticModel

        light = StaticModel.from_dir(out_dir)
        return lambda xs: light.encode(xs)
    return lambda xs: student.encode(xs, batch_size=64)


def save_student(spec: EmbedStudentConfig, student: Any, out_dir: Path) -> None:
    if spec.kind == "static":
        from distill.tasks.embedding.static_embed import save_static

        save_static(student, None, out_dir, dtype=spec.save_dtype)
    else:
        save_sentence_encoder(student, out_dir)


def load_student(spec: EmbedStudentConfig, out_dir: Path) -> Any:
    """A saved student of kind ``spec.kind`` from its folder (static: the light format; else sentence-transformers)."""
    if spec.kind == "static":
        from distill.tasks.embedding.static_embed import load_static

        return load_static(out_dir)
    return load_sentence_encoder(out_dir)
