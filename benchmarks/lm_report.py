"""The LM benchmark's summary (targets) and Markdown report, from the results dict `benchmarks/lm.py`
builds (and writes to benchmarks/results/lm.json). Imported by lm.py; also re-renders a saved result:

    .venv/bin/python benchmarks/lm_report.py     # benchmarks/results/lm.json -> lm.md
    .venv/bin/python benchmarks/lm_report.py --out /tmp/lm.md   # the same, written elsewhere (a check)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


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

    # at the scratch student's steps only (the equal-wall-time rows train longer)
    equal = {k: v for k, v in agg.items() if "same wall time" not in k}
    best, closed = closed_by({k: v for k, v in equal.items() if k.startswith(("offline ", "online "))})
    best_off, closed_off = closed_by({k: v for k, v in equal.items() if k.startswith("offline ")})
    off, on = agg["offline fkl"]["perplexity"][0], agg["online fkl"]["perplexity"][0]
    out["targets"] = {
        "best_loss": best,
        "gap_closed": closed,
        "gap_closed_met": closed >= 0.30,
        "best_offline": best_off,
        "gap_closed_offline": closed_off,
        "teacher_better_than_scratch": teacher_ppl < scratch,
        "compute_share": out["student"]["macs_per_token"] / out["teacher"]["macs_per_token"],
        "compute_met": out["student"]["macs_per_token"] <= 0.10 * out["teacher"]["macs_per_token"],
        "cache_ratio_met": max(c["ratio"] for c in out["cache"].values()) <= 0.01,
        "offline_vs_online_short": off / on - 1,
    }
    long = out.get("long")
    if long:  # the 2% target is measured on students trained longer (the 200-step ones are far from converged)
        per = {sig: mean_std([r["test"]["perplexity"] for r in long["rows"] if r["signal"] == sig])
               for sig in ("online", "sample")}  # fmt: skip
        long["summary"] = {sig: {"perplexity": per[sig],
                                 **{k: mean_std([r["test"][k] for r in long["rows"] if r["signal"] == sig])
                                    for k in ("top1", "top3")},
                                 "seconds": mean_std([r["seconds"] for r in long["rows"] if r["signal"] == sig])}
                           for sig in per}  # fmt: skip
        off_l, on_l = per["sample"][0], per["online"][0]
        out["targets"]["offline_vs_online"] = off_l / on_l - 1
        out["targets"]["offline_vs_online_met"] = abs(off_l / on_l - 1) <= 0.02
        sc = long["scratch"]["perplexity"]
        out["targets"]["long_gap_closed"] = {sig: (sc - per[sig][0]) / (sc - teacher_ppl) for sig in per}
    if "offline fkl, same wall time as online fkl" in agg:
        out["targets"]["offline_same_time_vs_online"] = agg["offline fkl, same wall time as online fkl"]["perplexity"][0] / on - 1


def signal(out: dict[str, Any], name: str) -> str:
    if name.startswith("offline "):
        row = next(iter(out["runs"][name].values()))
        tail = f", tail {row['tail']}" if row["cache"] == "topk" and row.get("tail") != "bucket" else ""
        return f"{'top-32' if row['cache'] == 'topk' else '32 draws'} cache{tail}, CE {row['ce_weight']:g}"
    if name.startswith("online"):
        return f"online, CE {out['online_ce_weight']:g}"
    return "data only"


def built(cache: dict[str, Any]) -> str:
    if cache["seconds"] >= 1:
        return f"built in {cache['seconds']:.0f} s"
    return ("found complete in the work folder (an earlier run had built it from the same teacher weights and data: "
            "same fingerprint" + (f"; that build took {cache['earlier_seconds']:.0f} s" if "earlier_seconds" in cache
                                  else "") + ")")  # fmt: skip


def markdown(out: dict[str, Any]) -> str:
    agg, t, c, tg, lg = out["summary"], out["teacher"], out["cache"], out["targets"], out["long"]
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
        "| model | teacher signal | steps (× 2,048 tokens) | perplexity | top-1 | top-3 | train s |",
        "|---|---|---|---|---|---|---|",
        f"| teacher | – | {out['config']['teacher_steps']} | {t['perplexity']:.2f} | {100 * t['top1']:.2f} | "
        f"{100 * t['top3']:.2f} | {t['train_seconds']:.0f} |",
    ]
    for name, a in agg.items():
        def pm(k: str, s: float = 1, a: dict[str, Any] = a) -> str:
            return f"{s * a[k][0]:.2f}" + (f" ± {s * a[k][1]:.2f}" if a["n"] > 1 else "")

        label = name + (f" (seed {out['config']['seeds'][0]} only)" if a["n"] < n_seeds else "")
        lines.append(f"| {label} | {signal(out, name)} | {a['steps']} | {pm('perplexity')} | {pm('top1', 100)} | {pm('top3', 100)} | "
                     f"{a['seconds'][0]:.0f} |")  # fmt: skip
    ck, topk, smp = c[out["cache_kind"]], c["topk"], c["sample"]  # noqa: F841 - ck: the chosen cache
    lines += [
        "",
        f"**Trained longer** ({lg['steps']:,} steps × 2,048 tokens, {lg['steps'] * 2048 / out['data']['train_tokens']:.1f} "
        f"epochs; fkl, no CE; the online student's peak learning rate, chosen on the dev half by "
        f"`experiments/2026-11-29-lm-learning-rate/lm_lr.py`, for both distilled students (only the teacher signal "
        f"differs), scratch its own; "
        f"run in a worker process beside the table's, one thread each):",
        "",
        "| student | teacher signal | peak lr | perplexity | top-1 | top-3 | train s | gap closed |",
        "|---|---|---|---|---|---|---|---|",
        f"| scratch (seed {lg['scratch']['seed']} only) | data only | {lg['scratch']['lr']:g} | "
        f"{lg['scratch']['perplexity']:.2f} | {100 * lg['scratch']['top1']:.2f} | {100 * lg['scratch']['top3']:.2f} | "
        f"{lg['scratch']['seconds']:.0f} | – |",
    ]
    for sig, label in (("online", "online fkl"), ("sample", "offline fkl")):
        a = lg["summary"][sig]
        what = "online" if sig == "online" else f"{smp['k']} systematic draws cache"
        lines.append(f"| {label} | {what} | {lg['lr'][sig]:g} | {a['perplexity'][0]:.2f} ± {a['perplexity'][1]:.2f} | "
                     f"{100 * a['top1'][0]:.2f} ± {100 * a['top1'][1]:.2f} | {100 * a['top3'][0]:.2f} ± "
                     f"{100 * a['top3'][1]:.2f} | {a['seconds'][0]:.0f} | {100 * tg['long_gap_closed'][sig]:.1f}% |")  # fmt: skip
    caches_built = all(x["seconds"] >= 1 for x in c.values())
    s0 = str(out["config"]["seeds"][0])
    lines += [
        "",
        f"Mean ± sample std over {n_seeds} seeds (init and batch order). Offline fkl uses the cache and cross-entropy "
        "weight with the best dev perplexity (below); the other losses use the top-k cache with its own best dev "
        "setting: they are not linear in the target, so a sampled target is biased for them (and infinite for rkl). "
        "Losses at their default parameters (jsd β = 0.5, skew α = 0.1), T = 1. The online run has its own dev "
        f"choice of CE weight. Perplexity, top-1/top-3 next-token accuracy (%) after the last step on the test half "
        f"of the held-out documents ({out['test_blocks']} blocks; nothing was chosen on it). The first seed of offline "
        "fkl and of online fkl is the chosen dev run itself, measured on the test half (trained once, not twice).",
        "",
        "Two caches of the same size, built once from the teacher (`distill.cache`): **topk** keeps the teacher's "
        "32 most likely tokens and the remaining mass (one 'everything else' bucket: a biased target that says "
        "nothing about the shape of the tail); **sample** keeps 32 draws from the teacher per position as an "
        "empirical distribution (random-sampling KD, Anshumann et al. 2025: an unbiased forward-KL target), drawn "
        f"{smp.get('draws', 'multinomial')}" + (" (one uniform offset and points 1/32 apart on the teacher's "
        "cumulative distribution: each token's count is within 1 of 32·p, so a token with p ≥ 1/32 is never "
        "missed; unbiased, with less variance than independent draws)" if smp.get("draws") == "systematic" else "")
        + ".",
        "",
        "Choices on the dev half (seed " + s0 + ", " + str(out["dev_blocks"]) + " blocks): "
        + ", ".join(f"{k.removeprefix('dev: ')} → perplexity {v[s0]['perplexity']:.1f}" for k, v in out["dev"].items())
        + ".",
        "",
        f"Caches for {ck['positions']:,} positions vs {ck['dense_fp16_bytes'] / 1e6:.0f} MB of dense fp16 logits: "
        f"top-{topk['k']} {topk['bytes'] / 1e6:.1f} MB = **{100 * topk['ratio']:.2f}%**, {built(topk)} "
        f"(its top-{topk['k']} held {100 * topk['mean_slot_mass']:.1f}% of the teacher's probability on average); "
        f"sampled {smp['bytes'] / 1e6:.1f} MB = **{100 * smp['ratio']:.2f}%**, {built(smp)} "
        f"({smp['mean_distinct']:.1f} distinct tokens among the {smp['k']} draws on average).",
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
        f"| k = 32 cache ≤ 1% of dense fp16 logits | top-k {100 * topk['ratio']:.2f}%, sampled {100 * smp['ratio']:.2f}% | "
        f"{'yes' if tg['cache_ratio_met'] else 'no'} |",
        f"| offline (cache) student within 2% of the online-teacher student's perplexity (fkl, students trained "
        f"{lg['steps']:,} steps with the same recipe, mean of {n_seeds} seeds) | "
        f"{lg['summary']['sample']['perplexity'][0]:.1f} vs {lg['summary']['online']['perplexity'][0]:.1f}: "
        f"{100 * tg['offline_vs_online']:+.1f}% (after {agg['offline fkl']['steps']} steps, table above: "
        f"{agg['offline fkl']['perplexity'][0]:.1f} vs {agg['online fkl']['perplexity'][0]:.1f}, "
        f"{100 * tg['offline_vs_online_short']:+.1f}%) | {'yes' if tg['offline_vs_online_met'] else 'no'} |",
        f"| the benchmark runs in under 30 minutes (teacher and caches included) | {out['wall_seconds'] / 60:.1f} min"
        + (" (teacher reused)" if out.get("teacher_reused") else "")
        + (" (caches found complete, not built)" if not caches_built else "") + " | "
        f"{'yes' if out['wall_seconds'] < 1800 and not out.get('teacher_reused') and caches_built else 'no'} |",
    ]
    if "offline_same_time_vs_online" in tg:
        same = agg["offline fkl, same wall time as online fkl"]
        lines += ["", (
            f"After {agg['online fkl']['steps']} steps the cache's student "
            + ("trails the online one" if tg["offline_vs_online_short"] > 0 else "is not behind the online one") +
            ". A cache step costs no teacher forward: "
            f"in the online student's training time ({agg['online fkl']['seconds'][0]:.0f} s) the cache's student "
            f"makes {same['steps']} steps and reaches perplexity {same['perplexity'][0]:.1f} against the online "
            f"student's {agg['online fkl']['perplexity'][0]:.1f} ({100 * tg['offline_same_time_vs_online']:+.1f}%; "
            f"not a target: the target compares equal steps). The cache is built once per teacher and data "
            f"and reused by every run (this run: {built(ck)}).")]
    if out.get("k_sweep"):
        lines += ["", "What a larger k buys (top-k caches, offline fkl, seed " + str(out["config"]["seeds"][0]) + ", same "
                  "tail and CE weight):", "",
                  "| k | cache vs dense fp16 | perplexity | top-1 | top-3 | cache build s |", "|---|---|---|---|---|---|"]
        for k, r in out["k_sweep"].items():
            lines.append(f"| {k} | {100 * r['ratio']:.2f}% | {r['perplexity']:.2f} | {100 * r['top1']:.2f} | "
                         f"{100 * r['top3']:.2f} | {r['build_seconds']:.0f} |")  # fmt: skip
    first = RESULTS / "lm_pure_kd.json"
    if first.exists() and "--quick" not in out["command"].split():
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
            "cache kind, the tail and the cross-entropy term are chosen here.",
        ]
    lines += ["", "Samples (greedy, prompt = first 8 held-out tokens):", ""]
    for row in out["samples"]:
        lines.append(f"- prompt {row['prompt']!r}: " + "; ".join(
            f"{k.replace(' (greedy)', '')} → {v!r}" for k, v in row.items() if k.endswith("(greedy)")))  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    from distill.core.fsutil import write_text

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(RESULTS / "lm.json"), help="the saved result to render")
    ap.add_argument("--out", default=str(RESULTS / "lm.md"), help="the Markdown file to write")
    args = ap.parse_args()
    result = json.loads(Path(args.json).read_text())
    write_text(Path(args.out), markdown(result))
    print(f"wrote {args.out}", file=sys.stderr)
