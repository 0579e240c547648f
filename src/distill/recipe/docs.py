"""A recipe schema's documentation, generated from its fields: the commented example printed by
``distill recipe --example`` and the field table of ``distill recipe --fields`` (and the docs site's
reference). A task reaches these through :meth:`distill.core.task.Task.fields_markdown` and
:meth:`~distill.core.task.Task.example_yaml`."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from distill.recipe.load import validate


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _emit(model_cls: type[BaseModel], values: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, field in model_cls.model_fields.items():
        desc = field.description or ""
        value = values.get(name, field.get_default(call_default_factory=True))
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        sub = _submodel(field.annotation)
        lines.append(f"{pad}# {desc}")
        if sub is not None and isinstance(value, dict):
            lines.append(f"{pad}{name}:")
            _emit(sub, value, indent + 1, lines)
        elif name == "distill":
            lines.append(f"{pad}{name}:")
            from distill.losses import REGISTRY

            for term in value:
                term = term.model_dump() if isinstance(term, BaseModel) else term
                spec = REGISTRY[term["loss"]]
                lines.append(f"{pad}  # {term['loss']}: {spec.summary}")
                lines.append(f"{pad}  - {_yaml_scalar(term)}")
        else:
            lines.append(f"{pad}{name}: {_yaml_scalar(value)}")


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (also when optional); None for lists and plain values."""
    if getattr(annotation, "__origin__", None) is list:
        return None
    for a in (annotation, *(getattr(annotation, "__args__", ()) or ())):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def fields_markdown(root: type[BaseModel]) -> str:
    """Every field of the recipe schema ``root`` as a Markdown table (path, default, meaning)."""
    rows = ["| field | default | meaning |", "|---|---|---|"]

    def walk(model_cls: type[BaseModel], prefix: str) -> None:
        for name, field in model_cls.model_fields.items():
            path = f"{prefix}{name}"
            sub = _submodel(field.annotation)
            if sub is not None:
                rows.append(f"| `{path}` | | {field.description or ''} |")
                walk(sub, path + ".")
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, list) and default and isinstance(default[0], BaseModel):
                default = [d.model_dump() for d in default]
            shown = _yaml_scalar(default).replace("|", "\\|")
            rows.append(f"| `{path}` | `{shown}` | {field.description or ''} |")
            if name == "distill":
                term = field.annotation.__args__[0]  # list[LossTerm]: the task's term model
                rows.append("| `distill[].loss` | | " + (term.model_fields["loss"].description or "") + " |")
                rows.append("| `distill[].weight` | `1.0` | " + (term.model_fields["weight"].description or "") + " |")
                rows.append("| `distill[].<param>` | | Parameters of the loss, e.g. `temperature` for kd (`distill methods`). |")

    walk(root, "")
    return "\n".join(rows) + "\n"


def example_yaml(root: type[BaseModel], example: dict[str, Any]) -> str:
    """The recipe ``example`` of schema ``root`` as YAML with every field's documentation as a comment."""
    lines = [
        "# distill recipe: one file describes a run (validate it with `distill recipe --check FILE`).",
        "# Any field can be overridden on the command line: --set train.epochs=3",
    ]
    validate(root, example)  # the example must always be valid
    _emit(root, example, 0, lines)
    return "\n".join(lines) + "\n"
