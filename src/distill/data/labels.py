"""Checks on the class labels of a labelled data set, as plain functions any task can call (tables, image
folders, text classification): spellings of one label that would become separate classes, and classes too
small to be split into train / validation / test."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

MIN_PER_CLASS = 3  # one sample for each of train, validation and test


def label_variants(names: Iterable[Any]) -> list[list[str]]:
    """Groups of distinct labels that differ only by surrounding whitespace or by case (``"pos"``,
    ``"pos "``, ``"POS"``): each group would become several classes of what is one. Labels are compared as
    text; a group lists its spellings as given, sorted; groups are sorted by their first spelling."""
    groups: dict[str, set[str]] = {}
    for name in names:
        text = str(name)
        groups.setdefault(text.strip().casefold(), set()).add(text)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def variants_message(groups: Sequence[Sequence[str]], where: str, counts: dict[str, int] | None = None) -> str:
    """The error for :func:`label_variants`' groups: what, why, and the fix."""
    counts = counts or {}

    def spell(g: Sequence[str]) -> str:
        return " / ".join(f"{v!r}" + (f" ({counts[v]} rows)" if v in counts else "") for v in g)

    shown = "; ".join(spell(g) for g in groups[:5]) + (f"; and {len(groups) - 5} more" if len(groups) > 5 else "")
    return (
        f"{where} spells one label in several ways that differ only by surrounding spaces or case: {shown}. "
        "Each spelling would be a class of its own, so the model would be taught to tell a class from itself. "
        "Fix: clean the labels (strip the spaces, one spelling per class) and run again."
    )


def small_classes(labels: Iterable[Any], minimum: int = MIN_PER_CLASS) -> dict[str, int]:
    """The classes with fewer than ``minimum`` samples (name -> count), in label order."""
    counts = Counter(str(v) for v in labels)
    return {name: n for name, n in sorted(counts.items()) if n < minimum}


def small_classes_message(small: dict[str, int], where: str, minimum: int = MIN_PER_CLASS) -> str:
    """The error for :func:`small_classes`: what, why, and the fix."""
    items = list(small.items())
    shown = ", ".join(f"{name!r} ({n})" for name, n in items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
    return (
        f"{where} has classes with fewer than {minimum} samples: {shown}. Each class needs at least {minimum} "
        "(one for each of the train, validation and test splits), or it cannot be learnt and measured. "
        "Fix: add samples of these classes, or drop (or merge) them."
    )


__all__ = ["MIN_PER_CLASS", "label_variants", "small_classes", "small_classes_message", "variants_message"]
