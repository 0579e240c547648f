"""`distill run` for ``task: causal_lm``: the whole flow into one run directory.

recipe → text → tokenizer → blocks → teacher (load, or train here) → student (config, or copied
teacher blocks) → teacher signal (online / offline top-k cache / sequence-level / on-policy) →
fit → evaluate teacher and student side by side → comparison table.

Run directory::

    recipe.yaml              the resolved recipe
    run.log                  the log
    tokenizer/               the tokenizer (save_pretrained), also inside student/ and teacher/
    teacher/                 the teacher trained here (save_pretrained, safetensors)
    student/                 the distilled student (save_pretrained, safetensors) + tokenizer
    baseline/                with eval.baseline: the same student trained from scratch on CE
    checkpoints/<role>/      checkpoints every train.checkpoint_every steps (--resume continues)
    sequence_data.safetensors  mode sequence: the generated training examples
    metrics.json             everything measured; comparison.md/.json the table; samples.md/.json

With ``--nproc N`` (torchrun, DDP through Accelerate) every process trains on its share of each global
batch (``train.batch_size`` per process, see :func:`~distill.tasks.causal_lm.loop.fit_lm`); only the main
process writes (run directory, tokenizer, teacher, offline cache, sequence data, checkpoints, models,
metrics) and evaluates; what it writes for the others to read is behind ``wait_for_everyone``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from distill.tasks.causal_lm.text import read_pairs
from distill.tasks.causal_lm.data import (
    LMData,
    LMRunResult,
    barrier,
    blocks_fingerprint,
    is_main,
    Prepared,
    prepare_data,
    read_text,
    save_model,
    tokenize_text,
)
from distill.core.checkpoint import CheckpointStore
from distill.tasks.causal_lm.loop import Batch, Objective, block_batches, fit_lm, on_policy_batches
from distill.tasks.causal_lm.evaluate import comparison, write_outputs
from distill.core.context import environment, run_context
from distill.core.logs import setup_rank_logging
from distill.core.rundir import lifecycle, plan_run_dir, prepare_run_dir
from distill.errors import DataError, ModelError
from distill.tasks.causal_lm.models import (
    build_causal_lm,
    check_same_vocab,
    copy_layers_student,
    load_causal_lm,
)
from distill.tasks.causal_lm.signal import (
    api_sequences, expand_topk, teacher_outputs, teacher_sequences, unigram_logprobs,
)

log = logging.getLogger("distill")


# ------------------------------------------------------------------ models
def _build(cfg: Any, data: LMData, seed: int) -> Any:
    return build_causal_lm(vocab_size=len(data.tokenizer), layers=cfg.layers, width=cfg.width, heads=cfg.heads,
                           context=cfg.context or data.train.shape[1], arch=cfg.arch, dropout=cfg.dropout,
                           eos_token_id=data.tokenizer.eos_token_id, seed=seed)  # fmt: skip


def train_ce(role: str, model: Any, cfg: Any, data: LMData, *, run_dir: Path, accelerator: Any, resume: bool,
             progress: bool) -> tuple[Any, list[dict[str, Any]], float]:  # fmt: skip
    """Train ``model`` on the data with cross-entropy, save it to ``run_dir/role``; reuse it when resuming."""
    out = run_dir / role
    if resume and (out / "config.json").exists():
        log.info("%s: already trained in this run directory; loading %s", role, out)
        hist_file = run_dir / "history" / f"{role}.json"
        history = yaml.safe_load(hist_file.read_text()) if hist_file.exists() else []
        return load_causal_lm(out), history, 0.0
    t0 = time.perf_counter()
    batches = block_batches(data.train, cfg.batch_size, cfg.seed, **_shard(accelerator))
    history = fit_lm(model, cfg, role=role, make_batch=batches, objective=Objective(), accelerator=accelerator,
                     checkpoints=CheckpointStore(run_dir / "checkpoints" / role), resume=resume,
                     progress=progress)  # fmt: skip
    seconds = time.perf_counter() - t0
    model = getattr(model, "module", model)
    if accelerator.is_main_process:
        from distill.core.fsutil import write_json

        save_model(model, out, data.tokenizer)
        write_json(run_dir / "history" / f"{role}.json", history)
    return model, history, seconds


def _shard(accelerator: Any) -> dict[str, int]:
    """This process's place among all: the ``rank``/``world`` of the batch makers."""
    return {"rank": accelerator.process_index, "world": accelerator.num_processes}


