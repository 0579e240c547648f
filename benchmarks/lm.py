"""Language-model distillation on Debian's `fortunes`: a teacher trained here from scratch, then
students with < 10% of its compute per token: from scratch, and distilled with each token loss from
the offline top-k cache (k = 32), mean over 2 seeds; one online-teacher run for the offline-vs-online
check; a scratch student given the same wall time as a distilled one.

Not a test. Uses the library's pieces (data, builders, the LM loop, the top-k cache, metrics) in one
process, one torch thread (another benchmark may use the other core), so that times compare.

    sudo apt-get install fortunes                 # the corpus: /usr/share/games/fortunes
    .venv/bin/python benchmarks/lm.py             # full benchmark (< 30 min on one thread)
    .venv/bin/python benchmarks/lm.py --quick     # smoke run (minutes), results not written

Writes benchmarks/results/lm.json and lm.md; work files under benchmarks/.work/lm/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from distill.engine.lm_loop import Objective, block_batches, fit_lm
from distill.engine.lm_run import blocks_fingerprint, prepare_data, save_model
from distill.fsutil import write_json, write_text
from distill.losses.token import TOKEN_LOSSES
from distill.models.causal_lm import build_causal_lm, count_parameters, macs_per_token
from distill.recipe import load_recipe
from distill.tasks.causal_lm import (
    evaluate_lm,
    expand_topk,
    lm_logits,
    samples,
    tokens_per_second,
    unigram_logprobs,
)
from distill.teachers import module_fingerprint
from distill.teachers.topk_cache import build_topk_cache

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CORPUS = "/usr/share/games/fortunes"
LOSSES = list(TOKEN_LOSSES)  # fkl, rkl, jsd, skew_fkl, skew_rkl, tvd (default parameters)

FULL = {"teacher_steps": 1000, "student_steps": 200, "seeds": [0, 1], "eval_blocks": None}
QUICK = {"teacher_steps": 40, "student_steps": 8, "seeds": [0], "eval_blocks": 64}


def large_heap() -> None:
    """glibc serves allocations above its mmap threshold (dynamic, ≤ 32 MB) with fresh mmaps, and every
    page of them faults on first touch: with (8, 64, 8192) float logits that is most of the step time
    (measured: 2-3× slower, half of it system time). Fix the threshold at 32 MB and keep freed memory."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def base_recipe(work: Path, cfg: dict[str, Any], tokenizer_dir: Path | None = None) -> Any:
    tok = {"dir": str(tokenizer_dir)} if tokenizer_dir else {"vocab_size": 8192}
    return load_recipe(raw={
        "task": "causal_lm", "name": "bench-lm",
        "data": {"path": CORPUS, "separator": "%", "tokenizer": tok, "block_len": 64,
                 "val_fraction": 0.05, "seed": 0},
        "teacher": {"model": {"arch": "gpt2", "layers": 4, "width": 192, "heads": 4},
                    "train": {"steps": cfg["teacher_steps"], "batch_size": 8, "grad_accum": 4, "seed": 0,
                              "log_every": 100,
                              "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.01}}},
        "student": {"model": {"arch": "gpt2", "layers": 1, "width": 32, "heads": 2}},
        "distill": {"mode": "offline", "loss": "fkl", "top_k": 32, "temperature": 1.0},
        "train": {"steps": cfg["student_steps"], "batch_size": 8, "grad_accum": 4, "seed": 0, "log_every": 50,
                  "optimizer": {"name": "adamw", "lr": 0.005, "weight_decay": 0.01}},
        "output": {"dir": str(work / "run"), "cache_dir": str(work / "cache")},
    })  # fmt: skip


def build(m: Any, vocab: int, eos: int, seed: int) -> Any:
    return build_causal_lm(vocab_size=vocab, layers=m.layers, width=m.width, heads=m.heads, context=64,
                           arch=m.arch, eos_token_id=eos, seed=seed)  # fmt: skip


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, one seed, results not written")
    ap.add_argument("--reuse-teacher", action="store_true",
                    help="load the teacher a previous run saved in benchmarks/.work/lm/teacher instead of training it")
    ap.add_argument("--ce-weights", default="0,0.5", help="candidate weights of cross-entropy mixed into the KD loss")
    ap.add_argument("--supplement", action="store_true",
                    help="add the online run's own CE-weight choice to an existing results/lm.json (needs --reuse-teacher)")
    ap.add_argument("--k-sweep", default="", help="also offline fkl (first seed) from caches with these k, e.g. 128,512")
    ap.add_argument("--tails", default="bucket,unigram", help="candidate uses of the cache's tail mass (distill.tail); "
                    "the (tail, CE weight) pair with the best dev perplexity (offline fkl, first seed) is used for all")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    if not Path(CORPUS).is_dir():
        print(f"{CORPUS} is missing: sudo apt-get install fortunes", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    large_heap()
    from accelerate import Accelerator

    from distill.engine.logs import setup_logging

    work = ROOT / ".work" / ("lm-quick" if args.quick else "lm")
    work.mkdir(parents=True, exist_ok=True)
    setup_logging(work, console=True)
    acc = Accelerator(cpu=True)
    reuse = args.reuse_teacher and (work / "teacher" / "config.json").exists()
    recipe = base_recipe(work, cfg, tokenizer_dir=work / "teacher" if reuse else None)
    t_all = time.perf_counter()
    data = prepare_data(recipe, work / "run")
    vocab, eos = len(data.tokenizer), data.tokenizer.eos_token_id
    held = data.val[: cfg["eval_blocks"]] if cfg["eval_blocks"] else data.val
    # the held-out documents (packed in order) in two halves: dev chooses the CE weight, test is reported
    dev, val = held[: len(held) // 2], held[len(held) // 2 :]
    out: dict[str, Any] = {"config": cfg, "data": data.stats, "runs": {}, "dev_blocks": len(dev), "test_blocks": len(val)}

    # ---- teacher, trained here with cross-entropy
    if reuse:
        from distill.models.causal_lm import load_causal_lm

        teacher = load_causal_lm(work / "teacher")
        saved = json.loads((work / "teacher" / "train_seconds.json").read_text())
        teacher_seconds, t_hist = saved["seconds"], saved.get("history", [])
        print(f"teacher: reused from {work / 'teacher'} (trained in {teacher_seconds:.0f}s)", flush=True)
    else:
        t0 = time.perf_counter()
        teacher = build(recipe.teacher.model, vocab, eos, 0)
        t_hist = fit_lm(teacher, recipe.teacher_train, role="teacher", make_batch=block_batches(data.train, 8, 0),
                        objective=Objective(), accelerator=acc, progress=False)  # fmt: skip
        teacher = getattr(teacher, "module", teacher)
        teacher_seconds = time.perf_counter() - t0
        save_model(teacher, work / "teacher", data.tokenizer)
        write_json(work / "teacher" / "train_seconds.json", {"seconds": teacher_seconds, "history": t_hist})
    out["teacher_reused"] = reuse
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_eval = evaluate_lm(teacher, val, batch_size=8)
    out["teacher"] = {**t_eval, "train_seconds": round(teacher_seconds, 1), "params": count_parameters(teacher),
                      "macs_per_token": macs_per_token(teacher, 64), "history": t_hist}  # fmt: skip
    print(f"teacher: ppl {t_eval['perplexity']:.2f} top1 {t_eval['top1']:.4f} in {teacher_seconds:.0f}s", flush=True)

    # ---- offline top-k cache, built once
    d = recipe.distill
    key = f"{module_fingerprint(teacher)}|{blocks_fingerprint(data.train)}|k={d.top_k}|T={d.temperature}"
    import hashlib

    key = hashlib.sha256(key.encode()).hexdigest()
    t0 = time.perf_counter()
    cache = build_topk_cache(teacher, data.train, work / "cache" / f"lm-topk-{key[:24]}", k=d.top_k,
                             temperature=d.temperature, batch_size=8, fingerprint=key, progress=False)  # fmt: skip
    out["cache"] = {"seconds": round(time.perf_counter() - t0, 1), "bytes": cache.nbytes,
                    "dense_fp16_bytes": cache.dense_fp16_nbytes(), "ratio": cache.nbytes / cache.dense_fp16_nbytes(),
                    "k": d.top_k, "vocab": vocab, "positions": int(data.train.numel())}  # fmt: skip
    top = cache.get(torch.arange(min(64, len(data.train))))
    out["cache"]["mean_topk_mass"] = float(top.logprobs.exp().sum(-1).mean())
    print(f"cache: {cache.nbytes / 1e6:.1f} MB = {100 * out['cache']['ratio']:.2f}% of dense fp16, "
          f"{out['cache']['seconds']}s", flush=True)  # fmt: skip

    # ---- students
    tcfg = recipe.train

    def student_run(name: str, seed: int, objective: Objective, steps: int | None = None,
                    on: torch.Tensor | None = None) -> dict[str, Any]:  # fmt: skip
        c = tcfg.model_copy(update={"seed": seed, "steps": steps or tcfg.steps})
        model = build(recipe.student.model, vocab, eos, seed)
        t0 = time.perf_counter()
        hist = fit_lm(model, c, role=f"{name}/seed{seed}", make_batch=block_batches(data.train, c.batch_size, seed),
                      objective=objective, accelerator=acc, progress=False)  # fmt: skip
        secs = time.perf_counter() - t0
        model = getattr(model, "module", model)
        q = evaluate_lm(model, val if on is None else on, batch_size=8)
        row = {**q, "ce_weight": objective.ce_weight, "seconds": round(secs, 1), "steps": c.steps, "tokens": c.steps * c.batch_size * c.grad_accum * 64,
               "history": hist}
        out["runs" if on is None else "dev"].setdefault(name, {})[str(seed)] = row
        print(f"{name} seed {seed}: ppl {q['perplexity']:.2f} top1 {q['top1']:.4f} top3 {q['top3']:.4f} "
              f"{secs:.0f}s", flush=True)  # fmt: skip
        if name == "scratch" and seed == cfg["seeds"][0]:
            students["scratch"] = model
        if name == "offline fkl" and seed == cfg["seeds"][0]:
            students["distilled (offline fkl)"] = model
        return row

    students: dict[str, Any] = {}

    prior = unigram_logprobs(data.train, vocab)

    def offline_source(tail: str) -> Any:
        if tail == "unigram":
            return lambda b: expand_topk(cache.get(b.rows), prior, d.temperature)
        return lambda b: cache.get(b.rows)

    @torch.no_grad()
    def online(b: Any) -> torch.Tensor:
        return lm_logits(teacher, b.ids)

    s0 = cfg["seeds"][0]

    def online_choice() -> None:
        """The online run gets its own CE weight, chosen on the dev half like the offline one."""
        cands = [float(w) for w in args.ce_weights.split(",")]
        name = "dev: online fkl, ce_weight {:g}".format
        for w in cands:
            if name(w) not in out["dev"]:
                student_run(name(w), s0, Objective(loss="fkl", temperature=d.temperature, ce_weight=w, teacher=online),
                            on=dev)  # fmt: skip
        w_on = min(cands, key=lambda w: out["dev"][name(w)][str(s0)]["perplexity"])
        out["online_ce_weight"] = w_on
        if w_on != out["ce_weight"]:
            for seed in cfg["seeds"]:
                student_run(f"online fkl, ce_weight {w_on:g} (its own dev choice)", seed,
                            Objective(loss="fkl", temperature=d.temperature, ce_weight=w_on, teacher=online))  # fmt: skip

    if args.supplement:
        res_json = (work if args.quick else RESULTS) / "lm.json"
        old = json.loads(res_json.read_text())
        t_sup = time.perf_counter()
        for k in ("runs", "dev", "ce_weight", "tail", "k_sweep", "student", "tokens_per_s", "samples", "teacher",
                  "cache", "teacher_reused"):
            out[k] = old[k]
        online_choice()
        out["wall_seconds"] = round(old["wall_seconds"] + time.perf_counter() - t_sup, 1)
        out["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out["machine"] = old["machine"]
        out["command"] = old["command"] + " && " + " ".join(["python benchmarks/lm.py", *sys.argv[1:]])
        summarise(out)
        write_json(res_json, out)
        write_text(res_json.with_suffix(".md"), markdown(out))
        print(markdown(out))
        return 0
    out["dev"] = {}
    candidates = [(tail, float(w)) for tail in args.tails.split(",") for w in args.ce_weights.split(",")]
    dev_name = "dev: offline fkl, tail {}, ce_weight {:g}".format
    for tail, w in candidates:
        student_run(dev_name(tail, w), s0, Objective(loss="fkl", temperature=d.temperature, ce_weight=w,
                                                     teacher=offline_source(tail)), on=dev)  # fmt: skip
    best_tail, cw = min(candidates, key=lambda c: out["dev"][dev_name(*c)][str(s0)]["perplexity"])
    out["ce_weight"], out["tail"] = cw, best_tail
    offline = offline_source(best_tail)
    print(f"tail {best_tail}, ce_weight {cw:g} chosen on the dev half", flush=True)
    students.clear()
    for seed in cfg["seeds"]:
        student_run("scratch", seed, Objective())
        for loss in LOSSES:
            student_run(f"offline {loss}", seed, Objective(loss=loss, temperature=d.temperature, ce_weight=cw,
                                                           teacher=offline))  # fmt: skip
    for seed in cfg["seeds"]:
        student_run("online fkl", seed, Objective(loss="fkl", temperature=d.temperature, ce_weight=cw, teacher=online))
    per_step = out["runs"]["scratch"][str(s0)]["seconds"] / tcfg.steps
    eq_steps = max(1, round(out["runs"]["offline fkl"][str(s0)]["seconds"] / per_step))
    student_run("scratch, same wall time as offline fkl", s0, Objective(), steps=eq_steps)

    online_choice()

    # ---- what a larger k buys (sizes and the first seed's offline fkl)
    out["k_sweep"] = {}
    for k in [int(x) for x in args.k_sweep.split(",") if x]:
        t0 = time.perf_counter()
        ck = build_topk_cache(teacher, data.train, work / "cache" / f"lm-topk-{key[:16]}-k{k}", k=k,
                              temperature=d.temperature, batch_size=8, fingerprint=f"{key}-k{k}", progress=False)  # fmt: skip
        build_s = time.perf_counter() - t0
        src = (lambda c: (lambda b: expand_topk(c.get(b.rows), prior, d.temperature)) if best_tail == "unigram"
               else (lambda b: c.get(b.rows)))(ck)  # fmt: skip
        row = student_run(f"k sweep: offline fkl, k={k}", s0, Objective(loss="fkl", temperature=d.temperature,
                                                                           ce_weight=cw, teacher=src))  # fmt: skip
        out["k_sweep"][str(k)] = {"bytes": ck.nbytes, "ratio": ck.nbytes / ck.dense_fp16_nbytes(),
                                  "build_seconds": round(build_s, 1), "perplexity": row["perplexity"],
                                  "top1": row["top1"], "top3": row["top3"], "train_seconds": row["seconds"]}  # fmt: skip
        out["runs"].pop(f"k sweep: offline fkl, k={k}")

    # ---- side-by-side speed, sizes, samples
    speed = tokens_per_second({"teacher": teacher, **students}, val, batch_size=8, batches=10)
    example = build(recipe.student.model, vocab, eos, 0)
    out["student"] = {"params": count_parameters(example), "macs_per_token": macs_per_token(example, 64)}
    out["tokens_per_s"] = speed
    out["samples"] = samples({"teacher": teacher, **students}, data.tokenizer, val[:3, :8], 24, seed=0)
    out["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    out["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip
    out["command"] = " ".join(["python benchmarks/lm.py", *sys.argv[1:]])
    summarise(out)
    md = markdown(out)
    print(md)
    if not args.quick:
        write_json(RESULTS / "lm.json", out)
        write_text(RESULTS / "lm.md", md)
    else:
        write_json(work / "lm.json", out)
    return 0


def summarise(out: dict[str, Any]) -> None:
    agg = {}
    for name, per_seed in out["runs"].items():
        rows = list(per_seed.values())
        agg[name] = {k: mean_std([r[k] for r in rows]) for k in ("perplexity", "top1", "top3", "seconds")}
        agg[name]["n"] = len(rows)
        agg[name]["steps"] = rows[0]["steps"]
        agg[name]["tokens"] = rows[0]["tokens"]
    out["summary"] = agg
    teacher_ppl = out["teacher"]["perplexity"]
    scratch = agg["scratch"]["perplexity"][0]
    gap = scratch - teacher_ppl

    def closed_by(group: dict[str, Any]) -> tuple[str, float]:
        best = min(group, key=lambda k: group[k]["perplexity"][0])
        return best, ((scratch - group[best]["perplexity"][0]) / gap if gap > 0 else float("nan"))

    best, closed = closed_by({k: v for k, v in agg.items() if k.startswith(("offline ", "online "))})
    best_off, closed_off = closed_by({k: v for k, v in agg.items() if k.startswith("offline ")})
    off, on = agg["offline fkl"]["perplexity"][0], agg["online fkl"]["perplexity"][0]
    own = [k for k in agg if k.startswith("online fkl, ce_weight")]
    out["online_own_choice_vs_offline"] = (off / agg[own[0]]["perplexity"][0] - 1) if own else None
    out["targets"] = {
        "best_loss": best,
        "gap_closed": closed,
        "gap_closed_met": closed >= 0.30,
        "best_offline": best_off,
        "gap_closed_offline": closed_off,
        "teacher_better_than_scratch": teacher_ppl < scratch,
        "compute_share": out["student"]["macs_per_token"] / out["teacher"]["macs_per_token"],
        "compute_met": out["student"]["macs_per_token"] <= 0.10 * out["teacher"]["macs_per_token"],
        "cache_ratio_met": out["cache"]["ratio"] <= 0.01,
        "offline_vs_online": off / on - 1,
        "offline_vs_online_met": abs(off / on - 1) <= 0.02,
    }


def markdown(out: dict[str, Any]) -> str:
    agg, t, c, tg = out["summary"], out["teacher"], out["cache"], out["targets"]
    m = out["machine"]
    n_seeds = len(out["config"]["seeds"])
    lines = [
        "# Language-model distillation on Debian's fortunes",
        "",
        f"{out['date']} · {m['platform']} · torch {m['torch']} · threads {m['threads']} · seeds "
        f"{out['config']['seeds']} · wall {out['wall_seconds']:.0f} s",
        "",
        f"Command: `{out['command']}` (corpus: `sudo apt-get install fortunes`, {out['data']['documents']:,} "
        f"documents after dedup; byte-level BPE {out['data']['vocab_size']:,} tokens trained on the training "
        f"documents; {out['data']['train_tokens']:,} training tokens in blocks of 64; held-out: "
        f"{out['data']['val_documents']:,} documents in two halves, dev ({out['dev_blocks']} blocks) and test "
        f"({out['test_blocks']} blocks, {t['tokens']:,} next-token predictions)). "
        + ("The teacher was trained by an earlier run of this script and reused (`--reuse-teacher`); the wall time "
           "below excludes its training." if out.get("teacher_reused") else ""),
        "",
        f"Teacher: GPT-2 style 4 × 192, {t['params']:,} params, {t['macs_per_token']:,} MACs/token, trained "
        f"{out['config']['teacher_steps']} steps × 2,048 tokens in {t['train_seconds']:.0f} s. Student: 1 × 32, "
        f"{out['student']['params']:,} params, {out['student']['macs_per_token']:,} MACs/token "
        f"(**{100 * tg['compute_share']:.1f}%** of the teacher; the LM head counted in both).",
        "",
        "| model | steps (× 2,048 tokens) | perplexity | top-1 | top-3 | train s |",
        "|---|---|---|---|---|---|",
        f"| teacher | {out['config']['teacher_steps']} | {t['perplexity']:.2f} | {100 * t['top1']:.2f} | "
        f"{100 * t['top3']:.2f} | {t['train_seconds']:.0f} |",
    ]
    for name, a in agg.items():
        def pm(k: str, s: float = 1, a: dict[str, Any] = a) -> str:
            return f"{s * a[k][0]:.2f}" + (f" ± {s * a[k][1]:.2f}" if a["n"] > 1 else "")

        label = name + (f" (seed {out['config']['seeds'][0]} only)" if a["n"] < n_seeds else "")
        lines.append(f"| {label} | {a['steps']} | {pm('perplexity')} | {pm('top1', 100)} | {pm('top3', 100)} | "
                     f"{a['seconds'][0]:.0f} |")  # fmt: skip
    lines += [
        "",
        f"Mean ± sample std over {n_seeds} seeds (init and batch order). Offline = from the top-{c['k']} cache, its "
        f"tail mass used as **{out['tail']}** (`distill.tail`: 'bucket' = one 'everything else' bucket, 'unigram' = "
        "spread over the other tokens by training-data frequency, a dense loss); losses at their default parameters "
        "(jsd β = 0.5, skew α = 0.1), T = 1, plus cross-entropy on the data with "
        f"weight **{out['ce_weight']:g}** (tail and weight chosen on the dev half, below; the same for every loss, "
        "the CE weight also for the online run). "
        "Perplexity, top-1/top-3 next-token accuracy (%) after the last step on the test half of the held-out "
        f"documents ({out['test_blocks']} blocks; nothing was chosen on it).",
        "",
        "Choices on the dev half (seed " + str(out["config"]["seeds"][0]) + ", dev "
        "half: " + str(out["dev_blocks"]) + " blocks): "
        + ", ".join(f"{k.removeprefix('dev: ')} → perplexity "
                    f"{v[str(out['config']['seeds'][0])]['perplexity']:.1f}" for k, v in out["dev"].items()) + ".",
        "",
        f"Top-{c['k']} cache: {c['bytes'] / 1e6:.1f} MB for {c['positions']:,} positions vs "
        f"{c['dense_fp16_bytes'] / 1e6:.0f} MB of dense fp16 logits = **{100 * c['ratio']:.2f}%**; "
        + (f"built in {c['seconds']:.0f} s" if c["seconds"] >= 1 else
           f"built once in {c.get('first_build_seconds', float('nan')):.0f} s by the first run, reused here (same "
           "fingerprint)") + f"; the teacher's top-{c['k']} held {100 * c['mean_topk_mass']:.1f}% of its probability on "
        "average.",
        "",
        "Tokens/s (forward, batch 8 × 64, side by side in this process): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in out["tokens_per_s"].items()) + ".",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| teacher clearly better than the scratch student | {t['perplexity']:.1f} vs "
        f"{agg['scratch']['perplexity'][0]:.1f} | {'yes' if tg['teacher_better_than_scratch'] else 'no'} |",
        f"| student ≤ 10% of the teacher's compute per token | {100 * tg['compute_share']:.1f}% | "
        f"{'yes' if tg['compute_met'] else 'no'} |",
        f"| best distilled student closes ≥ 30% of the perplexity gap (scratch − teacher) | "
        f"{100 * tg['gap_closed']:.1f}% ({tg['best_loss']}); best from the cache: {100 * tg['gap_closed_offline']:.1f}% "
        f"({tg['best_offline']}) | {'yes' if tg['gap_closed_met'] else 'no'} |",
        f"| top-{c['k']} cache ≤ 1% of dense fp16 logits | {100 * c['ratio']:.2f}% | "
        f"{'yes' if tg['cache_ratio_met'] else 'no'} |",
        f"| offline (cache) student within 2% of the online-teacher student's perplexity (fkl, same CE weight, mean of "
        f"{n_seeds} seeds) | {100 * tg['offline_vs_online']:+.2f}%"
        + (f"; against the online run with its own dev choice of CE weight ({out['online_ce_weight']:g}): "
           f"{100 * out['online_own_choice_vs_offline']:+.1f}%" if out.get("online_own_choice_vs_offline") is not None
           else "") + " | "
        f"{'yes' if tg['offline_vs_online_met'] else 'no'} |",
    ]
    if out.get("k_sweep"):
        lines += ["", "What a larger k buys (offline fkl, seed " + str(out["config"]["seeds"][0]) + ", same tail and CE "
                  "weight; k = " + str(c["k"]) + " is the table's row):", "",
                  "| k | cache vs dense fp16 | perplexity | top-1 | top-3 | cache build s |", "|---|---|---|---|---|---|"]
        for k, r in out["k_sweep"].items():
            lines.append(f"| {k} | {100 * r['ratio']:.2f}% | {r['perplexity']:.2f} | {100 * r['top1']:.2f} | "
                         f"{100 * r['top3']:.2f} | {r['build_seconds']:.0f} |")  # fmt: skip
    first = RESULTS / "lm_pure_kd.json"
    if first.exists() and not out["command"].endswith("--quick"):
        r1 = json.loads(first.read_text())
        s1 = r1["summary"]
        lines += [
            "",
            f"An earlier full run ({r1['date']}, `{r1['command']}` before the CE weight and the unigram tail were "
            "added: pure KD, tail 'bucket', evaluated on the whole held-out split; `benchmarks/results/lm_pure_kd.md`) "
            "gave teacher "
            f"{r1['teacher']['perplexity']:.1f}, scratch {s1['scratch']['perplexity'][0]:.1f}, offline "
            + ", ".join(f"{k.removeprefix('offline ')} {v['perplexity'][0]:.1f}" for k, v in s1.items()
                        if k.startswith("offline "))
            + f", online fkl {s1['online fkl']['perplexity'][0]:.1f}: from the top-k buckets alone the student learns "
            "the teacher's most likely tokens (better top-1) but nothing about the shape of the tail, so its "
            "perplexity is worse than the scratch student's, while the dense online loss halves it. That is why the "
            "tail and the cross-entropy term are chosen here.",
        ]
    lines += ["", "Samples (greedy, prompt = first 8 held-out tokens):", ""]
    for row in out["samples"]:
        lines.append(f"- prompt {row['prompt']!r}: " + "; ".join(
            f"{k.replace(' (greedy)', '')} → {v!r}" for k, v in row.items() if k.endswith("(greedy)")))  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
