"""Loop overhead: distill's training steps against bare PyTorch loops doing the same math, and TRL's GKDTrainer.

A maintained suite (the method of ../shared/reference/overhead/): every method takes turns with the others in
one process, one torch thread, the order rotating every round; round 0 warms up and is not counted; medians,
per-round ratios (the same round = side by side) and their spread are reported.

- classification: the student of the shipped Fashion-MNIST recipe, batch 128, one epoch (430 steps) per call,
  AdamW; the teacher's outputs are fixed tensors (the cached-teacher path; the compute does not depend on them).
  bare CE, bare KD (autograd), distill `fit` CE only, distill `fit` KD from the cached outputs.
- causal LM: GPT-2 teacher 4x192 and student 1x32 (random, seeded weights), BPE 8,192 trained on Debian's
  fortunes, packed 64-token blocks, batch 32x64, AdamW lr 1e-3 wd 0.01, clip 1.0. bare CE, bare online forward
  KL (teacher under no_grad, full log-softmaxes), distill `fit_lm` online / offline (32 systematic draws per
  position, from its cache) / CE, and TRL's GKDTrainer (lmbda=0, beta=0: forward KL, no generation; bf16 and
  gradient checkpointing off) when trl is installed.
- memory: the peak resident memory of three LM training steps, each method in a fresh process, on random
  token ids (memory does not depend on their values), at vocab 8,192 and 32,768.

    .venv/bin/python benchmarks/overhead.py            # full: results/overhead.{json,md} (~25 min)
    .venv/bin/python benchmarks/overhead.py --quick    # 2 rounds, fewer steps (a check, ~4 min)
    .venv/bin/python benchmarks/overhead.py --part lm --rounds 3 --out /tmp/overhead

TRL is not a dependency of distill: `.venv/bin/pip install trl` (keep torch as it is) to add its row.
Needs Debian's dataset-fashion-mnist and fortunes (apt install dataset-fashion-mnist fortunes).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT / ".work" / "overhead"
FORTUNES = Path("/usr/share/games/fortunes")
VOCAB, BLOCK, BATCH, N_BLOCKS = 8192, 64, 32, 1024
LR, WD, CLIP = 1e-3, 0.01, 1.0
MEMORY_VOCABS = (8192, 32768)
MEMORY_STEPS = 3

# the targets: (numerator, denominator, at most)
TARGETS = {
    "classification": [("distill CE", "bare CE", 1.03), ("distill KD (cache)", "bare CE", 1.05)],
    "lm": [("distill online fkl", "bare online fkl", 1.05), ("distill offline fkl", "bare CE", 1.00)],
}


# ----------------------------------------------------------------------------------------------- timing helpers
def rotate(names: list[str], r: int) -> list[str]:
    return names[r % len(names):] + names[: r % len(names)]


def summary_rows(times: dict[str, list[float]], base: str) -> list[dict[str, Any]]:
    """Median, ratio of medians to ``base``, per-round ratio min-max and spread of each method."""
    rows = []
    for name, xs in times.items():
        per_round = [a / b for a, b in zip(xs, times[base])]
        rows.append({"method": name, "median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs),
                     "ratio": statistics.median(xs) / statistics.median(times[base]),
                     "round_ratio_min": min(per_round), "round_ratio_max": max(per_round), "runs_s": xs})  # fmt: skip
    return rows


def ratio_of(times: dict[str, list[float]], a: str, b: str) -> dict[str, float]:
    per_round = [x / y for x, y in zip(times[a], times[b])]
    return {"ratio": statistics.median(times[a]) / statistics.median(times[b]),
            "round_min": min(per_round), "round_max": max(per_round)}  # fmt: skip


def interleave(methods: dict[str, Callable[[], float]], rounds: int, label: str) -> dict[str, list[float]]:
    names = list(methods)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds + 1):  # round 0: warm-up, not counted
        last = {}
        for name in rotate(names, r):
            torch.set_num_threads(1)
            last[name] = methods[name]()
            if r:
                times[name].append(last[name])
        shown = " ".join(f"{n}={1000 * last[n]:.0f}ms" for n in names)
        print(f"[{label}] round {r}{' (warm-up)' if not r else ''}: {shown}", file=sys.stderr, flush=True)
    return times


# ----------------------------------------------------------------------------------------------- classification
def classification(rounds: int, quick: bool) -> dict[str, Any]:
    import yaml
    from accelerate import Accelerator

    from distill.tasks.classification.data import build_data
    from distill.models import build
    from distill.core.recipes import validate_recipe
    from distill.tasks.classification.recipe import LossTerm, TrainConfig
    from distill.tasks.classification.loop import batches_per_epoch, fit
    from distill.tasks.classification.objective import build_objective

    raw = yaml.safe_load((resources.files("distill") / "recipes" / "fashion_mnist.yaml").read_text())
    recipe = validate_recipe(raw)
    data = build_data(recipe.data)
    train = data.train
    if quick:
        train = train.subset(np.arange(len(train) // 8))
    x_all, y_all, n = train.x, train.y, len(train)
    bs, lr, wd = recipe.train.batch_size, recipe.train.optimizer.lr, recipe.train.optimizer.weight_decay
    cfg = TrainConfig(**{**recipe.train.model_dump(), "epochs": 1})
    steps = batches_per_epoch(n, bs)
    kd_terms = list(recipe.distill)
    kd_t = next(t.temperature for t in kd_terms if t.loss == "kd")
    kd_w = {t.loss: t.weight for t in kd_terms}
    teacher = torch.randn(n, data.num_classes, generator=torch.Generator().manual_seed(123)) * 3.0
    accel = Accelerator(cpu=True)

    def student() -> torch.nn.Module:
        torch.manual_seed(0)
        return build(recipe.student.arch, data.in_shape, data.num_classes, recipe.student.params)

    def bare(kind: str) -> tuple[float, float]:
        model = student()
        t_call = time.perf_counter()
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct) if pct else None
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for step in range(steps):
            idx = perm[step * bs: (step + 1) * bs]
            s = model(x_all[idx])
            loss = F.cross_entropy(s, y_all[idx])
            if kind == "kd":
                kd = F.kl_div(F.log_softmax(s / kd_t, 1), F.log_softmax(teacher[idx] / kd_t, 1),
                              reduction="batchmean", log_target=True)  # fmt: skip
                loss = kd_w.get("kd", 0.0) * kd * kd_t * kd_t + kd_w.get("ce", 0.0) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        t1 = time.perf_counter()
        return t1 - t0, t1 - t_call

    def distill_fit(kind: str) -> tuple[float, float]:
        model = student()
        terms = [LossTerm(loss="ce")] if kind == "ce" else kd_terms
        t0 = time.perf_counter()
        r = fit(model, train, build_objective(terms), cfg, accelerator=accel, role=kind, eval_splits={},
                teacher_logits=teacher if kind == "kd" else None, progress=False)  # fmt: skip
        return float(r.history[-1]["seconds"]), time.perf_counter() - t0

    pct = recipe.train.schedule.warmup_fraction if recipe.train.schedule.name == "onecycle" else 0.0
    methods = {"bare CE": lambda: bare("ce"), "bare KD (autograd)": lambda: bare("kd"),
               "distill CE": lambda: distill_fit("ce"), "distill KD (cache)": lambda: distill_fit("kd")}  # fmt: skip
    calls: dict[str, list[float]] = {k: [] for k in methods}

    def loop_time(name: str) -> Callable[[], float]:
        def one() -> float:
            loop, call = methods[name]()
            calls[name].append(call)
            return loop

        return one

    times = interleave({k: loop_time(k) for k in methods}, rounds, "classification")
    calls = {k: v[1:] for k, v in calls.items()}  # round 0 (warm-up) is not counted
    return {"what": f"one epoch of {steps} steps, batch {bs}, {n} samples: the step loop (distill: the epoch time "
                    f"fit records); the recipe's optimizer and {recipe.train.schedule.name} schedule in both",
            "terms": [t.model_dump() for t in kd_terms], "rows": summary_rows(times, "bare CE"),
            "whole_call_rows": summary_rows(calls, "bare CE"),
            "ratios": {f"{a} / {b}": ratio_of(times, a, b) for a, b, _ in TARGETS["classification"]}
            | {"distill KD (cache) / distill CE": ratio_of(times, "distill KD (cache)", "distill CE"),
               "bare KD (autograd) / bare CE": ratio_of(times, "bare KD (autograd)", "bare CE")}}  # fmt: skip


# ----------------------------------------------------------------------------------------------------- causal LM
def lm_data() -> tuple[Any, torch.Tensor]:
    """(tokenizer, blocks (N_BLOCKS, 64)) from Debian's fortunes, cached under WORK."""
    from distill.tasks.causal_lm.text import deduplicate, load_tokenizer, pack_blocks, read_documents, save_tokenizer, train_tokenizer

    tok_dir, blocks_file = WORK / "tokenizer", WORK / "blocks.pt"
    if (tok_dir / "tokenizer.json").exists() and blocks_file.exists():
        return load_tokenizer(tok_dir), torch.load(blocks_file)
    if not FORTUNES.is_dir():
        sys.exit(f"error: {FORTUNES} is missing. Fix: apt install fortunes (the LM part's text).")
    WORK.mkdir(parents=True, exist_ok=True)
    docs = deduplicate(read_documents(str(FORTUNES), "text", separator="%"))
    tok = train_tokenizer(docs, VOCAB)
    save_tokenizer(tok, tok_dir)
    blocks = pack_blocks(docs, tok, BLOCK)
    blocks = blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))[:N_BLOCKS]].contiguous()
    torch.save(blocks, blocks_file)
    return tok, blocks


