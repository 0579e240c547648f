"""Train and measure extra embedding students with exactly the settings of benchmarks/embeddings.py
(same corpus, split, teacher-embedding cache, evaluation, speed measurement), without ONNX export:
for trying a student before it earns a row in the benchmark. Not a test.

    .venv/bin/python experiments/2026-11-29-embedding-students/embeddings_probe.py '[{"name": "l025-ffn25", "kind": "layers",
        "layers": [0, 2, 5], "ffn_keep": 0.25,
        "train": {"epochs": 5, "batch_size": 64, "lr": 5e-4, "relational": 1.0, "max_minutes": 7}}]'

    .venv/bin/python experiments/2026-11-29-embedding-students/embeddings_probe.py --validation '[...]'

``--validation`` measures on a validation split instead of the benchmark's held-out text: the
benchmark's training sentences only (written to benchmarks/.work/embeddings/validation.txt), of which
2,000 are held out again; the benchmark's held-out text and its second corpus are not used. Use it to
choose settings; the benchmark's own held-out text is for the table only.

``--tag NAME`` writes the run to its own folder (``probe[-validation]-NAME``), so that two probes can run
side by side.

``--threads N`` runs the teacher's embeddings and training on N torch threads (timing stays on one).

``--data JSON`` sets fields of the recipe's ``data`` section, e.g. ``'{"augment": 1}'``.

``--extra-train SOURCE[:MAX]`` adds a training corpus (``data.extra_train``, e.g. ``builtin:wordnet:100000``);
its teacher embeddings are computed once and cached like the rest. 2,000 of its texts are held out of
training and measured too (``data.extra_eval``).

Prints one line per model (teacher first): speed-up at batch 64, cosine, Spearman agreement, top-10,
then, for each student, the same on 2,000 of its own training sentences (the gap to the held-out
numbers is what it did not generalise).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))

import embeddings as bench  # noqa: E402 - the benchmark's own recipe

from distill.tasks.embedding.pipeline import run_embedding  # noqa: E402
from distill.core.recipes import validate_recipe  # noqa: E402


def seen_quality(recipe, res) -> None:  # noqa: ANN001
    """Each student's quality on 2,000 of its own training sentences (seeded sample)."""
    import numpy as np

    from distill.tasks.embedding.cache import cached_embeddings, teacher_fingerprint
    from distill.tasks.embedding.pipeline import default_teacher_path, load_student, load_texts
    from distill.models.sentence import load_sentence_encoder
    from distill.tasks.embedding.metrics import quality

    texts = load_texts(recipe)
    idx = np.sort(np.random.default_rng(0).choice(len(texts.train), min(2000, len(texts.train)), replace=False))
    path = Path(recipe.teacher.path) if recipe.teacher.path else default_teacher_path()
    teacher = load_sentence_encoder(path)
    all_t = cached_embeddings(lambda x: teacher.encode(x, batch_size=64), texts.train, Path(recipe.output.cache_dir),
                              teacher_fingerprint(path, teacher), "the training text")  # fmt: skip
    sample = [texts.train[i] for i in idx]
    for spec in recipe.students:
        student = load_student(spec, res.run_dir / "students" / spec.name)
        q = quality(student.encode(sample), all_t[idx], n_pairs=5000, n_queries=1000, k=10, seed=0)
        print(f"{spec.name} on 2,000 of its training sentences: cosine {q['cosine']:.3f}, Spearman {q['spearman']:.3f}, "
              f"top-10 {q['top10']:.3f}", flush=True)  # fmt: skip


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", help="JSON list of student specs (the recipe's `students`)")
    ap.add_argument("--validation", action="store_true", help="measure on a validation split of the training text")
    ap.add_argument("--tag", default="", help="run folder probe[-validation]-TAG, so that probes can run side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the teacher and training (timing: 1)")
    ap.add_argument("--data", type=json.loads, default={}, help="""recipe `data` fields as JSON, e.g. '{"augment": 1}'""")
    ap.add_argument("--extra-train", default=None, help="SOURCE[:MAX], added to the training text (2,000 held out)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    raw = bench.recipe(False)
    raw["name"] = "probe"
    raw["output"]["dir"] = str(bench.WORK / (("probe-validation" if args.validation else "probe") + (f"-{args.tag}" if args.tag else "")))
    if args.validation:
        from distill.tasks.embedding.pipeline import load_texts
        from distill.core.fsutil import write_text

        train = load_texts(validate_recipe(bench.recipe(False))).train
        path = bench.WORK / "validation.txt"
        write_text(path, "\n".join(train) + "\n")
        raw["data"] = {**raw["data"], "corpus": str(path), "extra_eval": []}
        print(f"validation: {len(train):,} training sentences of the benchmark, 2,000 of them held out", flush=True)
    if args.extra_train:
        et = args.extra_train
        src, _, cap = et.rpartition(":") if et.rsplit(":", 1)[-1].isdigit() else (et, "", "")
        raw["data"] = {**raw["data"], "extra_train": [src], "extra_train_max": int(cap) if cap else None,
                       "extra_eval": [*raw["data"]["extra_eval"], src]}  # fmt: skip
    raw["data"] = {**raw["data"], **args.data}
    raw["eval"] = {**raw["eval"], "threads": 1}
    raw["export"] = {"onnx": False, "int8": False, "min_cosine": 0.98}
    raw["students"] = json.loads(args.students)
    t0 = time.perf_counter()
    recipe = validate_recipe(raw)
    res = run_embedding(recipe, overwrite=True, progress=False, console=False)
    for r in res.rows:
        train = f", train {r['train_seconds']:.0f} s" if r.get("train_seconds") is not None else ""
        others = "".join(f", {k[6:]}: Spearman {v['spearman']:.3f} top-10 {v['topk']:.3f}" for k, v in r.items() if k.startswith("extra:"))
        print(f"{r['name']}: speed-up b64 {r['speedup_b64']:.2f}x, cosine {r['cosine']:.3f}, "
              f"Spearman {r['spearman']:.3f}, top-10 {r['topk']:.3f}{others}{train}", flush=True)  # fmt: skip
    seen_quality(recipe, res)
    print(f"wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
