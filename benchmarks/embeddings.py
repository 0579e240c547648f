"""Sentence embeddings on a phone: all-MiniLM-L6-v2 distilled into transformer and static students.

Not a test. Runs the real pipeline (`distill run` of a `task: embedding` recipe) on Debian's `fortunes`
corpus (`apt-get install fortunes`: ~24k English sentences after splitting; 2,000 held out), with
Python's own documentation (`builtin:python-docs`, technical English, never trained on) as held-out text
of a different kind. Students:

* layers-0-5: the teacher's layers 0 and 5 kept (DistilBERT-style), 7 minutes of 1 - cos plus the relational
  (in-batch similarity) term against the teacher's embeddings;
* layers-0-5-ffn50: the same with the strongest half of each block's feed-forward neurons kept;
* narrow-3x192: 3 layers x 192 (6 heads), embeddings from a PCA of the teacher's, a dense layer back to 384,
  4 minutes;
* static: the teacher's vectors of each token in the training sentences (init: context), PCA to 256, SIF
  weights from the corpus, no training;
* static-ft: each token through the teacher alone (model2vec-style), PCA to 256, SIF, fine-tuned for 6
  epochs against the teacher's sentence embeddings (with the learning rates decaying to 0 since
  2026-11-29; on a validation split, ``data.seed`` 1: Spearman 0.680 at 3 epochs, 0.702 at 6, 0.694 at
  10, 0.674 at 16).

Both static students have the anchor row (build_static's default since 2026-11-29: one learned row in
every text's weighted mean, as [CLS]/[SEP] are in the teacher's), which lets them follow how the
teacher's embedding depends on a text's length.

Learning rates, the relational weight and the static settings were chosen on a validation split of the
training sentences (benchmarks/.work sizing runs, 4 minutes each), never on the held-out text.

``--corpus wordnet`` trains on WordNet's 179k short texts instead (``apt-get install wordnet-base``;
2,000 held out; held-out fortunes and Python documentation as the other kinds of text), with the teacher's
embeddings and training on 2 threads and the transformer students trained under bf16 autocast:

* layers-0-5-ffn80: layers 0 and 5 with 80% of each block's feed-forward neurons (the full 2-layer
  student runs 2.9x the teacher on these short texts: the embedding layer and pooling weigh more),
  10 minutes;
* narrow-3x192 as above, 3 minutes; static (token init, no training) and static-ft as above;
* static-pairs: static-ft plus a row for each pair of neighbouring tokens seen twice in the training
  text (``pair_min_count: 2``, ``pair_lr`` 6e-4; a text's first token also pairs with [CLS], its last
  with [SEP]), 4 epochs, saved in float16 (``save_dtype``; measured as saved).

Static fine-tuning decays its learning rates linearly to 0 since 2026-11-29 (as the transformer students').

Its settings were chosen with experiments/2026-11-29-embedding-students/embeddings_probe.py on another split
of WordNet (``data.seed`` 1), never on this run's held-out text.

Every model is timed end to end (tokenisation included) at batch 64 and batch 1, side by side in this
process, on one thread. The settings were fixed before the run; nothing is tuned on the held-out text.
Writes benchmarks/results/embeddings.{json,md} (``--corpus wordnet``: embeddings_wordnet.{json,md}).

    .venv/bin/python benchmarks/embeddings.py [--quick] [--corpus {fortunes,wordnet}] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from distill import run  # the public API (the same call for every task)
from distill.tasks.embedding.table import render_table
from distill.core.fsutil import write_json, write_text
from distill.core.recipes import validate_recipe

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "embeddings"
RESULTS = ROOT / "results"


CORPORA = ("fortunes", "wordnet")


def recipe(quick: bool, corpus: str = "fortunes") -> dict[str, Any]:
    """The benchmark's recipe on ``corpus``: 'fortunes' (the first table; one thread, float32 training) or
    'wordnet' (the shipped recipe ``recipes/embeddings_wordnet.yaml``: 179k short texts, the teacher's
    embeddings and training on 2 threads, training under bf16 autocast; timing on one thread either way)."""
    minutes = 0.3 if quick else None
    # wordnet: its settings were chosen with experiments/2026-11-29-embedding-students/embeddings_probe.py
    if corpus == "wordnet":  # on another split
        import yaml

        raw = yaml.safe_load((ROOT.parent / "src/distill/recipes/embeddings_wordnet.yaml").read_text())
        raw["name"] = "embeddings-quick-wordnet" if quick else "embeddings-wordnet"
        raw["output"] = {"dir": str(WORK / ("quick-wordnet" if quick else "full-wordnet")),
                         "cache_dir": str(ROOT / ".work" / "cache"), "overwrite": True}  # fmt: skip
        if quick:
            raw["data"]["max_train"] = 3000
            for st in raw["students"]:
                if st.get("train", {}).get("max_minutes"):
                    st["train"]["max_minutes"] = minutes
        return raw
    train = {"batch_size": 64, "lr": 5e-4, "relational": 1.0}
    return {
        "task": "embedding",
        "name": "embeddings-quick" if quick else "embeddings",
        "data": {"corpus": "builtin:fortunes", "held_out": 2000, "max_train": 3000 if quick else None,
                 "extra_eval": ["builtin:python-docs"], "extra_eval_max": 2000, "seed": 0},
        "teacher": {"license": "apache-2.0"},
        "students": [
            {"name": "layers-0-5", "kind": "layers", "layers": [0, 5],
             "train": {**train, "epochs": 5, "max_minutes": minutes or 7}},
            {"name": "layers-0-5-ffn50", "kind": "layers", "layers": [0, 5], "ffn_keep": 0.5,
             "train": {**train, "epochs": 5, "max_minutes": minutes or 7}},
            {"name": "narrow-3x192", "kind": "narrow", "num_layers": 3, "hidden": 192, "heads": 6,
             "train": {**train, "epochs": 8, "max_minutes": minutes or 4}},
            {"name": "static", "kind": "static", "dim": 256, "weighting": "sif", "init": "context", "finetune": False},
            {"name": "static-ft", "kind": "static", "dim": 256, "weighting": "sif",
             "train": {"epochs": 6, "batch_size": 256, "lr": 1e-3}},
        ],
        "eval": {"pairs": 5000, "queries": 1000, "k": 10, "speed_sentences": 1000, "latency_sentences": 200,
                 "threads": 1},
        "export": {"onnx": True, "int8": True, "min_cosine": 0.98},
        "output": {"dir": str(WORK / ("quick" if quick else "full")), "cache_dir": str(ROOT / ".work" / "cache"),
                   "overwrite": True},
    }  # fmt: skip


def onnx_speed(student_dir: Path, texts: list[str]) -> dict[str, float]:
    """Sentences/s at batch 64 of the float and int8 ONNX files of a student (tokenisation included)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(student_dir), local_files_only=True)
    out = {}
    for name in ("model.onnx", "model_int8.onnx"):
        path = student_dir / "onnx" / name
        if not path.exists():
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

        def enc(xs: list[str]) -> None:
            b = tok(xs, padding=True, truncation=True, max_length=256, return_tensors="np", return_token_type_ids=False)
            sess.run(None, {"input_ids": b["input_ids"].astype(np.int64), "attention_mask": b["attention_mask"].astype(np.int64)})

        enc(texts[:64])
        t0 = time.perf_counter()
        for s in range(0, len(texts), 64):
            enc(texts[s : s + 64])
        out[name] = len(texts) / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 3k-sentence, 30-second-per-student trial (sizing only)")
    ap.add_argument("--corpus", choices=CORPORA, default="fortunes",
                    help="training text: fortunes (the first table, one thread) or wordnet (181k short texts, 2 threads "
                    "for the teacher's embeddings and training, bf16 training); default fortunes")
    ap.add_argument("--out", default=None, metavar="PATH",
                    help="results path without suffix (default benchmarks/results/embeddings[-quick][_wordnet]); "
                    "give one outside benchmarks/results/ for a smoke run")
    args = ap.parse_args(argv)
    torch.set_num_threads(2 if args.corpus == "wordnet" else 1)
    t0 = time.perf_counter()
    raw = recipe(args.quick, args.corpus)
    res = run(validate_recipe(raw), overwrite=True, progress=sys.stderr.isatty(), console=True)
    wall = time.perf_counter() - t0
    rows = res.rows
    from distill.data.corpus import read_corpus, split_corpus

    texts = split_corpus(read_corpus(raw["data"]["corpus"]), 2000, 0)[1][:1000]
    torch.set_num_threads(1)
    onnx = {r["name"]: onnx_speed(res.run_dir / "students" / r["name"], texts) for r in rows[1:] if r["kind"] != "static"}
    targets = {
        "transformer student >= 3x teacher throughput (b64) with Spearman >= 0.90 and top-10 >= 0.65": any(
            r["kind"] in {"layers", "narrow"} and r["speedup_b64"] >= 3 and r["spearman"] >= 0.90 and r["topk"] >= 0.65
            for r in rows),
        "static student >= 100x teacher throughput (b64) with Spearman >= 0.85": any(
            r["kind"] == "static" and r["speedup_b64"] >= 100 and r["spearman"] >= 0.85 for r in rows),
        "int8 ONNX of every transformer student keeps cosine >= 0.98": all(
            (r.get("onnx") or {}).get("int8", {}).get("cosine", 0) >= 0.98 for r in rows[1:] if r["kind"] != "static"),
        "benchmark under 30 minutes": wall < 1800,
    }  # fmt: skip
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        + ("2 threads to train, 1 to time" if args.corpus == "wordnet" else "1 thread"),
        "command": "python benchmarks/embeddings.py" + (" --quick" if args.quick else "")
        + (f" --corpus {args.corpus}" if args.corpus != "fortunes" else ""),
        "wall_seconds": wall,
    }
    stem = "embeddings" + ("-quick" if args.quick else "") + ("" if args.corpus == "fortunes" else f"_{args.corpus}")
    out = Path(args.out) if args.out else RESULTS / stem
    write_json(out.with_suffix(".json"),
               {"meta": meta, "recipe": raw, "rows": rows, "onnx_speed": onnx, "targets": targets})  # fmt: skip
    extra = list(raw["data"]["extra_eval"])
    lines = [
        "# Sentence embeddings: all-MiniLM-L6-v2 into transformer and static students",
        "",
        f"{meta['date']}; {meta['machine']}; `{meta['command']}`; wall time {wall / 60:.1f} min.",
        "",
        (
            "Training text: Debian `fortunes` sentences; quality on 2,000 held-out fortunes sentences, and on 2,000 "
            "sentences of Python's documentation (`builtin:python-docs`, a different kind of text, never trained on). "
            if args.corpus == "fortunes" else
            "Training text: WordNet 3.0's definitions and usage examples (Debian `wordnet-base`, 179k short texts); "
            "quality on 2,000 held-out WordNet texts, and on 2,000 fortunes sentences and 2,000 sentences of Python's "
            "documentation (different kinds of text, never trained on). Teacher embeddings and training on 2 threads, "
            "transformer students trained under bf16 autocast (saved and measured in float32). "
        )  # fmt: skip
        +
        "cosine: mean cosine to the teacher's embedding of the same sentence; Spearman: rank correlation of the "
        "cosine similarities of 5,000 random held-out pairs under student and teacher; top-10: share of the "
        "teacher's 10 nearest neighbours (1,000 queries against 1,000 documents) that the student also returns. "
        "Throughput end to end (tokenisation included), one thread, side by side in one process: three interleaved "
        "rounds (each times every model in turn), the median pass of each model.",
        "",
        render_table(rows, k=10, extra=extra),
        "ONNX (ONNX Runtime, one thread, batch 64, tokenisation included; int8: dynamic, per channel, layers kept "
        "in float chosen by sensitivity to hold cosine >= 0.98 to the float model):",
        "",
        "| student | float ONNX sent/s | int8 ONNX sent/s | int8 speed-up | int8 cosine to float | layers kept float | float/int8 file |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows[1:]:
        if r["kind"] == "static":
            continue
        o, sp = r.get("onnx") or {}, onnx.get(r["name"], {})
        q = o.get("int8", {})
        f32, i8 = sp.get("model.onnx"), sp.get("model_int8.onnx")
        lines.append(
            f"| {r['name']} | {f32 or 0:.0f} | {i8 or 0:.0f} | {(i8 / f32) if f32 and i8 else 0:.2f}× | {q.get('cosine', 0):.4f} | "
            f"{len(q.get('kept_float', []))} | {o.get('bytes', 0) / 1e6:.1f} / {q.get('bytes', 0) / 1e6:.1f} MB |"
        )
    lines += ["", "Targets:", ""] + [f"- {'met' if ok else 'MISSED'}: {name}" for name, ok in targets.items()]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