def prepare_teacher(recipe: Any, data: LMData, run_dir: Path, accelerator: Any, resume: bool, progress: bool,
                    loaded: Any = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    t = recipe.teacher
    if t.dir is not None:
        teacher = loaded if loaded is not None else load_causal_lm(t.dir, trust_remote_code=t.trust_remote_code)
        info = {"source": f"loaded from {t.dir}"}
    else:
        cfg = recipe.teacher_train
        teacher, history, seconds = train_ce("teacher", _build(t.model, data, cfg.seed), cfg, data, run_dir=run_dir,
                                             accelerator=accelerator, resume=resume, progress=progress)  # fmt: skip
        info = {"source": "trained here", "train_seconds": round(seconds, 2), "history": history}
    check_positions(teacher, data.train.shape[1], "teacher")  # a given teacher: already by the preflight
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, info


def prepare_student(recipe: Any, teacher: Any, data: LMData) -> Any:
    s = recipe.student
    if s.copy_layers is not None:
        student = copy_layers_student(teacher, s.copy_layers)
        for p in student.parameters():
            p.requires_grad_(True)
        return student
    return _build(s.model, data, recipe.train.seed)


# -------------------------------------------------------------- the signal
def offline_cache(teacher: Any, blocks: torch.Tensor, cache_dir: str | Path, *, kind: str, k: int,
                  temperature: float, seed: int, batch_size: int, progress: bool,
                  draws: str = "multinomial", accelerator: Any = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """The teacher's offline cache of ``blocks`` (``kind`` 'topk' or 'sample'), built once under ``cache_dir``
    in a folder keyed by the teacher's weights, the data, k, T (and the seed of the draws), then reused;
    with what it cost and its size against dense fp16 logits. With several processes the main one builds
    it and the others open it once it is complete."""
    from distill.core.fingerprint import module_fingerprint
    from distill.tasks.causal_lm.topk_build import build_topk_cache
    from distill.tasks.causal_lm.topk_cache import TopKCache

    # the draws depend on the seed and on how they are drawn (multinomial keys stay as they were)
    drawn = f"|sample|seed={seed}{'' if draws == 'multinomial' else '|' + draws}" if kind == "sample" else ""
    key = hashlib.sha256(f"{module_fingerprint(teacher)}|{blocks_fingerprint(blocks)}|k={k}|"
                         f"T={temperature}{drawn}".encode()).hexdigest()  # fmt: skip
    folder = Path(cache_dir) / f"lm-{kind}-{key[:24]}"
    if not is_main(accelerator):
        barrier(accelerator)  # the main process builds it
        return TopKCache(folder), {"cache": kind, "cache_dir": str(folder), "cache_fingerprint": key}
    t0 = time.perf_counter()
    cache = build_topk_cache(teacher, blocks, folder, k=k, temperature=temperature, batch_size=batch_size,
                             fingerprint=key, progress=progress, mode=kind, seed=seed, draws=draws)  # fmt: skip
    barrier(accelerator)  # built: the others open it
    info = {"cache": kind, **({"draws": draws} if kind == "sample" else {}), "cache_dir": str(folder), "cache_fingerprint": key,
            "cache_seconds": round(time.perf_counter() - t0, 2), "cache_bytes": cache.nbytes,
            "dense_fp16_bytes": cache.dense_fp16_nbytes(), "cache_ratio": cache.nbytes / cache.dense_fp16_nbytes()}  # fmt: skip
    log.info("offline: %s-%d cache %s: %.2f MB, %.2f%% of dense fp16 logits (%.1f MB)", kind, k, folder,
             cache.nbytes / 1e6, 100 * info["cache_ratio"], cache.dense_fp16_nbytes() / 1e6)  # fmt: skip
    return cache, info


def teacher_signal(recipe: Any, teacher: Any, student: Any, data: LMData, run_dir: Path, progress: bool,
                   accelerator: Any) -> tuple[Any, Objective, dict[str, Any]]:  # fmt: skip
    """The batches (this process's share of each) and objective of the recipe's mode, and what preparing
    them cost. Online and on-policy: the teacher runs in every process on its rows; offline: every process
    reads its rows from the one cache; sequence: every process trains on its share of the examples."""
    d, cfg = recipe.distill, recipe.train
    info: dict[str, Any] = {"mode": d.mode}
    base = dict(loss=d.loss, params=dict(d.params), temperature=d.temperature, ce_weight=d.ce_weight)
    shard = _shard(accelerator)

    outputs = teacher_outputs(teacher)  # hidden states + head: the chunked loss makes its logits per chunk

    def online(b: Batch) -> Any:
        return outputs(b.ids)

    if d.mode == "online":
        return block_batches(data.train, cfg.batch_size, cfg.seed, **shard), Objective(**base, teacher=online), info
    if d.mode == "on_policy":
        make = on_policy_batches(data.train, cfg.batch_size, cfg.seed, student, fraction=d.on_policy_fraction,
                                 prompt_len=d.prompt_len, gen_len=d.gen_len, **shard)  # fmt: skip
        return make, Objective(**base, teacher=online), info
    if d.mode == "offline":
        cache, cache_info = offline_cache(teacher, data.train, recipe.output.cache_dir, kind=d.cache, k=d.top_k,
                                          temperature=d.temperature, seed=cfg.seed, draws=d.draws,
                                          batch_size=recipe.eval.batch_size, progress=progress,
                                          accelerator=accelerator)  # fmt: skip
        info.update(cache_info)
        source: Any = lambda b: cache.get(b.rows)  # noqa: E731
        if d.tail == "unigram":
            prior = unigram_logprobs(data.train, cache.vocab_size)
            source = lambda b: expand_topk(cache.get(b.rows), prior, d.temperature)  # noqa: E731
        info["tail"] = d.tail
        return block_batches(data.train, cfg.batch_size, cfg.seed, **shard), Objective(**base, teacher=source), info
    # sequence-level: cross-entropy on completions written by the teacher (or a black-box API)
    ids, mask = sequence_data(recipe, teacher, data, run_dir, progress, accelerator, info)
    if not bool(mask[:, :-1].any()):
        raise DataError("sequence: the examples have no completion tokens to learn from. Fix: check distill.completions.")
    info["examples"] = len(ids)
    ce_only = Objective()
    return block_batches(ids, cfg.batch_size, cfg.seed, mask=mask, **shard), ce_only, info


def sequence_data(recipe: Any, teacher: Any, data: LMData, run_dir: Path, progress: bool, accelerator: Any,
                  info: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mode sequence's examples ``(ids, mask)``: kept in ``sequence_data.safetensors``, written once (by the
    main process; the others load it) from the API completions or the teacher's continuations."""
    from safetensors.torch import load_file, save_file

    d, cfg = recipe.distill, recipe.train
    stored = run_dir / "sequence_data.safetensors"
    have = stored.exists()
    barrier(accelerator)  # every process has looked before the main one writes
    if not have and is_main(accelerator):
        if d.completions is not None:
            ids, mask = api_sequences(data.tokenizer, read_pairs(d.completions), data.train.shape[1])
            info["source"] = str(d.completions)
        else:
            n = min(d.num_prompts or len(data.train), len(data.train))
            t0 = time.perf_counter()
            ids, mask = teacher_sequences(teacher, data.train[:n, : d.prompt_len], d.gen_len, data.train.shape[1],
                                          data.tokenizer.eos_token_id, sample=d.sample, seed=cfg.seed,
                                          batch_size=recipe.eval.batch_size, progress=progress)  # fmt: skip
            info.update(source="teacher generation", generate_seconds=round(time.perf_counter() - t0, 2))
            log.info("sequence: the teacher wrote %d continuations of %d tokens", n, d.gen_len)
        from distill.core.fsutil import write_with

        tensors = {"ids": ids.contiguous(), "mask": mask.to(torch.uint8).contiguous()}
        write_with(stored, lambda tmp: save_file(tensors, str(tmp)))
        barrier(accelerator)
        return ids, mask
    if not have:
        barrier(accelerator)  # the main process writes it
    seq = load_file(str(stored))
    return seq["ids"], seq["mask"].bool()


# -------------------------------------------------------------------- run
# Resuming a failed run with a corrected recipe: what each stage depends on and leaves (core/rundir.py).
_DATA = ("data", "teacher")
STAGES = {
    "teacher": (_DATA, ("teacher", "tokenizer", "history/teacher.json", "checkpoints/teacher")),
    "signal": (_DATA + ("distill", "train.seed"), ("sequence_data.safetensors",)),
    "student": (_DATA + ("distill", "student", "train"), ("student", "history/student.json", "checkpoints/student")),
    "baseline": (_DATA + ("student", "train", "eval.baseline"), ("baseline", "history/baseline.json",
                                                                  "checkpoints/baseline")),
}  # fmt: skip


def preflight(recipe: Any) -> Prepared:
    """Read and split the documents, load a given teacher (and check it reads a block), get the tokenizer and
    pack the blocks (a text too short for one is refused), read the completions file: all before anything is
    written; every problem among these independent checks is reported at once."""
    from distill.errors import Problems

    problems = Problems()
    teacher = docs = None
    with problems.check():
        docs = read_text(recipe)
    if recipe.teacher.dir is not None:
        with problems.check():
            teacher = load_causal_lm(recipe.teacher.dir, trust_remote_code=recipe.teacher.trust_remote_code)
            check_positions(teacher, recipe.data.block_len, "teacher")
    if recipe.distill.completions is not None:
        with problems.check():
            read_pairs(recipe.distill.completions)  # a bad completions file fails here
    prepared = Prepared(docs, teacher=teacher) if docs is not None else None
    # the teacher's folder holds the tokenizer: when the teacher is refused, that is the one problem to fix
    own_tokenizer = recipe.data.tokenizer.dir is not None or recipe.teacher.dir is None or teacher is not None
    if prepared is not None and own_tokenizer:
        with problems.check():
            prepared.tokenizer, prepared.trained_here, prepared.train, prepared.val = tokenize_text(recipe, docs)
    problems.raise_any()
    return prepared


def check_positions(model: Any, block_len: int, who: str) -> None:
    """A block longer than the model's position embeddings cannot be read by it."""
    n_pos = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if isinstance(n_pos, int) and n_pos < block_len:
        raise ModelError(
            f"data.block_len {block_len} is longer than the {who} can read: it has {n_pos} positions (its "
            f"config's n_positions/max_position_embeddings). Fix: set data.block_len to {n_pos} or less."
        )


def run_lm(recipe: Any, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
           console: bool = True, stop_after_steps: int | None = None) -> LMRunResult:  # fmt: skip
    """Run a ``task: causal_lm`` recipe end to end (see the module docstring for what is written). Under
    torchrun every process calls this; the others return an empty result once training is done."""
    from distill.core.accelerate import make_accelerator

    with run_context(recipe.train.num_threads):
        accelerator = make_accelerator()  # under torchrun: DDP (over gloo without a GPU)
        main = accelerator.is_main_process
        setup_rank_logging(None, console, main)
        prepared = preflight(recipe)
        plan = plan_run_dir(recipe, resume, overwrite)  # every process reaches the same plan
        accelerator.wait_for_everyone()
        run_dir = prepare_run_dir(recipe, plan, STAGES) if main else recipe.run_dir
        accelerator.wait_for_everyone()  # the directory is ready (and, resuming, what changed is dropped)
        setup_rank_logging(run_dir if main else None, console, main)
        with lifecycle(run_dir, main_process=main):
            return _run(recipe, run_dir, prepared, accelerator, resume=resume, progress=progress,
                        console=console, stop_after_steps=stop_after_steps)  # fmt: skip


def _run(recipe: Any, run_dir: Path, prepared: Prepared, accelerator: Any, *, resume: bool,
         progress: bool, console: bool, stop_after_steps: int | None) -> LMRunResult:  # fmt: skip
    t_start = time.perf_counter()
    world = accelerator.num_processes
    if world > 1:
        log.info("%d processes (%s), batch size %d per process (%d per micro-batch in all)", world,
                 accelerator.distributed_type, recipe.train.batch_size, world * recipe.train.batch_size)  # fmt: skip
    data = prepare_data(recipe, run_dir, prepared, accelerator)
    teacher, teacher_info = prepare_teacher(recipe, data, run_dir, accelerator, resume, progress, prepared.teacher)
    student = prepare_student(recipe, teacher, data)
    if recipe.distill.completions is None:  # token ids are shared unless the student learns from text
        check_same_vocab(teacher, student, data.tokenizer)
    make_batch, objective, signal = teacher_signal(recipe, teacher, student, data, run_dir, progress, accelerator)
    student, history, seconds = _student(recipe, student, make_batch, objective, data, run_dir, accelerator,
                                         resume, progress, stop_after_steps)  # fmt: skip
    models = {"teacher": teacher, "student": student}
    train_seconds = {"student": round(seconds, 2)}
    histories = {"student": history, "teacher": teacher_info.get("history", [])}
    if recipe.eval.baseline:
        models["baseline"], histories["baseline"], train_seconds["baseline"] = _baseline(
            recipe, teacher, data, run_dir, accelerator, resume, progress)  # fmt: skip
    if not accelerator.is_main_process:
        return LMRunResult(run_dir, {}, "")  # the main process measures and writes
    table, comp, extra = comparison(models, data, recipe)
    metrics = {
        "task": "causal_lm", "name": recipe.name, "mode": recipe.distill.mode, "loss": recipe.distill.loss,
        "data": data.stats, "teacher": {**{k: v for k, v in teacher_info.items() if k != "history"},
                                        "license": recipe.teacher.license},
        "signal": signal, "processes": world, "train_seconds": train_seconds, "history": histories,
        "models": [{"role": r["model"], **r} for r in comp], "comparison": comp, **extra,
        "total_seconds": round(time.perf_counter() - t_start, 2), **environment(),
    }  # fmt: skip
    write_outputs(run_dir, metrics, table, console=console)
    if recipe.output.report:
        from distill.tasks.causal_lm.report import write_lm_report

        log.info("report: %s", "; ".join(str(p) for p in write_lm_report(run_dir)))
    return LMRunResult(run_dir, metrics, table)


def _student(recipe: Any, student: Any, make_batch: Any, objective: Objective, data: LMData, run_dir: Path,
             accelerator: Any, resume: bool, progress: bool,
             stop_after_steps: int | None) -> tuple[Any, list[dict[str, Any]], float]:  # fmt: skip
    """Distil the student (every process), save it and its history (the main process); reuse it when resuming."""
    from distill.core.fsutil import write_json

    out = run_dir / "student"
    if resume and (out / "config.json").exists():
        return load_causal_lm(out), yaml.safe_load((run_dir / "history" / "student.json").read_text()), 0.0
    t0 = time.perf_counter()
    history = fit_lm(student, recipe.train, role="student", make_batch=make_batch, objective=objective,
                     accelerator=accelerator, checkpoints=CheckpointStore(run_dir / "checkpoints" / "student"),
                     resume=resume, progress=progress, stop_after_steps=stop_after_steps)  # fmt: skip
    seconds = time.perf_counter() - t0
    student = getattr(student, "module", student)
    if accelerator.is_main_process:
        save_model(student, out, data.tokenizer)
        write_json(run_dir / "history" / "student.json", history)
    return student, history, seconds


def _baseline(recipe: Any, teacher: Any, data: LMData, run_dir: Path, accelerator: Any, resume: bool,
              progress: bool) -> tuple[Any, list[dict[str, Any]], float]:  # fmt: skip
    """The same student trained from scratch on cross-entropy alone."""
    scratch = _build(recipe.student.model, data, recipe.train.seed) if recipe.student.model is not None else \
        copy_layers_student(teacher, recipe.student.copy_layers)  # fmt: skip
    for p in scratch.parameters():
        p.requires_grad_(True)
    model, history, secs = train_ce("baseline", scratch, recipe.train, data, run_dir=run_dir, accelerator=accelerator,
                                    resume=resume, progress=progress)  # fmt: skip
    return model, history, round(secs, 2)
