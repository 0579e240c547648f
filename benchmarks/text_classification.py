"""Text classification: all-MiniLM-L6-v2 fine-tuned on WordNet's lexicographer classes, then distilled.

Not a test. Runs the real pipeline (`distill run` of the documented `task: text_classification` example
recipe, through the public API) on WordNet 3.0's definitions labelled by their lexicographer file
(`builtin:wordnet-lexnames`, Debian's `wordnet-base`: 45 classes; a stratified sample of 12,000 texts,
70/10/20 train/validation/test):

* teacher: all-MiniLM-L6-v2 (22.7 M parameters) with a new classification head, fine-tuned in the run on the
  training split for 3 epochs (lr 1.5e-4) (its fine-tuning time is its train time);
* layers-0-5: the fine-tuned teacher's layers 0 and 5 kept (DistilBERT-style), distilled
  (0.9 KD at T=2 + 0.1 cross-entropy; lr 3e-4, 4 epochs);
* static: a token table from the teacher's token vectors (PCA to 128), mean of a text's rows, a linear head:
  no network at inference; 10 epochs;
* the TF-IDF (words 1-2, characters 2-4) + logistic-regression baseline on the same training split.

Every model is timed raw text in, label out (tokenisation included) at batch 32 and 1, the models taking turns
in this process, on one thread (set here before torch starts). Quality on the test split, never trained on.
Settings are the example recipe's, fixed before the run. Writes benchmarks/results/text_classification.{json,md}.

    .venv/bin/python benchmarks/text_classification.py [--quick] [--out STEM]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_io  # noqa: E402

import distill  # noqa: E402
from distill.tasks.text_classification.recipe import example_recipe  # noqa: E402

TARGETS = {  # what the run must show to back the guide's claims
    "layers-0-5 keeps >= 90% of the teacher's test accuracy": lambda s: s["layers-0-5"]["retention"] >= 0.90,
    "layers-0-5 beats the TF-IDF baseline": lambda s: s["layers-0-5"]["accuracy"] > s["baseline"]["accuracy"],
    "static runs >= 10x the teacher's texts/s at batch 1": lambda s: s["static"]["speedup_b1"] >= 10,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,500 texts, 1 epoch each: a check that it runs")
    ap.add_argument("--out", help="write STEM.json and STEM.md instead of benchmarks/results/text_classification")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    raw = example_recipe()
    if args.quick:
        raw["data"]["max_examples"] = 1500
        raw["teacher"]["epochs"] = 1
        raw["train"]["epochs"] = 1
        raw["students"][1]["train"]["epochs"] = 2
    work = Path(tempfile.mkdtemp(prefix="text-classification-"))
    raw["output"] = {"dir": str(work / "run"), "report": False}
    t0 = time.perf_counter()
    result = distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
    wall = time.perf_counter() - t0
    rows = result.rows
    by = {("baseline" if r["role"] == "baseline" else r["name"]): r for r in rows}
    out = results_io.header("text_classification", quick=args.quick, wall_seconds=round(wall, 1), recipe=raw,
                            run_dir=str(result.run_dir),
                            models=[{k: v for k, v in r.items() if k not in {"history", "per_class_accuracy"}}
                                    for r in rows])  # fmt: skip
    judged = {}
    if not args.quick:
        judged = {name: bool(check(by)) for name, check in TARGETS.items()}
    out["targets"] = judged
    md = results_io.title_lines("Text classification: all-MiniLM-L6-v2 on WordNet's 45 lexicographer classes", out)
    md += [f"Command: `{out['command']}`. Data: builtin:wordnet-lexnames, {raw['data']['max_examples']:,} texts "
           f"(stratified sample), 70/10/20 train/validation/test.", "", result.table_markdown]  # fmt: skip
    if judged:
        md += results_io.table(["target", "met"], [f"| {k} | {'yes' if v else 'no'} |" for k, v in judged.items()])
    else:
        md += ["(quick run: a check that the benchmark runs; the targets are judged on the full run only)", ""]
    results_io.write(out, md, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
