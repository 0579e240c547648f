"""``distill run`` for ``task: embedding``: a sentence-transformers teacher distilled into transformer and
static students on a text corpus, each measured against the teacher on held-out text.

Flow: read and split the corpus → load the teacher → its embeddings of every sentence (cached on disk,
keyed by the teacher's weights and the text) → for each student: build, train, save (a folder that
``SentenceTransformer(path)`` loads, or the static light format), measure → time every model end to
end (tokenisation included) at batch 64 and batch 1, side by side in this process → ONNX export of the
transformer students (parity-checked) → ``comparison.md``/``comparison.json``, ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.data.corpus import read_sts
from distill.tasks.embedding.cache import cached_context, cached_embeddings, teacher_fingerprint
from distill.bench.rates import side_by_side_rates
from distill.core.checkpoint import CheckpointStore
from distill.core.logs import log, setup_rank_logging
from distill.core.context import environment, require, torch_threads
from distill.core.rundir import lifecycle, plan_run_dir, prepare_run_dir
from distill.core.fsutil import write_json, write_text
from distill.models.sentence import SentenceEncoder, count_parameters, load_sentence_encoder
from distill.tasks.embedding.recipe import EmbeddingRecipe, EmbedStudentConfig
from distill.tasks.embedding.card import embedding_model_card, teacher_display_name
from distill.tasks.embedding.students import (
    build_student,
    folder_bytes,
    load_student,
    save_student,
    student_encoder,
    train_student,
)
from distill.tasks.embedding.texts import Texts, default_teacher_path, load_texts
from distill.tasks.embedding.table import render_table
from distill.tasks.embedding.metrics import pair_similarities, quality, sts_spearman


@dataclass
class EmbedResult:
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_markdown: str = ""


# --------------------------------------------------------------------- run
# Resuming a failed run with a corrected recipe trains a student again when a key it depends on changed.
STAGES = {"students": (("data", "teacher", "train", "students"), ("students", "checkpoints"))}


@dataclass
class Setup:
    """What the preflight loaded before anything is written: the text, the teacher and where it came from."""

    texts: Texts
    teacher: SentenceEncoder
    teacher_path: Path
    teacher_name: str


def preflight(recipe: EmbeddingRecipe) -> Setup:
    """Read and split the text, load the teacher, check that the optional stages can run; nothing is written.
    The three checks are independent: every problem among them is reported at once."""
    from distill.errors import Problems

    problems = Problems()
    with problems.check():
        if recipe.export.onnx and any(s.kind != "static" for s in recipe.students):
            require_onnx()
    with problems.check():
        texts = load_texts(recipe)
    with problems.check():
        tpath = Path(recipe.teacher.path) if recipe.teacher.path else default_teacher_path()
        teacher = load_sentence_encoder(tpath, pooling=recipe.teacher.pooling, normalize=recipe.teacher.normalize,
                                        max_seq_length=recipe.teacher.max_seq_length)  # fmt: skip
    problems.raise_any()
    name = recipe.teacher.name or ("all-MiniLM-L6-v2" if not recipe.teacher.path else teacher_display_name(tpath))
    return Setup(texts, teacher, tpath, name)


def require_onnx() -> None:
    require({"onnx": "embeddings", "onnxruntime": "embeddings"}, "export.onnx (ONNX files of the transformer students)")


def run_embedding(
    recipe: EmbeddingRecipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True, console: bool = True
) -> EmbedResult:
    """Run an embedding recipe into its run directory (see the module docstring). Under torchrun
    (``--nproc N``) every process trains its share of each batch; the main one measures and writes."""
    from distill.core.accelerate import make_accelerator

    with torch.random.fork_rng(devices=[]):
        accelerator = make_accelerator()  # under torchrun: the process group (gloo without a GPU)
        main = accelerator.is_main_process
        setup_rank_logging(None, console, main)
        setup = preflight(recipe)  # bad text or a missing teacher fail here, before the run directory exists
        plan = plan_run_dir(recipe, resume, overwrite)  # every process reaches the same plan
        accelerator.wait_for_everyone()
        run_dir = prepare_run_dir(recipe, plan, STAGES) if main else recipe.run_dir
        accelerator.wait_for_everyone()
        setup_rank_logging(run_dir if main else None, console, main)
        with lifecycle(run_dir, main_process=main):
            return _run(recipe, setup, run_dir, accelerator, resume=resume, progress=progress, console=console)


@dataclass
class Signal:
    """The teacher's embeddings of every text the run needs (cached on disk by teacher and text)."""

    train: np.ndarray
    held: np.ndarray
    augmented: np.ndarray | None
    extra: dict[str, np.ndarray]
    context: tuple[np.ndarray, np.ndarray] | None
    seconds: float


