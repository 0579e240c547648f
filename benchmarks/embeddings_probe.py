"""Train and measure extra embedding students with exactly the settings of benchmarks/embeddings.py
(same corpus, split, teacher-embedding cache, evaluation, speed measurement), without ONNX export:
for trying a student before it earns a row in the benchmark. Not a test.

    .venv/bin/python benchmarks/embeddings_probe.py '[{"name": "l025-ffn25", "kind": "layers",
        "layers": [0, 2, 5], "ffn_keep": 0.25,
        "train": {"epochs": 5, "batch_size": 64, "lr": 5e-4, "relational": 1.0, "max_minutes": 7}}]'

    .venv/bin/python benchmarks/embeddings_probe.py --validation '[...]'

``--validation`` measures on a validation split instead of the benchmark's held-out text: the
benchmark's training sentences only (written to benchmarks/.work/embeddings/validation.txt), of which
2,000 are held out again; the benchmark's held-out text and its second corpus are not used. Use it to
choose settings; the benchmark's own held-out text is for the table only.

``--extra-train SOURCE[:MAX]`` adds a training corpus (``data.extra_train``, e.g. ``builtin:wordnet:100000``);
its teacher embeddings are computed once and cached like the rest.

Prints one line per model (teacher first): speed-up at batch 64, cosine, Spearman agreement, top-10.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import embeddings as bench  # noqa: E402 - the benchmark's own recipe

from distill.engine.embed_run import run_embedding  # noqa: E402
from distill.recipe import validate_recipe  # noqa: E402


def main(argv: list[str]) -> int:
    validation = "--validation" in argv
    argv = [a for a in argv if a != "--validation"]
    extra_train = None
    if "--extra-train" in argv:
        i = argv.index("--extra-train")
        extra_train = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i : i + 2]
    if len(argv) != 1 or extra_train == "":
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    raw = bench.recipe(False)
    raw["name"] = "probe"
    raw["output"]["dir"] = str(bench.WORK / ("probe-validation" if validation else "probe"))
    if validation:
        from distill.engine.embed_run import load_texts
        from distill.fsutil import write_text

        train = load_texts(validate_recipe(bench.recipe(False))).train
        path = bench.WORK / "validation.txt"
        write_text(path, "\n".join(train) + "\n")
        raw["data"] = {**raw["data"], "corpus": str(path), "extra_eval": []}
        print(f"validation: {len(train):,} training sentences of the benchmark, 2,000 of them held out", flush=True)
    if extra_train:
        src, _, cap = extra_train.rpartition(":") if extra_train.rsplit(":", 1)[-1].isdigit() else (extra_train, "", "")
        raw["data"] = {**raw["data"], "extra_train": [src], "extra_train_max": int(cap) if cap else None}
    raw["export"] = {"onnx": False, "int8": False, "min_cosine": 0.98}
    raw["students"] = json.loads(argv[0])
    t0 = time.perf_counter()
    res = run_embedding(validate_recipe(raw), overwrite=True, progress=False, console=False)
    for r in res.rows:
        train = f", train {r['train_seconds']:.0f} s" if r.get("train_seconds") is not None else ""
        print(f"{r['name']}: speed-up b64 {r['speedup_b64']:.2f}x, cosine {r['cosine']:.3f}, "
              f"Spearman {r['spearman']:.3f}, top-10 {r['topk']:.3f}{train}", flush=True)  # fmt: skip
    print(f"wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