def lm_models(vocab: int, eos: int) -> tuple[Any, Any]:
    """(teacher frozen in eval mode, student) with random seeded weights."""
    from distill.tasks.causal_lm.models import build_causal_lm

    teacher = build_causal_lm(vocab_size=vocab, layers=4, width=192, heads=4, context=BLOCK, arch="gpt2",
                              eos_token_id=eos, seed=0).eval()  # fmt: skip
    teacher.requires_grad_(False)
    student = build_causal_lm(vocab_size=vocab, layers=1, width=32, heads=2, context=BLOCK, arch="gpt2",
                              eos_token_id=eos, seed=1)  # fmt: skip
    return teacher, student


def lm_cfg(steps: int) -> Any:
    from distill.tasks.causal_lm.recipe import LMTrainConfig

    return LMTrainConfig(steps=steps, batch_size=BATCH, grad_accum=1, optimizer={"name": "adamw", "lr": LR, "weight_decay": WD},
                         schedule={"name": "constant"}, grad_clip=CLIP, seed=0, log_every=10, checkpoint_every=10_000)  # fmt: skip


def bare_lm(kind: str, student: Any, teacher: Any, blocks: torch.Tensor, steps: int, stamps: list[float]) -> None:
    """The minimal loop: next-token CE, or the teacher online and forward KL over every position."""
    student.train()
    vocab = student.config.vocab_size
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=WD)
    perm = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        stamps.append(time.perf_counter())
        ids = blocks[perm[(step * BATCH) % len(blocks):][:BATCH]]
        s = student(input_ids=ids, use_cache=False).logits
        if kind == "ce":
            loss = F.cross_entropy(s[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        else:
            with torch.no_grad():
                t = teacher(input_ids=ids, use_cache=False).logits
            n = ids.numel()
            loss = F.kl_div(F.log_softmax(s.reshape(n, vocab), -1), F.log_softmax(t.reshape(n, vocab), -1),
                            reduction="sum", log_target=True) / n  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
        opt.step()
    stamps.append(time.perf_counter())


def distill_lm(kind: str, student: Any, teacher: Any, blocks: torch.Tensor, steps: int, stamps: list[float],
               cache: Any = None) -> None:  # fmt: skip
    """distill's `fit_lm` with the objective its pipeline builds for `distill.mode` online / offline (or CE)."""
    from accelerate import Accelerator

    from distill.tasks.causal_lm.loop import Objective, block_batches, fit_lm
    from distill.tasks.causal_lm.signal import teacher_outputs

    make = block_batches(blocks, BATCH, 0)

    def timed(g: int) -> Any:
        stamps.append(time.perf_counter())
        return make(g)

    if kind == "online":
        outputs = teacher_outputs(teacher)
        obj = Objective(loss="fkl", params={}, temperature=1.0, ce_weight=0.0, teacher=lambda b: outputs(b.ids))
    elif kind == "offline":
        obj = Objective(loss="fkl", params={}, temperature=1.0, ce_weight=0.0, teacher=lambda b: cache.get(b.rows))
    else:
        obj = Objective()
    fit_lm(student, lm_cfg(steps), role=kind, make_batch=timed, objective=obj, accelerator=Accelerator(cpu=True),
           checkpoints=None, progress=False)  # fmt: skip
    stamps.append(time.perf_counter())


def trl_lm(student: Any, teacher: Any, blocks: torch.Tensor, steps: int, stamps: list[float], tok: Any) -> None:
    """TRL's GKDTrainer, lmbda=0 (no generation), beta=0 (forward KL), on the same pre-tokenized blocks."""
    import datasets
    import transformers
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)

    class Stamps(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([r["input_ids"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    args = GKDConfig(
        output_dir=str(WORK / "trl_out"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        max_steps=steps, learning_rate=LR, weight_decay=WD, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=CLIP, optim="adamw_torch", lmbda=0.0, beta=0.0, seq_kd=False, max_length=BLOCK,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, logging_steps=10, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    train_ds = datasets.Dataset.from_dict({"input_ids": blocks.tolist()})
    GKDTrainer(model=student, teacher_model=teacher, args=args, data_collator=collate, train_dataset=train_ds,
               processing_class=tok, callbacks=[Stamps()]).train()  # fmt: skip
    torch.set_num_threads(1)  # the Trainer may change it


def trl_version() -> str | None:
    try:
        import trl
        from trl.experimental.gkd import GKDTrainer  # noqa: F401
    except ImportError:
        return None
    return str(trl.__version__)


def lm(rounds: int, quick: bool) -> dict[str, Any]:
    from distill.tasks.causal_lm.pipeline import offline_cache

    warm, meas = (1, 4) if quick else (2, 12)
    steps = warm + meas
    tok, blocks = lm_data()
    teacher, student0 = lm_models(len(tok), tok.eos_token_id)
    t0 = time.perf_counter()
    cache, info = offline_cache(teacher, blocks, WORK / "cache", kind="sample", k=32, temperature=1.0, seed=0,
                                batch_size=32, progress=False, draws="systematic")  # fmt: skip
    cache.verify()  # every shard loaded and checked now, so no run pays the first load
    print(f"[lm] offline cache {info['cache_bytes'] / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    def timed(fn: Callable[[list[float]], None]) -> Callable[[], float]:
        def one() -> float:
            stamps: list[float] = []
            fn(stamps)
            if len(stamps) < steps + 1:
                raise RuntimeError(f"{len(stamps)} step stamps, {steps + 1} expected")
            return (stamps[steps] - stamps[warm]) / meas  # the mean step after the warm-up steps

        return one

    fresh = lambda: copy.deepcopy(student0)  # noqa: E731 - the same initial weights every call
    methods = {
        "bare CE": timed(lambda st: bare_lm("ce", fresh(), teacher, blocks, steps, st)),
        "bare online fkl": timed(lambda st: bare_lm("fkl", fresh(), teacher, blocks, steps, st)),
        "distill online fkl": timed(lambda st: distill_lm("online", fresh(), teacher, blocks, steps, st)),
        "distill offline fkl": timed(lambda st: distill_lm("offline", fresh(), teacher, blocks, steps, st, cache)),
        "distill CE": timed(lambda st: distill_lm("ce", fresh(), teacher, blocks, steps, st)),
    }
    version = trl_version()
    if version:
        methods["TRL GKDTrainer"] = timed(lambda st: trl_lm(fresh(), teacher, blocks, steps, st, tok))
    times = interleave(methods, rounds, "lm")
    pairs = [(a, b) for a, b, _ in TARGETS["lm"]] + [("distill CE", "bare CE"), ("distill online fkl", "distill offline fkl")]
    if version:
        pairs.append(("TRL GKDTrainer", "distill online fkl"))
    return {"what": f"mean step after {warm} warm-up steps, {meas} measured, batch {BATCH}x{BLOCK}, vocab {len(tok)}",
            "trl": version, "offline_cache": {k: info[k] for k in ("cache_bytes", "cache_ratio")},
            "rows": summary_rows(times, "bare CE"), "ratios": {f"{a} / {b}": ratio_of(times, a, b) for a, b in pairs}}  # fmt: skip


# -------------------------------------------------------------------------------------------------------- memory
def status_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak) of this process, from /proc: the high-water mark belongs to the
    process image (ru_maxrss would carry the parent's peak over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(method: str, vocab: int) -> None:
    """Runs in a fresh process: set up, then MEMORY_STEPS training steps; prints the peak resident memory."""
    torch.set_num_threads(1)
    teacher, student = lm_models(vocab, 0)
    blocks = torch.randint(0, vocab, (4 * BATCH, BLOCK), generator=torch.Generator().manual_seed(0))
    stamps: list[float] = []
    before = status_mib("VmRSS")
    if method.startswith("bare"):
        bare_lm("ce" if method == "bare CE" else "fkl", student, teacher, blocks, MEMORY_STEPS, stamps)
    elif method == "TRL GKDTrainer":
        from distill.tasks.causal_lm.text import train_tokenizer

        tok = train_tokenizer(["a b c d e f"] * 10, 300)
        trl_lm(student, teacher, blocks, MEMORY_STEPS, stamps, tok)
    else:
        distill_lm({"distill online fkl": "online", "distill CE": "ce"}[method], student, teacher, blocks,
                   MEMORY_STEPS, stamps)  # fmt: skip
    peak = status_mib("VmHWM")
    print(json.dumps({"before_steps_mib": before, "peak_mib": peak, "step_peak_mib": peak - before}))


def memory(quick: bool) -> dict[str, Any]:
    methods = ["bare CE", "bare online fkl", "distill online fkl", "distill CE"]
    if trl_version():
        methods.append("TRL GKDTrainer")
    vocabs = MEMORY_VOCABS[:1] if quick else MEMORY_VOCABS
    rows = []
    for vocab in vocabs:
        for method in methods:
            out = subprocess.run([sys.executable, __file__, "--memory-child", method, "--vocab", str(vocab)],
                                 capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(f"memory child {method} V={vocab} failed:\n{out.stderr[-3000:]}")
            m = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"method": method, "vocab": vocab, **m})
            print(f"[memory] V={vocab} {method}: peak {m['peak_mib']:.0f} MiB, {m['step_peak_mib']:.0f} MiB above "
                  f"the set-up", file=sys.stderr, flush=True)  # fmt: skip
    ratios = {}
    for vocab in vocabs:
        by = {r["method"]: r for r in rows if r["vocab"] == vocab}
        ratios[f"V={vocab}"] = {k: by[k]["step_peak_mib"] / by["bare online fkl"]["step_peak_mib"] for k in by}
    return {"what": f"peak RSS of {MEMORY_STEPS} training steps at batch {BATCH}x{BLOCK}, fresh process each, "
                    "minus the RSS before the first step (models and data already made)",
            "rows": rows, "ratio_to_bare_online": ratios}  # fmt: skip


# -------------------------------------------------------------------------------------------------------- report
def markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    lines = ["# Loop overhead: distill vs bare PyTorch loops (and TRL)", "",
             f"{out['date']} · {m['platform']} · {m['cpus']} CPUs · torch {m['torch']} · 1 thread · "
             f"wall {out['wall_seconds'] / 60:.1f} min", "", f"Command: `{out['command']}`", ""]  # fmt: skip
    for part in ("classification", "lm"):
        if part not in out:
            continue
        p = out[part]
        lines += [f"## {'Classification (Fashion-MNIST student)' if part == 'classification' else 'Causal LM'}", "",
                  f"{p['what']}; {out['rounds']} rounds after a warm-up round, order rotating.", "",
                  "| method | median s | ratio to bare CE | per-round ratio min-max | spread s (min-max) |", "|---|---|---|---|---|"]  # fmt: skip
        for r in p["rows"]:
            lines.append(f"| {r['method']} | {r['median_s']:.4f} | {r['ratio']:.3f} | {r['round_ratio_min']:.3f}-"
                         f"{r['round_ratio_max']:.3f} | {r['min_s']:.4f}-{r['max_s']:.4f} |")  # fmt: skip
        if "whole_call_rows" in p:
            lines += ["", "The whole call (optimizer and schedule set-up; distill: fit's set-up, e.g. the teacher's "
                      "softened targets computed once per fit, amortised over a run's epochs):", "",
                      "| method | median s | ratio to bare CE |", "|---|---|---|"]  # fmt: skip
            lines += [f"| {r['method']} | {r['median_s']:.4f} | {r['ratio']:.3f} |" for r in p["whole_call_rows"]]
        lines += ["", "| ratio | median | per-round min-max | target |", "|---|---|---|---|"]
        targets = {f"{a} / {b}": t for a, b, t in TARGETS[part]}
        for k, v in p["ratios"].items():
            t = targets.get(k)
            verdict = f"≤ {t:.2f}: {'met' if v['ratio'] <= t else 'not met'}" if t else ""
            lines.append(f"| {k} | {v['ratio']:.3f} | {v['round_min']:.3f}-{v['round_max']:.3f} | {verdict} |")
        if part == "lm" and not p["trl"]:
            lines += ["", "TRL is not installed in this environment: no GKDTrainer row (`pip install trl`)."]
        lines.append("")
    if "memory" in out:
        p = out["memory"]
        lines += ["## Peak memory of an LM training step", "", p["what"] + ".", "",
                  "| vocab | method | peak RSS MiB | above set-up MiB | ratio to bare online fkl | target |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in p["rows"]:
            ratio = p["ratio_to_bare_online"][f"V={r['vocab']}"][r["method"]]
            target = f"≤ 0.50: {'met' if ratio <= 0.5 else 'not met'}" if r["method"] == "distill online fkl" else ""
            lines.append(f"| {r['vocab']} | {r['method']} | {r['peak_mib']:.0f} | {r['step_peak_mib']:.0f} | {ratio:.2f} | {target} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "classification", "lm", "memory"], default="all")
    ap.add_argument("--rounds", type=int, default=None, help="rounds counted after the warm-up (default 6; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="a check: 2 rounds, 1/8 of the epoch, 4 LM steps, vocab 8,192 only")
    ap.add_argument("--out", default=None, help="folder of overhead.json/.md (default benchmarks/results; --quick: none)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=VOCAB, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(args.memory_child, args.vocab)
        return 0
    from distill.core.fsutil import write_json, write_text

    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 6)
    started = time.time()
    out: dict[str, Any] = {
        "benchmark": "overhead", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": 1},
        "command": " ".join(["python benchmarks/overhead.py", *(argv if argv is not None else sys.argv[1:])]),
        "rounds": rounds, "quick": args.quick,
    }  # fmt: skip
    if args.part in ("all", "classification"):
        out["classification"] = classification(rounds, args.quick)
    if args.part in ("all", "lm"):
        out["lm"] = lm(rounds, args.quick)
    if args.part in ("all", "memory"):
        out["memory"] = memory(args.quick)
    out["wall_seconds"] = round(time.time() - started, 1)
    md = markdown(out)
    print(md)
    folder = Path(args.out) if args.out else (None if args.quick else RESULTS)
    if folder is not None:
        write_json(folder / "overhead.json", out)
        write_text(folder / "overhead.md", md)
        print(f"wrote {folder / 'overhead.json'} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