def teacher_signal(recipe: EmbeddingRecipe, setup: Setup, *, progress: bool) -> Signal:
    teacher, texts, cache = setup.teacher, setup.texts, Path(recipe.output.cache_dir)
    fp = teacher_fingerprint(setup.teacher_path, teacher)
    t0 = time.perf_counter()

    def t_encode(xs: list[str]) -> np.ndarray:
        return teacher.encode(xs, batch_size=recipe.teacher.batch_size, progress=progress)

    context = None
    if any(s.kind == "static" and s.init == "context" for s in recipe.students):
        t_train, sums, counts = cached_context(teacher, texts.train, cache, fp, batch_size=recipe.teacher.batch_size,
                                               progress=progress)  # fmt: skip
        context = (sums, counts)
    else:
        t_train = cached_embeddings(t_encode, texts.train, cache, fp, "the training text")
    t_held = cached_embeddings(t_encode, texts.held, cache, fp, "the held-out text")
    t_aug = None  # the teacher labels data.augment's variants only when a student trains on them
    if any(_uses_augmented(recipe, texts, s) for s in recipe.students):
        t_aug = cached_embeddings(t_encode, texts.augmented, cache, fp, "the augmented text")
    t_extra = {k: cached_embeddings(t_encode, v, cache, fp, k) for k, v in texts.extra.items()}
    return Signal(t_train, t_held, t_aug, t_extra, context, time.perf_counter() - t0)


def _uses_augmented(recipe: EmbeddingRecipe, texts: Texts, spec: EmbedStudentConfig) -> bool:
    flag = recipe.train_of(spec).augmented
    return bool(texts.augmented) and (flag if flag is not None else spec.kind != "static")


