"""The command line's parser: one function per command, in the order `distill --help` lists them. Each
command's handler comes from :mod:`distill.cli` (``handlers``: command name → function)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from distill.version import __version__
from distill.core.task import TASKS

EPILOG = """\
A recipe's `task` (classification, embedding, causal_lm) picks its pipeline; the commands after `run`
work on a finished run of any task, or say why they do not apply to it (exit code 2).

examples:
  distill demo                                  # the embedded default run (< 3 min on 2 cores)
  distill recipe --example > recipe.yaml        # a documented recipe to edit
  distill run recipe.yaml --set train.epochs=3  # run it, overriding any field
  distill run recipe.yaml --resume              # continue an interrupted run
  distill eval runs/fashion-mnist               # re-evaluate a finished run

Errors in your input print one message (what, why, how to fix) and exit with code 2.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe field (YAML value), repeatable: --set train.epochs=3 --set distill.0.temperature=2",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the run in its run directory from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final table")


def build_parser(handlers: dict[str, Callable[..., int]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Distill a large model (teacher) into a small, fast one (student): the student learns "
        "from the teacher's soft labels (softmax at a temperature T) as well as the hard labels, then is "
        "measured side by side with the teacher (size, FLOPs, latency, throughput, accuracy, retention).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"distill {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_command(sub, handlers)
    _demo_command(sub, handlers)
    _eval_command(sub, handlers)
    _compress_command(sub, handlers)
    _export_command(sub, handlers)
    _bench_command(sub, handlers)
    _report_command(sub, handlers)
    _recipe_command(sub, handlers)
    _methods_command(sub, handlers)
    _layers_command(sub, handlers)
    _models_command(sub, handlers)
    return parser


def _run_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "run", help="run a recipe: train or load the teacher, distill the student, evaluate, compare",
        description="Run the whole flow of a recipe into its run directory (default runs/<name>): train the "
        "teacher if it has no checkpoint, cache its outputs, train the baseline and the distilled student, "
        "measure every model, and write metrics.json, comparison.md/.json, weights (safetensors) and a log.",
    )  # fmt: skip
    p.add_argument("recipe", help="recipe YAML file (see `distill recipe --example`)")
    _add_common(p)
    p.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="train with N processes (PyTorch DDP through torchrun; gloo on CPU). train.batch_size is per process. "
        "Equivalent: torchrun --nproc_per_node N -m distill run RECIPE, or accelerate launch -m distill run RECIPE",
    )  # fmt: skip
    p.set_defaults(func=handlers["run"])


def _demo_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "demo", help="run the embedded default recipe (Fashion-MNIST when installed, else digits)",
        description="Distill a CNN teacher into a tiny MLP on Fashion-MNIST (when Debian's dataset-fashion-mnist "
        "is installed) or scikit-learn's digits (no set-up), and print the comparison table. Writes runs/demo.",
    )  # fmt: skip
    p.add_argument("--data", choices=["auto", "fashion_mnist", "digits"], default="auto", help="which demo (default: auto)")
    p.add_argument("--print-recipe", action="store_true", help="print the demo recipe and exit")
    _add_common(p)
    p.set_defaults(func=handlers["demo"])


def _eval_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "eval", help="re-evaluate a finished run directory (every task)",
        description="Load the teacher and students of a finished run from their saved weights, measure them "
        "side by side again (classification: accuracy and cost; embedding: agreement with the teacher and "
        "sentences/s; causal_lm: perplexity, next-token accuracy and tokens/s), print the table and write eval.json.",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run`")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=handlers["eval"])


def _compress_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "compress", help="prune and/or int8-quantize the distilled student of a finished classification run",
        description="Apply the recipe's `compress` section (or --set compress...) to RUN_DIR's student: structured or "
        "magnitude pruning followed by a short recovery distillation, then dynamic, static or sensitivity-aware "
        "int8 quantization. Writes RUN_DIR/compressed/ (pruned/, int8/: safetensors + config.json) and compress.json.",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run`")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set compress.prune.kind=structured --set compress.quantize.kind=dynamic")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=handlers["compress"])


