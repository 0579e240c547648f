"""What the classification report and model card read from a finished run directory.

- ``metrics.json`` and ``comparison.json`` (required), ``comparison.md`` and ``recipe.yaml`` (optional);
- ``predictions.safetensors``: test labels and each model's test logits, when the run wrote it;
- the recipe's loss terms, with every parameter resolved (and the KD temperature among them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from distill.errors import RunDirError

ROLES = ("teacher", "baseline", "student")


@dataclass
class RunData:
    """What a report needs from a run directory (plain values; missing pieces are None/empty)."""

    run_dir: Path
    metrics: dict[str, Any]
    table: dict[str, Any]
    recipe: dict[str, Any]
    table_markdown: str = ""
    labels: np.ndarray | None = None  # (N,) int64 test labels
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (N, C) float32 test logits

    @property
    def name(self) -> str:
        return str(self.metrics.get("name") or self.recipe.get("name") or self.run_dir.name)

    @property
    def class_names(self) -> list[str]:
        names = (self.metrics.get("data") or {}).get("class_names")
        if names:
            return [str(c) for c in names]
        c = self._num_classes()
        return [str(i) for i in range(c)] if c else []

    def _num_classes(self) -> int | None:
        c = (self.metrics.get("data") or {}).get("num_classes")
        if c:
            return int(c)
        if self.logits:
            return int(next(iter(self.logits.values())).shape[1])
        return None

    @property
    def is_classification(self) -> bool:
        return self.labels is not None and "teacher" in self.logits and bool(self.class_names)

    @property
    def histories(self) -> dict[str, list[dict[str, Any]]]:
        hist = dict(self.metrics.get("history") or {})
        for role in ROLES:
            p = self.run_dir / "history" / f"{role}.json"
            if not hist.get(role) and p.exists():
                hist[role] = json.loads(p.read_text())
        return {r: hist.get(r) or [] for r in ROLES if r in hist or r != "baseline"}

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.table.get("models") or [])

    def model(self, role: str) -> dict[str, Any] | None:
        return next((m for m in self.models if m.get("role") == role), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}). Fix: rerun `distill run` for this recipe.") from None


def read_run(run_dir: str | Path) -> RunData:
    """Load what the report and model card need from a finished run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(
            f"run directory not found: {run_dir}. Fix: pass the folder `distill run` wrote (e.g. runs/NAME)."
        )
    missing = [n for n in ("metrics.json", "comparison.json") if not (run_dir / n).exists()]
    if missing:
        raise RunDirError(
            f"{run_dir} has no {' or '.join(missing)}: the run did not finish. "
            "Fix: finish it with `distill run RECIPE --resume`."
        )
    metrics = _read_json(run_dir / "metrics.json")
    table = _read_json(run_dir / "comparison.json")
    recipe_path = run_dir / "recipe.yaml"
    recipe = (yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}) if recipe_path.exists() else {}
    md_path = run_dir / "comparison.md"
    data = RunData(run_dir, metrics, table, recipe, md_path.read_text(encoding="utf-8") if md_path.exists() else "")
    pred = run_dir / "predictions.safetensors"
    if pred.exists():
        from safetensors.numpy import load_file

        tensors = load_file(str(pred))
        if "test_labels" in tensors:
            data.labels = tensors["test_labels"].astype(np.int64)
        for key, value in tensors.items():
            if key.startswith("test_logits."):
                data.logits[key.split(".", 1)[1]] = value.astype(np.float32)
    return data


def loss_terms(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipe's distill terms with every loss parameter resolved (registry defaults filled in)."""
    from distill.losses import REGISTRY

    terms = []
    for raw in recipe.get("distill") or []:
        term = dict(raw)
        spec = REGISTRY.get(term.get("loss"))
        if spec is not None:
            params = {k: v for k, v in term.items() if k not in {"loss", "weight"}}
            term = {"loss": term["loss"], "weight": term.get("weight", 1.0), **spec.resolved(params)}
        terms.append(term)
    return terms


def kd_temperature(recipe: dict[str, Any]) -> float | None:
    """The temperature of the recipe's first loss term that has one (e.g. kd), or None."""
    for term in loss_terms(recipe):
        if term.get("temperature") is not None:
            return float(term["temperature"])
    return None