def measurer(recipe: EmbeddingRecipe, texts: Texts, signal: Signal) -> Callable[..., dict[str, Any]]:
    sts = read_sts(recipe.eval.sts) if recipe.eval.sts else None
    ev = recipe.eval

    def measure(encode: Callable[[list[str]], np.ndarray], known: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Quality of ``encode`` against the teacher; ``known``: embeddings already computed ('held', extra names)."""
        known = known or {}
        out: dict[str, Any] = {}
        held = known["held"] if "held" in known else encode(texts.held)
        q = quality(held, signal.held, n_pairs=ev.pairs, n_queries=ev.queries, k=ev.k, seed=recipe.data.seed)
        out.update(cosine=q["cosine"], spearman=q["spearman"], topk=q[f"top{ev.k}"])
        out["_pairs"] = pair_similarities(held, n_pairs=min(ev.pairs, 2000), seed=recipe.data.seed)
        for name, xs in texts.extra.items():
            emb = known[name] if name in known else encode(xs)
            qe = quality(emb, signal.extra[name], n_pairs=ev.pairs, n_queries=ev.queries, k=ev.k, seed=recipe.data.seed)
            out[f"extra:{name}"] = {"cosine": qe["cosine"], "spearman": qe["spearman"], "topk": qe[f"top{ev.k}"]}
        if sts is not None:
            out["sts_spearman"] = sts_spearman(encode(sts[0]), encode(sts[1]), sts[2])
        return out

    return measure


def _student_stage(recipe: EmbeddingRecipe, spec: EmbedStudentConfig, setup: Setup, signal: Signal, run_dir: Path, *,
                   resume: bool, progress: bool, main: bool) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Build, train and save one student (or load it, resuming); return it with its training stats. Every
    process trains (its share of each batch); the main one saves."""
    texts = setup.texts
    out_dir = run_dir / "students" / spec.name
    done = (out_dir / ("config.json" if spec.kind == "static" else "modules.json")).exists()
    if resume and done:
        log.info("  already trained: %s", out_dir)
        return load_student(spec, out_dir), json.loads((run_dir / "students" / f"{spec.name}.train.json").read_text())
    t0 = time.perf_counter()
    student = build_student(spec, setup.teacher, texts.train, progress=progress and main, context=signal.context)
    build_seconds = time.perf_counter() - t0
    x_fit, y_fit = texts.train, signal.train
    if signal.augmented is not None and _uses_augmented(recipe, texts, spec):
        x_fit, y_fit = texts.train + texts.augmented, np.concatenate([signal.train, signal.augmented])
    with torch_threads(recipe.train_of(spec).num_threads):
        stats = train_student(recipe, spec, student, setup.teacher, x_fit, y_fit,
                              CheckpointStore(run_dir / "checkpoints" / spec.name), resume=resume,
                              progress=progress)  # fmt: skip
    stats["build_seconds"] = round(build_seconds, 3)
    if main:
        save_student(spec, student, out_dir)
        write_json(run_dir / "students" / f"{spec.name}.train.json", stats)
    return student, stats


def _signal(recipe: EmbeddingRecipe, setup: Setup, accelerator: Any, *, progress: bool) -> Signal:
    """The teacher's embeddings: the main process computes and caches them, the others then read the cache."""
    main = accelerator.is_main_process
    signal = teacher_signal(recipe, setup, progress=progress) if main else None
    accelerator.wait_for_everyone()
    return signal if signal is not None else teacher_signal(recipe, setup, progress=False)


def _run(recipe: EmbeddingRecipe, setup: Setup, run_dir: Path, accelerator: Any, *, resume: bool, progress: bool,
         console: bool) -> EmbedResult:  # fmt: skip
    started = time.perf_counter()
    texts, teacher, ev = setup.texts, setup.teacher, recipe.eval
    main, world = accelerator.is_main_process, accelerator.num_processes
    if world > 1:
        log.info("%d processes (%s): each trains its share of every batch of %s", world,
                 accelerator.distributed_type, "train.batch_size")  # fmt: skip
    signal = _signal(recipe, setup, accelerator, progress=progress)
    trained: dict[str, tuple[Any, dict[str, Any]]] = {}
    for spec in recipe.students:
        log.info("student %s (%s)", spec.name, spec.kind)
        trained[spec.name] = _student_stage(recipe, spec, setup, signal, run_dir, resume=resume, progress=progress,
                                            main=main)  # fmt: skip
    accelerator.wait_for_everyone()
    if not main:
        return EmbedResult(run_dir=run_dir)  # the main process measures and writes
    measure = measurer(recipe, texts, signal)
    teacher_row: dict[str, Any] = {"name": f"teacher ({setup.teacher_name})", "kind": "teacher", "role": "teacher",
                                   "params": count_parameters(teacher), "size_bytes": folder_bytes(setup.teacher_path),
                                   "train_seconds": None}  # fmt: skip
    teacher_row.update(measure(lambda xs: teacher.encode(xs, batch_size=64), {"held": signal.held, **signal.extra}))
    rows = [teacher_row]
    encoders: dict[str, Callable[[list[str]], np.ndarray]] = {"teacher": lambda xs: teacher.encode(xs, batch_size=64)}
    for spec in recipe.students:
        student, stats = trained[spec.name]
        out_dir = run_dir / "students" / spec.name
        encoders[spec.name] = student_encoder(spec, student, out_dir)
        row = {"name": spec.name, "kind": spec.kind, "role": "student", "params": count_parameters(student),
               "size_bytes": folder_bytes(out_dir),
               # making the student is building it (token pass, PCA, static table) and training it
               "train_seconds": (stats.get("seconds") or 0.0) + (stats.get("build_seconds") or 0.0),
               "fit_seconds": stats.get("seconds"), "build_seconds": stats.get("build_seconds")}  # fmt: skip
        row.update(measure(encoders[spec.name]))
        rows.append(row)
    with torch_threads(ev.threads):  # speed: every model side by side, same sentences, same process
        time_models(rows, encoders, texts.held[: ev.speed_sentences], texts.held[: ev.latency_sentences])
    pairs = {r["name"]: r.pop("_pairs") for r in rows}
    table = render_table(rows, k=ev.k, extra=list(texts.extra), teacher_pass_seconds=signal.seconds)
    metrics = {
        "task": "embedding", "name": recipe.name,
        "teacher": {"name": setup.teacher_name, "path": str(setup.teacher_path), "license": recipe.teacher.license,
                    "source": "loaded from " + str(setup.teacher_path)},
        "sentences": {"train": len(texts.train), "held_out": len(texts.held), **{k: len(v) for k, v in texts.extra.items()}},
        "teacher_pass_seconds": round(signal.seconds, 2), "processes": world,
        "models": rows, "seconds": time.perf_counter() - started, **environment(),
    }  # fmt: skip
    _write_results(run_dir, rows, table, metrics, pairs)  # before the optional export: a failed export loses nothing
    if recipe.export.onnx:
        _export_onnx(recipe, {k: v[0] for k, v in trained.items()}, rows, run_dir, texts.held[:256])
        table = render_table(rows, k=ev.k, extra=list(texts.extra), teacher_pass_seconds=signal.seconds)
        write_text(run_dir / "comparison.md", table)  # the sizes as finally written, with the ONNX files
        write_json(run_dir / "metrics.json", metrics)
        write_json(run_dir / "comparison.json", {"task": "embedding", "models": rows})
    for spec, row in zip(recipe.students, rows[1:], strict=True):
        write_text(run_dir / "students" / spec.name / "README.md",
                   embedding_model_card(recipe, spec, setup.teacher_name, row, setup.teacher_path))  # fmt: skip
    if recipe.output.report:
        from distill.tasks.embedding.report import write_embedding_report

        log.info("report: %s", "; ".join(str(p) for p in write_embedding_report(run_dir)))
    if console:
        print(table)
    return EmbedResult(run_dir=run_dir, rows=rows, table_markdown=table)


def time_models(rows: list[dict[str, Any]], encoders: dict[str, Callable[[list[str]], np.ndarray]],
                speed_texts: list[str], one_texts: list[str]) -> None:  # fmt: skip
    """Sentences/s at batch 64 and 1 of every model, side by side, and each one's speed-up over the first row."""
    b64 = side_by_side_rates(encoders, speed_texts, 64)
    b1 = side_by_side_rates(encoders, one_texts, 1)
    for row, name in zip(rows, encoders, strict=True):
        row["speed_b64"], row["speed_b1"] = b64[name], b1[name]
        log.info("speed %s: %.0f sentences/s at batch 64, %.0f at batch 1", name, row["speed_b64"], row["speed_b1"])
    for row in rows:
        row["speedup_b64"] = row["speed_b64"] / rows[0]["speed_b64"]
        row["speedup_b1"] = row["speed_b1"] / rows[0]["speed_b1"]


def _write_results(run_dir: Path, rows: list[dict[str, Any]], table: str, metrics: dict[str, Any],
                   pairs: dict[str, np.ndarray]) -> None:  # fmt: skip
    write_text(run_dir / "comparison.md", table)
    write_json(run_dir / "comparison.json", {"task": "embedding", "models": rows})
    teacher_name = rows[0]["name"]
    write_json(run_dir / "similarities.json", {
        "pairs": int(len(pairs[teacher_name])), "teacher": [round(float(v), 5) for v in pairs[teacher_name]],
        "models": {k: [round(float(x), 5) for x in v] for k, v in pairs.items() if k != teacher_name},
    })  # fmt: skip
    write_json(run_dir / "metrics.json", metrics)


def _export_onnx(recipe: EmbeddingRecipe, trained: dict[str, Any], rows: list[dict[str, Any]], run_dir: Path,
                 parity_texts: list[str]) -> None:  # fmt: skip
    from distill.export.onnx_encoder import export_encoder_onnx

    for spec, row in zip(recipe.students, rows[1:], strict=True):
        if spec.kind == "static":
            continue
        folder = run_dir / "students" / spec.name
        row["onnx"] = export_encoder_onnx(trained[spec.name], folder / "onnx", parity_texts, int8=recipe.export.int8,
                                          min_cosine=recipe.export.min_cosine, max_abs_diff=recipe.export.max_abs_diff)  # fmt: skip
        row["size_bytes_with_onnx"] = folder_bytes(folder)


