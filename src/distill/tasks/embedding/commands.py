"""The commands that start from a finished embedding run: ``distill eval`` (measure the saved students
against the teacher again, side by side) and ``distill export`` (ONNX files of the transformer students,
parity-checked)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.core.context import torch_threads
from distill.core.logs import setup_logging
from distill.core.recipes import run_recipe
from distill.tasks.embedding.table import render_table
from distill.tasks.embedding.pipeline import EmbedResult, measurer, preflight, require_onnx, teacher_signal, time_models
from distill.tasks.embedding.students import folder_bytes, load_student, student_encoder
from distill.tasks.embedding.texts import load_texts
from distill.errors import RunDirError, UnsupportedError
from distill.core.fsutil import write_json
from distill.models.sentence import count_parameters
from distill.tasks.embedding.recipe import EmbeddingRecipe


def _finished(run_dir: str | Path) -> tuple[EmbeddingRecipe, Path]:
    return run_recipe(run_dir), Path(run_dir)


def student_files(recipe: EmbeddingRecipe, run_dir: Path) -> None:
    """Every student's folder is there (else the run did not finish) and its weights read whole (else a file was
    deleted or cut short since): checked before anything is loaded or written."""
    from distill.core.rundir import check_run_files, folder_files

    files: list[Path] = []
    for spec in recipe.students:
        out_dir = run_dir / "students" / spec.name
        if not out_dir.is_dir():
            raise RunDirError(f"{out_dir} is missing: the run did not finish. Fix: finish it with --resume.")
        if spec.kind == "static":
            from distill.tasks.embedding.static_model import FILES

            files += folder_files(out_dir, list(FILES))
        else:
            files += folder_files(out_dir, ["config.json"])
    check_run_files(run_dir, files)


def evaluate_embedding_run(run_dir: str | Path, *, console: bool = True) -> EmbedResult:
    """Load the teacher and the saved students of a finished run and measure them again side by side on its
    held-out text (agreement with the teacher, sentences/s); write eval.json and print the table."""
    recipe, run_dir = _finished(run_dir)
    setup_logging(None, console=console)
    student_files(recipe, run_dir)
    with torch.random.fork_rng(devices=[]):
        setup = preflight(recipe.model_copy(update={"export": recipe.export.model_copy(update={"onnx": False})}))
        signal = teacher_signal(recipe, setup, progress=False)
        measure = measurer(recipe, setup.texts, signal)
        teacher = setup.teacher
        rows = [{"name": f"teacher ({setup.teacher_name})", "kind": "teacher", "role": "teacher",
                 "params": count_parameters(teacher), "size_bytes": folder_bytes(setup.teacher_path),
                 **measure(lambda xs: teacher.encode(xs, batch_size=64), {"held": signal.held, **signal.extra})}]  # fmt: skip
        encoders: dict[str, Callable[[list[str]], np.ndarray]] = {"teacher": lambda xs: teacher.encode(xs, batch_size=64)}
        for spec in recipe.students:
            out_dir = run_dir / "students" / spec.name
            if not out_dir.is_dir():
                raise RunDirError(f"{out_dir} is missing: the run did not finish. Fix: finish it with --resume.")
            student = load_student(spec, out_dir)
            encoders[spec.name] = student_encoder(spec, student, out_dir)
            rows.append({"name": spec.name, "kind": spec.kind, "role": "student", "params": count_parameters(student),
                         "size_bytes": folder_bytes(out_dir), **measure(encoders[spec.name])})  # fmt: skip
        with torch_threads(recipe.eval.threads):
            time_models(rows, encoders, setup.texts.held[: recipe.eval.speed_sentences],
                        setup.texts.held[: recipe.eval.latency_sentences])  # fmt: skip
    for r in rows:
        r.pop("_pairs", None)
    table = render_table(rows, k=recipe.eval.k, extra=list(setup.texts.extra))
    write_json(run_dir / "eval.json", {"task": "embedding", "models": rows})
    if console:
        print(table)
    return EmbedResult(run_dir=run_dir, rows=rows, table_markdown=table)


def export_embedding_run(run_dir: str | Path, formats: list[str] | None = None,
                         overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """ONNX files (fp32, and int8 with export.int8) of every transformer student of a finished run, each
    checked against the PyTorch student on held-out text; a static student needs no export (its folder is the
    light format). ``formats``: only 'onnx' applies."""
    from distill.core.recipes import validate_recipe
    from distill.recipe import apply_overrides

    recipe, run_dir = _finished(run_dir)
    if overrides:
        recipe = validate_recipe(apply_overrides(recipe.to_dict(), list(overrides)), "--set")
    wrong = sorted(set(formats or ["onnx"]) - {"onnx"})
    if wrong:
        raise UnsupportedError(
            f"--format {', '.join(wrong)}: an embedding run's students are already saved as sentence-transformers "
            "folders (RUN/students/NAME) that SentenceTransformer(path) loads; only --format onnx applies."
        )
    require_onnx()
    setup_logging(None)
    student_files(recipe, run_dir)
    texts = load_texts(recipe)
    files: dict[str, str] = {}
    report: dict[str, Any] = {}
    for spec in recipe.students:
        folder = run_dir / "students" / spec.name
        if spec.kind == "static":
            files[f"{spec.name} (static)"] = str(folder)
            continue
        from distill.export.onnx_encoder import export_encoder_onnx

        report[spec.name] = export_encoder_onnx(load_student(spec, folder), folder / "onnx", texts.held[:256],
                                                int8=recipe.export.int8, min_cosine=recipe.export.min_cosine,
                                                max_abs_diff=recipe.export.max_abs_diff)  # fmt: skip
        files[spec.name] = str(folder / "onnx")
    write_json(run_dir / "export.json", {"files": files, "students": report})
    return {"files": files, "students": report}
