"""Language-model distillation on Debian's `fortunes`: a teacher trained here from scratch, then
students with < 10% of its compute per token: from scratch, and distilled with each token loss from an
offline cache (k = 32 slots per position: the teacher's top-k, or k draws from it; which one, the tail
use and the CE weight chosen on a dev half), mean over 2 seeds; the online teacher (its own CE weight
chosen on the dev half); a scratch student given the same wall time as a distilled one; and, for the
offline-vs-online check, students trained longer (1,000 steps: online teacher and sampled cache, 2 seeds,
both at the online student's learning rate chosen on the dev half by
experiments/2026-11-29-lm-learning-rate/lm_lr.py).

Not a test. Uses the library's pieces (data, builders, the LM loop, the caches, metrics). The teacher
trains on 2 threads; then the students run on one thread each, the table's in this process and the
"trained longer" rows in one worker process (benchmarks/lm_long.py) on the other core.

    sudo apt-get install fortunes                 # the corpus: /usr/share/games/fortunes
    .venv/bin/python benchmarks/lm.py             # full benchmark (< 30 min on 2 cores)
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

from distill.tasks.causal_lm.loop import Objective, block_batches, fit_lm
from distill.tasks.causal_lm.data import prepare_data, save_model
from distill.tasks.causal_lm.pipeline import offline_cache
from distill.core.fsutil import write_json, write_text
from distill.losses.token import TOKEN_LOSSES
from distill.tasks.causal_lm.models import count_parameters, macs_per_token
from distill.tasks.causal_lm.signal import (
    evaluate_lm,
    expand_topk,
    lm_logits,
    samples,
    tokens_per_second,
    unigram_logprobs,
)
from lm_report import markdown, summarise  # the report; benchmarks/ is on sys.path (the script's folder)
from lm_settings import CORPUS, FULL, LONG_LR, QUICK, base_recipe, build, large_heap  # shared with lm_long.py

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
LOSSES = list(TOKEN_LOSSES)  # fkl, rkl, jsd, skew_fkl, skew_rkl, tvd (default parameters)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, one seed, results not written")
    ap.add_argument("--reuse-teacher", action="store_true",
                    help="load the teacher a previous run saved in benchmarks/.work/lm/teacher instead of training it")
    ap.add_argument("--ce-weights", default="0,0.5", help="candidate weights of cross-entropy mixed into the KD loss")
    ap.add_argument("--k-sweep", default="", help="also offline fkl (first seed) from caches with these k, e.g. 128,512")
    ap.add_argument("--tails", default="bucket", help="candidate uses of the top-k cache's tail mass (distill.tail, e.g. "
                    "bucket,unigram); the (cache kind, tail, CE weight) with the best dev perplexity (offline fkl, "
                    "first seed) is used for every loss")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the students' runs (1: the 'trained "
                    "longer' rows run in a worker process on the other core; more threads than free cores make every "
                    "op wait on the scheduler)")
    ap.add_argument("--teacher-threads", type=int, default=2, help="torch threads while the teacher trains (nothing "
                    "else runs then: 2 on a 2-core machine)")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    if not Path(CORPUS).is_dir():
        print(f"{CORPUS} is missing: sudo apt-get install fortunes", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    large_heap()
    from accelerate import Accelerator

    from distill.core.logs import setup_logging

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
        from distill.tasks.causal_lm.models import load_causal_lm

        teacher = load_causal_lm(work / "teacher")
        saved = json.loads((work / "teacher" / "train_seconds.json").read_text())
        teacher_seconds, t_hist = saved["seconds"], saved.get("history", [])
        print(f"teacher: reused from {work / 'teacher'} (trained in {teacher_seconds:.0f}s)", flush=True)
    else:
        t0 = time.perf_counter()
        torch.set_num_threads(args.teacher_threads)
        teacher = build(recipe.teacher.model, vocab, eos, 0)
        t_hist = fit_lm(teacher, recipe.teacher_train, role="teacher", make_batch=block_batches(data.train, 8, 0),
                        objective=Objective(), accelerator=acc, progress=False)  # fmt: skip
        teacher = getattr(teacher, "module", teacher)
        teacher_seconds = time.perf_counter() - t0
        save_model(teacher, work / "teacher", data.tokenizer)
        write_json(work / "teacher" / "train_seconds.json", {"seconds": teacher_seconds, "history": t_hist,
                                                             "threads": args.teacher_threads})  # fmt: skip
        torch.set_num_threads(args.threads)
    out["teacher_reused"] = reuse
    out["teacher_threads"] = (saved.get("threads", 1) if reuse else args.teacher_threads)
    # ---- the "trained longer" rows (online teacher and sampled cache, 2 seeds) run in one worker process
    # beside this one: the online runs now, the cache runs once the caches are built (below)
    import lm_long

    workers = lm_long.pool(work, cfg["eval_blocks"], 1)
    long_jobs = [workers.apply_async(lm_long.train_one, ((sig, LONG_LR[sig], seed, cfg["long_steps"]),))
                 for seed in cfg["seeds"] for sig in ("online",)]  # fmt: skip
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_eval = evaluate_lm(teacher, val, batch_size=8)
    out["teacher"] = {**t_eval, "train_seconds": round(teacher_seconds, 1), "params": count_parameters(teacher),
                      "macs_per_token": macs_per_token(teacher, 64), "history": t_hist}  # fmt: skip
    print(f"teacher: ppl {t_eval['perplexity']:.2f} top1 {t_eval['top1']:.4f} in {teacher_seconds:.0f}s", flush=True)

    # ---- the two offline caches, each built once: top-32 (+ tail mass) and 32 draws per position
    d = recipe.distill

    def cache_of(kind: str, k: int) -> tuple[Any, dict[str, Any]]:
        return offline_cache(teacher, data.train, work / "cache", kind=kind, k=k, temperature=d.temperature, seed=0,
                             batch_size=8, progress=False, draws=d.draws)  # fmt: skip

    caches: dict[str, Any] = {}
    out["cache"] = {}
    for kind in ("sample", "topk"):
        c, info = cache_of(kind, d.top_k)
        caches[kind] = c
        first = c.get(torch.arange(min(64, len(data.train))))
        out["cache"][kind] = {"seconds": round(info["cache_seconds"], 1), "bytes": c.nbytes,
                              "dense_fp16_bytes": c.dense_fp16_nbytes(), "ratio": info["cache_ratio"],
                              "k": d.top_k, "vocab": vocab, "positions": int(data.train.numel()),
                              "mean_slot_mass": float(first.logprobs.exp().sum(-1).mean()),
                              "mean_distinct": float(torch.isfinite(first.logprobs).sum(-1).float().mean())}  # fmt: skip
        print(f"{kind} cache: {c.nbytes / 1e6:.1f} MB = {100 * out['cache'][kind]['ratio']:.2f}% of dense fp16, "
              f"{out['cache'][kind]['seconds']}s", flush=True)  # fmt: skip
        if kind == "sample":  # complete on disk: the worker may open it
            out["cache"][kind]["draws"] = d.draws
            long_jobs += [workers.apply_async(lm_long.train_one, (("sample", LONG_LR["sample"], seed, cfg["long_steps"]),))
                          for seed in cfg["seeds"]]  # fmt: skip

    # ---- students
    tcfg = recipe.train

    def student_run(name: str, seed: int, objective: Objective, steps: int | None = None,
                    on: torch.Tensor | None = None, lr: float | None = None) -> dict[str, Any]:  # fmt: skip
        c = tcfg.model_copy(update={"seed": seed, "steps": steps or tcfg.steps})
        if lr is not None:
            c = c.model_copy(update={"optimizer": c.optimizer.model_copy(update={"lr": lr})})
        model = build(recipe.student.model, vocab, eos, seed)
        t0 = time.perf_counter()
        hist = fit_lm(model, c, role=f"{name}/seed{seed}", make_batch=block_batches(data.train, c.batch_size, seed),
                      objective=objective, accelerator=acc, progress=False)  # fmt: skip
        secs = time.perf_counter() - t0
        model = getattr(model, "module", model)
        q = evaluate_lm(model, val if on is None else on, batch_size=8)
        row = {**q, "ce_weight": objective.ce_weight, "seconds": round(secs, 1), "steps": c.steps,
               "tokens": c.steps * c.batch_size * c.grad_accum * 64, "history": hist}  # fmt: skip
        out["runs" if on is None else "dev"].setdefault(name, {})[str(seed)] = row
        if on is not None:  # a dev candidate: also measured on the test half, kept aside (used only if chosen)
            dev_models[name] = (model, {**row, **evaluate_lm(model, val, batch_size=8)})
        print(f"{name} seed {seed}: ppl {q['perplexity']:.2f} top1 {q['top1']:.4f} top3 {q['top3']:.4f} "
              f"{secs:.0f}s", flush=True)  # fmt: skip
        if name == "scratch" and seed == cfg["seeds"][0]:
            students["scratch"] = model
        if name == "offline fkl" and seed == cfg["seeds"][0]:
            students["distilled (offline fkl)"] = model
        return row

    students: dict[str, Any] = {}
    dev_models: dict[str, tuple[Any, dict[str, Any]]] = {}
    prior = unigram_logprobs(data.train, vocab)

    def reuse_dev(name: str, dev_name: str) -> None:
        """The chosen dev candidate was trained exactly like the table's first-seed run: report its test metrics
        instead of training it again (the choice itself saw only the dev half)."""
        model, row = dev_models[dev_name]
        out["runs"].setdefault(name, {})[str(s0)] = {**row, "reused_from": dev_name}
        print(f"{name} seed {s0}: ppl {row['perplexity']:.2f} (the dev run {dev_name!r}, on the test half)", flush=True)
        if name == "offline fkl":
            students["distilled (offline fkl)"] = model

    def offline_source(kind: str, tail: str = "bucket", cache: Any = None) -> Any:
        cache = cache or caches[kind]
        if tail == "unigram":
            return lambda b: expand_topk(cache.get(b.rows), prior, d.temperature)
        return lambda b: cache.get(b.rows)

    @torch.no_grad()
    def online(b: Any) -> torch.Tensor:
        return lm_logits(teacher, b.ids)

    s0 = cfg["seeds"][0]
    weights = [float(w) for w in args.ce_weights.split(",")]
    # ---- choices on the dev half (first seed): the offline signal (cache kind, tail use, CE weight) and,
    # separately, the online run's CE weight; each side gets its best setting
    out["dev"] = {}
    off_cands = [("sample", "bucket", w) for w in weights] + [
        ("topk", tail, w) for tail in args.tails.split(",") for w in weights]  # fmt: skip
    dev_off = "dev: offline fkl, {} cache{}, ce_weight {:g}".format

    def tail_label(kind: str, tail: str) -> str:
        return f", tail {tail}" if kind == "topk" else ""

    for kind, tail, w in off_cands:
        student_run(dev_off(kind, tail_label(kind, tail), w), s0,
                    Objective(loss="fkl", temperature=d.temperature, ce_weight=w, teacher=offline_source(kind, tail)),
                    on=dev)  # fmt: skip
    def dev_ppl(c: tuple[str, str, float]) -> float:
        return out["dev"][dev_off(c[0], tail_label(c[0], c[1]), c[2])][str(s0)]["perplexity"]

    kind, best_tail, cw = min(off_cands, key=dev_ppl)
    # the other losses are not linear in the target, so draws are a biased target for them (and rkl's is
    # infinite): they use the top-k cache, with the top-k cache's own dev choice
    _, topk_tail, topk_cw = min((c for c in off_cands if c[0] == "topk"), key=dev_ppl)
    dev_on = "dev: online fkl, ce_weight {:g}".format
    for w in weights:
        student_run(dev_on(w), s0, Objective(loss="fkl", temperature=d.temperature, ce_weight=w, teacher=online),
                    on=dev)  # fmt: skip
    cw_on = min(weights, key=lambda w: out["dev"][dev_on(w)][str(s0)]["perplexity"])
    out.update(cache_kind=kind, tail=best_tail, ce_weight=cw, online_ce_weight=cw_on, topk_tail=topk_tail,
               topk_ce_weight=topk_cw)  # fmt: skip
    print(f"offline fkl: {kind} cache, tail {best_tail}, ce_weight {cw:g}; other losses: topk cache, tail {topk_tail}, "
          f"ce_weight {topk_cw:g}; online: ce_weight {cw_on:g} (dev half)", flush=True)  # fmt: skip

    # ---- the table: fkl from its chosen cache, every other loss from the top-k cache
    students.clear()
    for seed in cfg["seeds"]:
        student_run("scratch", seed, Objective())
        for loss in LOSSES:
            k_, tail_, w_ = (kind, best_tail, cw) if loss == "fkl" else ("topk", topk_tail, topk_cw)
            label = f"offline {loss}"
            if loss == "fkl" and seed == s0:
                reuse_dev(label, dev_off(kind, tail_label(kind, best_tail), cw))
            else:
                student_run(label, seed, Objective(loss=loss, temperature=d.temperature, ce_weight=w_,
                                                   teacher=offline_source(k_, tail_)))  # fmt: skip
            out["runs"][label][str(seed)].update(cache=k_, tail=tail_)
    for seed in cfg["seeds"]:
        if seed == s0:
            reuse_dev("online fkl", dev_on(cw_on))
            continue
        student_run("online fkl", seed, Objective(loss="fkl", temperature=d.temperature, ce_weight=cw_on,
                                                   teacher=online))  # fmt: skip
    per_step = out["runs"]["scratch"][str(s0)]["seconds"] / tcfg.steps
    eq_steps = max(1, round(out["runs"]["offline fkl"][str(s0)]["seconds"] / per_step))
    student_run("scratch, same wall time as offline fkl", s0, Objective(), steps=eq_steps)
    # the cache's point is that a step costs no teacher forward: what the offline student reaches in the
    # online student's training time (steps from this run's measured times, both seeds)
    secs = {n: statistics.fmean(r["seconds"] for r in out["runs"][n].values()) for n in ("online fkl", "offline fkl")}
    on_steps = max(1, round(tcfg.steps * secs["online fkl"] / secs["offline fkl"]))
    for seed in cfg["seeds"]:
        label = "offline fkl, same wall time as online fkl"
        student_run(label, seed, Objective(loss="fkl", temperature=d.temperature, ce_weight=cw,
                                           teacher=offline_source(kind, best_tail)), steps=on_steps)  # fmt: skip
        out["runs"][label][str(seed)].update(cache=kind, tail=best_tail)

    # ---- what a larger k buys (top-k caches; sizes and the first seed's offline fkl)
    out["k_sweep"] = {}
    for k in [int(x) for x in args.k_sweep.split(",") if x]:
        ck, info = cache_of("topk", k)
        build_s = info["cache_seconds"]
        row = student_run(f"k sweep: offline fkl, k={k}", s0, Objective(
            loss="fkl", temperature=d.temperature, ce_weight=cw, teacher=offline_source("topk", best_tail, ck)))  # fmt: skip
        out["k_sweep"][str(k)] = {"bytes": ck.nbytes, "ratio": ck.nbytes / ck.dense_fp16_nbytes(),
                                  "build_seconds": round(build_s, 1), "perplexity": row["perplexity"],
                                  "top1": row["top1"], "top3": row["top3"], "train_seconds": row["seconds"]}  # fmt: skip
        out["runs"].pop(f"k sweep: offline fkl, k={k}")

    # ---- trained longer: a scratch student here (first seed), then the worker's rows
    long_scratch = student_run("scratch, trained longer", s0, Objective(), steps=cfg["long_steps"],
                               lr=LONG_LR["scratch"])  # fmt: skip
    out["runs"].pop("scratch, trained longer")
    long_rows = [j.get() for j in long_jobs]
    workers.close()
    workers.join()
    out["long"] = {"steps": cfg["long_steps"], "lr": LONG_LR, "rows": long_rows,
                   "scratch": {"seed": s0, "lr": LONG_LR["scratch"], "perplexity": long_scratch["perplexity"],
                               "top1": long_scratch["top1"], "top3": long_scratch["top3"],
                               "seconds": long_scratch["seconds"]}}  # fmt: skip

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


if __name__ == "__main__":
    raise SystemExit(main())