def _export_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "export", help="export the student(s) of a finished run, parity-checked (classification: ONNX/torch/HF; embedding: ONNX)",
        description="Write RUN_DIR/export/: student.onnx (dynamic batch axis) checked against PyTorch on real test "
        "inputs (max |difference| and argmax agreement, thresholds in the recipe's export.parity; a failure stops with "
        "the numbers), student.int8.onnx (ONNX Runtime quantizer), torch/ (safetensors + config.json that rebuilds "
        "the model) and hf/ (save_pretrained, Hugging Face models only).",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run`")
    p.add_argument("--format", dest="formats", action="append", choices=["onnx", "torch", "hf"],
                   help="repeatable; default: the recipe's export.formats (onnx, torch)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.set_defaults(func=handlers["export"])


def _bench_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "bench", help="measure every stage of a classification run side by side (teacher, distilled, pruned, int8, ONNX)",
        description="Measure, in one process with the same threads: parameters, file size, FLOPs, latency at batch 1 "
        "(p50, p95), throughput at eval.throughput_batch, peak memory (a fresh child process per model), test accuracy "
        "and retention of the teacher (PyTorch and ONNX Runtime) and of every student stage present in RUN_DIR. "
        "ONNX files are called through an IOBinding with preallocated buffers (distill.export.OrtRunner; the input "
        "is copied in on every call), the teacher's and the students' alike. Writes RUN_DIR/bench.md and bench.json.",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run` (compress/export first for those stages)")
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.set_defaults(func=handlers["bench"])


def _report_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "report", help="write the report (report.html) and model card that fit the run's task",
        description="Write RUN_DIR/report.html (self-contained: figures embedded, works offline) for the run's task. "
        "classification: accuracy and cost table, curves, confusion matrices, RUN_DIR/README.md (a Hugging Face model "
        "card) and, when tensorboard is installed, RUN_DIR/tensorboard/; embedding: agreement with the teacher, "
        "teacher-vs-student similarity scatter, quality vs speed and size; causal_lm: perplexity and next-word "
        "accuracy per model, training curves, samples, and RUN_DIR/student/README.md (model card).",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run`")
    p.set_defaults(func=handlers["report"])


def _recipe_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "recipe", help="print a documented example recipe, or check one",
        description="--example prints a complete recipe with every field documented; --check checks a "
        "recipe (with --set overrides) as the first seconds of `distill run` do and prints it resolved, or lists "
        "every problem at once.",
    )  # fmt: skip
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--example", action="store_true", help="print the documented example recipe")
    g.add_argument("--check", metavar="FILE", help="check FILE as `distill run` would before writing anything (the "
                   "recipe, then the data read, the teacher loaded and tried against it, the students built, loss "
                   "terms and layers, optional packages, output places; nothing is trained or written) and print "
                   "the resolved recipe")
    p.add_argument("--schema-only", action="store_true", help="with --check: validate the recipe file alone "
                   "(no data or teacher is read)")
    p.add_argument("-q", "--quiet", action="store_true", help="with --check: only the verdict (exit 0 valid, 2 not), no log lines and no "
                   "resolved recipe")
    g.add_argument("--fields", action="store_true", help="print every field as a Markdown table")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.add_argument("--task", default="classification", choices=list(TASKS),
                   help="which task's example or fields to print (default: classification)")
    p.set_defaults(func=handlers["recipe"])


def _methods_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser("methods", help="list the distillation losses and their parameters",
                       description="List every loss a recipe's `distill` list may name, with its parameters.")  # fmt: skip
    p.set_defaults(func=handlers["methods"])


def _layers_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser(
        "layers", help="list the module paths of a recipe's teacher and student (for feature losses)",
        description="Build the recipe's teacher and student (untrained, nothing is written) and list every layer's "
        "module path, type and output shape for one sample: the names that hint/at/rkd terms take as "
        "student_layer and teacher_layer.",
    )  # fmt: skip
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.set_defaults(func=handlers["layers"])


def _models_command(sub: Any, handlers: dict[str, Callable[..., int]]) -> None:
    p = sub.add_parser("models", help="list the model builders and their parameters",
                       description="List the built-in model builders a recipe may name as teacher.arch or student.arch.")  # fmt: skip
    p.set_defaults(func=handlers["models"])
