"""Reading a recipe against a given schema: YAML, ``--set`` overrides, and validation that reports every
problem at once, each naming the field as written (``train.batch_size``, ``distill[0].temperature``), what
was wrong, and how to fix it.

Which schema a recipe has (its ``task`` key, through the one task table) is :mod:`distill.core.recipes`'
business, not this module's: the recipe layer knows no task."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distill.errors import RecipeError


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"function-after", "function-before"} or str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_FIXES = {
    "extra_forbidden": "remove it or check its spelling",
    "missing": "add it",
    "literal_error": "use one of the listed values",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
}


def _known_keys(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        cand = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not cand:
            return []
        model = cand[0]
    return list(getattr(model, "model_fields", {}))


def _format_error(err: dict[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(err.get("loc", ()))
    path = _loc_to_path(loc)
    kind = err.get("type", "")
    given = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        keys = _known_keys(loc, root)
        hint = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        known = f"; known keys here: {', '.join(keys)}" if keys else ""
        return f"{path}: unknown key{did}{known}. Fix: remove it or correct its spelling."
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values())) if ctx else "?"
        return f"{path} must be {op} {bound} (got {given!r}). Fix: {_FIXES[kind]}."
    if kind == "literal_error":
        return f"{path} must be one of {ctx.get('expected', '?')} (got {given!r}). Fix: {_FIXES[kind]}."
    if kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
        return f"{path}: {msg}."
    if kind == "missing":
        return f"{path} is required. Fix: add it."
    msg = err.get("msg", "invalid value")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{path}: {msg}{shown}. Fix: {_FIXES.get(kind, 'correct the value')}."


def validate(schema: type[BaseModel], raw: Any, source: str | None = None) -> Any:
    """Validate a raw mapping into ``schema``, reporting every problem at once (one :class:`RecipeError`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(
            [f"the recipe must be a mapping of sections (data, teacher, ...), got {type(raw).__name__}"], source
        )
    try:
        return schema.model_validate(copy.deepcopy(raw))
    except ValidationError as exc:
        problems = [_format_error(e, schema) for e in exc.errors(include_url=False)]
        raise RecipeError(problems, source) from None


# -------------------------------------------------------------- overrides
def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (YAML-parsed values) to a copy of ``raw``.

    List items are addressed by index: ``distill.0.temperature=2``.
    """
    out = copy.deepcopy(raw) if raw else {}
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
            continue
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        parts = [p for p in key.split(".") if p]
        if not parts:
            problems.append(f"--set {item!r}: empty key")
            continue
        node: Any = out
        ok = True
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    problems.append(f"--set {key}: {part!r} is not an index of the list (0..{len(node) - 1})")
                    ok = False
                    break
                node = node[int(part)]
                continue
            if part not in node or node[part] is None:
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                problems.append(f"--set {key}: {part!r} is a value, not a section")
                ok = False
                break
        if not ok:
            continue
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                problems.append(f"--set {key}: {last!r} is not an index of the list (0..{len(node) - 1})")
                continue
            node[int(last)] = value
        else:
            node[last] = value
    if problems:
        raise RecipeError(problems, "--set")
    return out


def with_list_defaults(schema: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the lists it leaves at their default written out, so that ``--set distill.0.x=..`` can
    address them: the schema names those defaults (``raw_defaults()``, e.g. classification's ``distill``
    terms)."""
    defaults = schema.raw_defaults() if hasattr(schema, "raw_defaults") else {}
    missing = {k: v for k, v in defaults.items() if k not in raw}
    return {**raw, **missing} if missing else raw


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The mapping a recipe file holds; a missing file, bad encoding or bad YAML is a :class:`RecipeError`."""
    source = str(path)
    p = Path(path)
    if p.is_dir():
        raise RecipeError([_folder_not_recipe(p)], source)
    if not p.is_file():
        raise RecipeError([f"file not found: {p}. Fix: check the path, or run `distill recipe --example > recipe.yaml`."], source)
    try:
        text = p.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise RecipeError(["the file is not UTF-8 text. Fix: save it as UTF-8."], source) from None
    except yaml.YAMLError as exc:
        raise RecipeError([f"not valid YAML: {exc}. Fix: correct the YAML syntax at that line."], source) from None
    if raw is None:  # 0 bytes, blank or only comments: running every default would hide a wrong file
        raise RecipeError([
            "the recipe file is empty (it holds no settings, only blank lines or comments), so a run would train "
            "every default (digits) instead of what you meant. Fix: write the recipe into it (`distill recipe "
            "--example > recipe.yaml` gives one), or check that this is the file you meant."
        ], source)
    if not isinstance(raw, dict):
        raise RecipeError([f"the recipe must be a mapping of sections, got {type(raw).__name__}"], source)
    return raw


def _folder_not_recipe(p: Path) -> str:
    """What to say when a recipe path is a folder: a run directory points at its recipe.yaml."""
    if (p / "recipe.yaml").is_file():
        return (f"{p} is a folder (a run directory), not a recipe file. Fix: give its recipe, {p / 'recipe.yaml'}, "
                "or a command that takes a run directory (eval, compress, export, bench, report).")  # fmt: skip
    yamls = sorted(q.name for q in p.glob("*.y*ml"))[:5]
    inside = f" It holds {', '.join(yamls)}." if yamls else ""
    return f"{p} is a folder, not a recipe file.{inside} Fix: give the path of a recipe .yaml file."

