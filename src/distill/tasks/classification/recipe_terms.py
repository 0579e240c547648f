"""The classification recipe's objective: its weighted loss terms (checked against the loss registry) and the
transfer settings (classes left out, the share of samples that keep their label)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.recipe.base import Section


class LossTerm(BaseModel):
    """One weighted term of the distillation objective; extra keys are the loss's parameters."""

    model_config = ConfigDict(extra="allow")

    loss: str = Field(description="Name of the loss (see `distill methods`).")
    weight: float = Field(1.0, ge=0, description="Weight of the term in the weighted sum.")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_loss(self) -> "LossTerm":
        from distill.losses import REGISTRY  # lazy: the registry is the source of truth

        if self.loss not in REGISTRY:
            hint = difflib.get_close_matches(self.loss, list(REGISTRY), n=1)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ValueError(
                f"unknown loss {self.loss!r}{did} Known: {', '.join(sorted(REGISTRY))} (`distill methods`)"
            )
        spec = REGISTRY[self.loss]
        unknown = sorted(set(self.params) - set(spec.params))
        if unknown:
            allowed = ", ".join(sorted(spec.params)) or "none"
            raise ValueError(
                f"loss {self.loss!r} has no parameter {', '.join(map(repr, unknown))}; its parameters: {allowed}"
            )
        missing = [k for k in spec.required if k not in self.params]
        if missing:
            raise ValueError(
                f"loss {self.loss!r} needs {', '.join(missing)} (module paths of the layers to match; "
                "`distill layers RECIPE` lists them)"
            )
        for key, value in self.params.items():
            problem = spec.check(key, value)
            if problem:
                raise ValueError(f"{key} {problem}")
        return self


def default_terms() -> list[LossTerm]:
    return [LossTerm(loss="kd", weight=0.5, temperature=2.0), LossTerm(loss="ce", weight=0.5)]


class TransferConfig(Section):
    exclude_classes: list[int] = Field(
        default_factory=list,
        description="Classes left out of the students' training split entirely (the teacher still learns "
        "them): Hinton's omitted-class experiment. The report then gives accuracy on those classes before and "
        "after a bias correction tuned on the validation split.",
    )
    labeled_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the students' training samples that keep their hard label (seeded); the others "
        "are unlabeled: the distilled student learns them from the teacher's soft labels, the hard-label "
        "baseline trains on the labeled share only.",
    )
    seed: int = Field(0, description="Seed of the choice of labeled samples.")
