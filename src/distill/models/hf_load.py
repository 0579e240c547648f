"""What transformers' ``from_pretrained(..., output_loading_info=True)`` reports, checked: weights a folder lacks
(or holds in another shape) would be used at their random initialisation, a half-trained model that runs
without a word. Shared by the sentence encoders and the causal language models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from distill.errors import ModelError


def check_loading_info(folder: Path, model: Any, info: dict[str, Any], *, fix: str, what: str = "model",
                       unused: Iterable[str] = ()) -> None:  # fmt: skip
    """Raise a :class:`ModelError` (ending in ``Fix: {fix}``) when ``info`` lists missing or mis-shaped tensors;
    a missing tensor whose name contains one of ``unused`` (e.g. ``"pooler."``) is allowed."""
    skip = tuple(unused)
    missing = sorted(str(k) for k in info.get("missing_keys") or [] if not any(u in f".{k}" for u in skip))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        names = missing + mismatched
        raise ModelError(
            f"the weights in {folder} do not fill {type(model).__name__}: {len(missing)} tensor(s) missing and "
            f"{len(mismatched)} of another shape ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
            f"transformers would initialise them at random, a half-trained {what}. Fix: {fix}"
        )


__all__ = ["check_loading_info"]
