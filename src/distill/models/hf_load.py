"""What transformers' ``from_pretrained(..., output_loading_info=True)`` reports, checked: weights a folder lacks
(or holds in another shape) would be used at their random initialisation, a half-trained model that runs
without a word. Shared by the sentence encoders and the causal language models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from distill.errors import DistillError, ModelError


def check_loading_info(folder: Path, model: Any, info: dict[str, Any], *, fix: str, what: str = "model",
                       unused: Iterable[str] = (), error: type[DistillError] = ModelError) -> None:  # fmt: skip
    """Raise ``error`` (a :class:`ModelError` unless told; ending in ``Fix: {fix}``) when ``info`` lists missing or
    mis-shaped tensors; a missing tensor whose name contains one of ``unused`` (e.g. ``"pooler."``) is allowed."""
    skip = tuple(unused)
    missing = sorted(str(k) for k in info.get("missing_keys") or [] if not any(u in f".{k}" for u in skip))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        names = missing + mismatched
        raise error(
            f"the weights in {folder} do not fill {type(model).__name__}: {len(missing)} tensor(s) missing and "
            f"{len(mismatched)} of another shape ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
            f"transformers would initialise them at random, a half-trained {what}. Fix: {fix}"
        )


def not_single_label(config: Any) -> str | None:
    """Why a classifier's logits are not one softmax over its labels (its ``problem_type`` says multi-label: one
    sigmoid per label; or regression), or None. Distilling such logits as class probabilities misreads them."""
    kind = getattr(config, "problem_type", None)
    if kind == "multi_label_classification":
        why = ("its config.json says problem_type multi_label_classification: its outputs are independent yes/no "
               "scores, one sigmoid per label, not one choice among the labels")  # fmt: skip
    elif kind == "regression" or int(getattr(config, "num_labels", 2) or 2) < 2:
        why = "it is a regression model (problem_type regression, or one output), not a classifier"
    else:
        return None
    return f"{why}. distill gives each sample one class (a softmax over the classes), so these outputs would be " \
        "misread as class probabilities"


__all__ = ["check_loading_info", "not_single_label"]
