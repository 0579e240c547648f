"""Building what a run needs, and loading what a finished run left: the accelerator, the
teacher module and student factory of a recipe, the stored recipe and the trained models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from distill.core.recipes import run_recipe
from distill.data import DataBundle
from distill.errors import ModelError, RunDirError, TeacherError
from distill.core.fsutil import write_with
from distill.models import build, build_from_factory
from distill.tasks.classification.recipe import Recipe
from distill.tasks.classification.teachers import TorchTeacher, build_teacher_module, load_weights
from distill.tasks.classification.teachers.from_recipe import build_external_teacher


def save_weights(model: nn.Module, path: Path) -> None:
    """The state dict as safetensors, written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with(path, lambda tmp: save_file(state, str(tmp)))


def seeded_build(fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``fn()`` with torch's generator seeded, without changing the caller's generator state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def build_models(recipe: Recipe, data: DataBundle) -> tuple[nn.Module | None, Callable[..., nn.Module]]:
    """Build the (untrained) teacher module (None when the teacher is not a torch module)
    and a student factory for ``recipe``."""
    t = recipe.teacher
    teacher = None
    if t.kind == "torch":
        teacher = seeded_build(
            lambda: build_teacher_module(t.arch, t.factory, t.params, data.in_shape, data.num_classes),
            recipe.teacher_train.seed,
        )

    def student(seed: int | None = None) -> nn.Module:
        return seeded_build(
            lambda: build_student_module(recipe.student, data.in_shape, data.num_classes),
            recipe.train.seed if seed is None else seed,
        )

    return teacher, student


def build_student_module(cfg: Any, in_shape: Any, num_classes: int) -> nn.Module:
    """The (untrained) student of a recipe's ``student`` section: a built-in builder or the user's factory."""
    try:
        if cfg.factory:
            return build_from_factory(cfg.factory, in_shape, num_classes, cfg.params)
        return build(cfg.arch, in_shape, num_classes, cfg.params)
    except ModelError as exc:
        which = f"student.factory {cfg.factory!r}" if cfg.factory else f"student.arch {cfg.arch!r}"
        fix = "" if "Fix:" in str(exc) else (
            " Fix: check student.factory ('package.module:function', importable from here) and student.params."
            if cfg.factory else " Fix: correct student.params (`distill models` lists each builder's parameters).")
        raise ModelError(f"cannot build the student ({which}, student.params {cfg.params}): {exc}.{fix}") from None


def list_layers(recipe: Recipe) -> dict[str, list[tuple[str, str, Any]]]:
    """Every named module of the recipe's (untrained) teacher and student with its type and its output
    shape for one sample: the names feature terms take as ``student_layer`` / ``teacher_layer``."""
    from distill.tasks.classification.data import build_data
    from distill.tasks.classification.features import FeatureCapture

    data = build_data(recipe.data)
    teacher, make_student = build_models(recipe, data)
    out: dict[str, list[tuple[str, str, Any]]] = {}
    for what, module in (("teacher", teacher), ("student", make_student())):
        if module is None:
            out[what] = []
            continue
        names = [n for n, _ in module.named_modules() if n]
        module.eval()
        with torch.no_grad(), FeatureCapture(module, names, what) as cap:
            module(torch.zeros(1, *data.in_shape))
        rows = []
        for n in names:
            o = cap.outputs.get(n)
            shape = tuple(o.shape[1:]) if o is not None and hasattr(o, "shape") else "-"
            rows.append((n, type(module.get_submodule(n)).__name__, shape))
        out[what] = rows
    return out


# ------------------------------------------------------------ finished runs
def load_run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe a run directory holds, with ``output.dir`` pointing at that directory."""
    return run_recipe(run_dir)


def _load_into(module: nn.Module, weights: Path, role: str) -> None:
    if not weights.exists():
        raise RunDirError(f"{weights} is missing: the run did not finish. Fix: finish it with `distill run RECIPE --resume`.")
    try:
        load_weights(module, weights, role)
    except TeacherError as exc:
        raise RunDirError(str(exc)) from None


def load_run_teacher(run_dir: Path, recipe: Recipe, data: DataBundle) -> tuple[Any, nn.Module | None, Path]:
    """(teacher object, its torch module or None, the file it came from) of a finished run."""
    module, _ = build_models(recipe, data)
    if module is None:
        path = Path(recipe.teacher.path) if recipe.teacher.path else run_dir / "teacher"
        return build_external_teacher(recipe.teacher, data), None, path
    weights = run_dir / "teacher.safetensors"
    _load_into(module, weights, "teacher")
    return TorchTeacher(module, data.num_classes), module.eval(), weights


def load_run_student(run_dir: Path, recipe: Recipe, data: DataBundle, role: str = "student") -> nn.Module | None:
    """The trained ``role`` (student or baseline) of a finished run, in eval mode; None for a
    baseline the run did not train."""
    weights = run_dir / f"{role}.safetensors"
    if role == "baseline" and not weights.exists():
        return None
    _, make_student = build_models(recipe, data)
    model = make_student()
    _load_into(model, weights, role)
    return model.eval()
