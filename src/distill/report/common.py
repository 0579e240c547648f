"""What the task reports share: reading a finished run of a given task, number formatting, the page
template, matplotlib figures as PNG, and the teacher's licence line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from distill.errors import RunDirError, UnsupportedError
from distill.report.card import licence_status
from distill.report.plots import figure_png, new_figure  # noqa: F401 (the task reports take them from here)



def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}). Fix: rerun the recipe with `distill run RECIPE`.") from None


def load_task_run(run_dir: str | Path, task: str) -> tuple[Path, dict[str, Any], dict[str, Any], str]:
    """``(run_dir, metrics, recipe, recipe_text)`` of a finished run of ``task``.

    Raises :class:`RunDirError` when the folder or its ``metrics.json`` is missing, and
    :class:`UnsupportedError` when the run is of another task."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}. Fix: pass the folder `distill run` wrote (e.g. runs/NAME).")
    if not (run_dir / "metrics.json").is_file():
        raise RunDirError(
            f"{run_dir} has no metrics.json: the run did not finish, so there is nothing to report. "
            f"Fix: finish it with `distill run RECIPE --resume --set output.dir={run_dir}`."
        )
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        raise RunDirError(f"{run_dir / 'metrics.json'} is not a JSON object. Fix: rerun the recipe with `distill run RECIPE`.")
    recipe_path = run_dir / "recipe.yaml"
    text = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else ""
    try:
        recipe = yaml.safe_load(text) if text else {}
    except yaml.YAMLError:
        recipe = {}
    recipe = recipe if isinstance(recipe, dict) else {}
    found = metrics.get("task") or recipe.get("task") or _guess_task(metrics)
    if found != task:
        raise UnsupportedError(
            f"{run_dir} is {_a(found)} {found} run (metrics.json says task: {found}), not {_a(task)} {task} run: this "
            "report does not fit it. Fix: run `distill report RUN_DIR`, which writes the report of the run's own task."
        )
    return run_dir, metrics, recipe, text


def _guess_task(metrics: dict[str, Any]) -> str:
    """The task of a metrics.json that does not say (no ``task`` key, no recipe.yaml), from its shape."""
    if "mode" in metrics and "comparison" in metrics:
        return "causal_lm"
    if any(isinstance(r, dict) and "kind" in r for r in metrics.get("rows") or metrics.get("models") or []):
        return "embedding"
    return "classification"


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def fmt(value: Any, spec: str = ".3f", suffix: str = "") -> str:
    """``value`` formatted with ``spec`` (and ``suffix``); "—" when it is missing or not finite."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return format(value, spec) + suffix


def render_page(template: str, ctx: dict[str, Any]) -> str:
    """Render one of this package's templates with autoescape (user strings are escaped)."""
    import jinja2

    from distill.version import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("distill.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    return env.get_template(template).render(version=__version__, **ctx)


def style_axes(ax: Any) -> None:
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def log_axis_ticks(ax: Any, lo: float, hi: float) -> None:
    """x limits ``lo..hi`` on a log axis with plain numbers as tick labels (2, 3 and 5 too under 1.6 decades)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if math.log10(hi / lo) < 1.6:
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6) in (2.0, 3.0, 5.0) else ""))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def teacher_licence(license: Any) -> dict[str, Any]:
    ok, message = licence_status(license)
    return {"license": license, "ok": ok, "message": message}


# ------------------------------------------------------------------- figures
