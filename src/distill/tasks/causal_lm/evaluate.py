"""Evaluating a language-model run: teacher vs student(s) side by side, and the files written.

``comparison.md/.json``: parameters, forward MACs per token (LM head included), tokens/s (measured
in one process, alternating), perplexity, next-token top-1/top-3 on the held-out blocks, and the
student's retention of the teacher's top-1. ``samples.md/.json``: greedy and sampled continuations.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from distill.core.fsutil import write_json, write_text
from distill.tasks.causal_lm.models import count_parameters, macs_per_token
from distill.tasks.causal_lm.signal import evaluate_lm, lm_logits, samples, tokens_per_second

log = logging.getLogger("distill")


@torch.no_grad()
def mean_true_kl(student: Any, teacher: Any, ids: torch.Tensor, batch_size: int, temperature: float = 1.0) -> float:
    """Mean forward KL(teacher ‖ student) per token over ``ids`` (full vocabulary), nats."""
    from distill.losses.token import true_kl

    total, n = 0.0, 0
    for s in range(0, len(ids), batch_size):
        x = ids[s : s + batch_size]
        mask = torch.ones_like(x, dtype=torch.bool)
        total += float(true_kl(lm_logits(student, x), lm_logits(teacher, x), mask, temperature)) * x.numel()
        n += x.numel()
    return total / max(n, 1)


def comparison(models: dict[str, Any], data: Any, recipe: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    ev = recipe.eval
    val = data.val[: ev.max_blocks] if ev.max_blocks else data.val
    context = data.val.shape[1]
    speed = tokens_per_second(models, val, batch_size=ev.batch_size, batches=ev.speed_batches)
    rows = []
    for name, m in models.items():
        q = evaluate_lm(m, val, batch_size=ev.batch_size)
        rows.append({"model": name, "params": count_parameters(m), "macs_per_token": macs_per_token(m, context),
                     "tokens_per_s": round(speed[name], 1), **q})  # fmt: skip
    teacher = rows[0]
    for r in rows:
        r["top1_retention"] = r["top1"] / teacher["top1"] if teacher["top1"] else float("nan")
        r["compute_share"] = r["macs_per_token"] / teacher["macs_per_token"]
    extra: dict[str, Any] = {"val_blocks": len(val)}
    extra["val_true_kl"] = {
        name: mean_true_kl(m, models["teacher"], val, ev.batch_size) for name, m in models.items() if name != "teacher"
    }
    if ev.samples:
        prompts = val[: ev.samples, : min(8, context - 1)]
        extra["samples"] = samples(models, data.tokenizer, prompts, ev.sample_len, seed=recipe.train.seed)
    lines = [
        "| model | params | MACs/token | compute vs teacher | tokens/s | perplexity | top-1 | top-3 | top-1 retention |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['macs_per_token']:,} | {100 * r['compute_share']:.1f}% | "
            f"{r['tokens_per_s']:,.0f} | {r['perplexity']:.2f} | {100 * r['top1']:.2f}% | {100 * r['top3']:.2f}% | "
            f"{100 * r['top1_retention']:.1f}% |"
        )
    lines.append("")
    lines.append(f"Held-out: {rows[0]['tokens']:,} next-token predictions ({len(val)} blocks of {context}). "
                 "True KL(teacher‖student) per token: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in extra["val_true_kl"].items()) + " nats.")  # fmt: skip
    return "\n".join(lines) + "\n", rows, extra


def write_outputs(run_dir: Path, metrics: dict[str, Any], table: str, *, console: bool) -> None:
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "comparison.json", {"task": "causal_lm", "models": metrics["models"]})
    head = f"# {metrics['name']}: teacher vs student (mode {metrics['mode']}, loss {metrics['loss']})\n\n"
    write_text(run_dir / "comparison.md", head + table)
    if "samples" in metrics:
        write_json(run_dir / "samples.json", metrics["samples"])
        parts = ["# Generation samples (greedy, and sampled with a fixed seed)\n"]
        for i, row in enumerate(metrics["samples"], 1):
            parts.append(f"## Prompt {i}: {row['prompt']!r}\n")
            parts += [f"- **{k}**: {v!r}" for k, v in row.items() if k != "prompt"]
            parts.append("")
        write_text(run_dir / "samples.md", "\n".join(parts) + "\n")
    log.info("run directory: %s", run_dir)
    if console:
        log.info("\n%s", table)
