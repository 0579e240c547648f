"""Whether a model's accuracy is no better than chance, as a plain function any task can call: a real result
(the run still succeeds), but one that must be said loudly, not reported as a success."""

from __future__ import annotations

from typing import Any, Iterable


def chance_level(accuracy: float, labels: Iterable[int], num_classes: int) -> dict[str, Any]:
    """``{"at_chance", "chance", "majority", "margin", "accuracy", "samples", "classes"}`` for an ``accuracy``
    measured on ``labels`` (class indices; negative ones are ignored). Chance is the better of a uniform guess
    and always answering the most frequent class; a model is at chance when its accuracy is no more than
    two standard errors above it (the rule the teacher check uses)."""
    ys = [int(y) for y in labels if int(y) >= 0]
    n = len(ys)
    counts: dict[int, int] = {}
    for y in ys:
        counts[y] = counts.get(y, 0) + 1
    majority = max(counts.values()) / n if n else 0.0
    chance = max(majority, 1.0 / max(num_classes, 1))
    margin = 2 * (chance * (1 - chance) / n) ** 0.5 if n else 0.0
    return {"at_chance": bool(n) and accuracy <= chance + margin, "accuracy": accuracy, "chance": chance,
            "majority": majority, "margin": margin, "samples": n, "classes": num_classes}  # fmt: skip


def chance_message(label: str, verdict: dict[str, Any], fix: str) -> str:
    """The loud line for a model at chance: what, why it matters, and ``fix``."""
    return (
        f"the {label} is at chance level ({100 * verdict['accuracy']:.1f}% on {verdict['classes']} classes; always "
        f"answering the most frequent class scores {100 * verdict['majority']:.1f}%): it learnt nothing usable, "
        f"although the run finished. Fix: {fix}"
    )


__all__ = ["chance_level", "chance_message"]
