"""Command line: argument parsing only; each command calls one library function."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

from distill import __version__
from distill.core.task import TASKS
from distill.errors import DistillError

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


def build_parser() -> argparse.ArgumentParser:
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
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo", help="run the embedded default recipe (Fashion-MNIST when installed, else digits)",
        description="Distill a CNN teacher into a tiny MLP on Fashion-MNIST (when Debian's dataset-fashion-mnist "
        "is installed) or scikit-learn's digits (no set-up), and print the comparison table. Writes runs/demo.",
    )  # fmt: skip
    p.add_argument("--data", choices=["auto", "fashion_mnist", "digits"], default="auto", help="which demo (default: auto)")
    p.add_argument("--print-recipe", action="store_true", help="print the demo recipe and exit")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "eval", help="re-evaluate a finished run directory (every task)",
        description="Load the teacher and students of a finished run from their saved weights, measure them "
        "side by side again (classification: accuracy and cost; embedding: agreement with the teacher and "
        "sentences/s; causal_lm: perplexity, next-token accuracy and tokens/s), print the table and write eval.json.",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run`")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=cmd_eval)

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
    p.set_defaults(func=cmd_compress)

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
    p.set_defaults(func=cmd_export)

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
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "report", help="write the report (report.html) and model card that fit the run's task",
        description="Write RUN_DIR/report.html (self-contained: figures embedded, works offline) for the run's task. "
        "classification: accuracy and cost table, curves, confusion matrices, RUN_DIR/README.md (a Hugging Face model "
        "card) and, when tensorboard is installed, RUN_DIR/tensorboard/; embedding: agreement with the teacher, "
        "teacher-vs-student similarity scatter, quality vs speed and size; causal_lm: perplexity and next-word "
        "accuracy per model, training curves, samples, and RUN_DIR/student/README.md (model card).",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by `distill run`")
    p.set_defaults(func=cmd_report)

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
    p.add_argument("-q", "--quiet", action="store_true", help="with --check: no log lines, only the result")
    g.add_argument("--fields", action="store_true", help="print every field as a Markdown table")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.add_argument("--task", default="classification", choices=list(TASKS),
                   help="which task's example or fields to print (default: classification)")
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("methods", help="list the distillation losses and their parameters",
                       description="List every loss a recipe's `distill` list may name, with its parameters.")  # fmt: skip
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "layers", help="list the module paths of a recipe's teacher and student (for feature losses)",
        description="Build the recipe's teacher and student (untrained, nothing is written) and list every layer's "
        "module path, type and output shape for one sample: the names that hint/at/rkd terms take as "
        "student_layer and teacher_layer.",
    )  # fmt: skip
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("models", help="list the model builders and their parameters",
                       description="List the built-in model builders a recipe may name as teacher.arch or student.arch.")  # fmt: skip
    p.set_defaults(func=cmd_models)
    return parser


# ---------------------------------------------------------------- commands
def _relaunch(nproc: int, argv: list[str]) -> int:
    """Re-run this command under torchrun with ``nproc`` processes; return its exit code."""
    import os
    import subprocess

    if nproc < 1:
        raise DistillError(f"--nproc must be >= 1 (got {nproc})")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "distill", *rest]
    import tempfile

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        # torchrun reports any failed worker as exit code 1; a worker that stops on a user
        # error (DistillError) leaves its own exit code here so that we can return it
        env["DISTILL_EXIT_FILE"] = str(Path(tmp) / "exit")
        print(f"launching {nproc} processes: {' '.join(cmd[1:])}", file=sys.stderr)
        done = subprocess.run(cmd, env=env)
        exit_file = Path(env["DISTILL_EXIT_FILE"])
        if done.returncode != 0 and exit_file.exists():
            return int(exit_file.read_text().strip() or done.returncode)
    return done.returncode


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from distill import api
    from distill.core.task import task_of_recipe
    from distill.errors import UnsupportedError
    from distill.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)  # validate before starting processes
    task = task_of_recipe(recipe)
    if args.nproc != 1 and task.nproc is not None:
        raise UnsupportedError(f"--nproc {args.nproc}: {task.nproc}.")
    if args.nproc != 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch(args.nproc, args.argv)
    try:
        result = api.run(recipe, resume=args.resume, overwrite=args.overwrite,
                         progress=not (args.no_progress or args.quiet), console=not args.quiet)  # fmt: skip
    finally:
        _close_process_group()
    if args.quiet:
        print(result.table_markdown)
    return 0


def _close_process_group() -> None:
    """Under torchrun, tear the process group down before the interpreter exits: left to the exit
    handlers, gloo's threads can be destroyed while running (abort, 'terminate called ...')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def demo_recipe_path(which: str = "auto") -> tuple[Path, str]:
    from distill.recipe import FASHION_MNIST_DIR

    if which == "auto":
        which = "fashion_mnist" if Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists() else "digits"
    name = {"fashion_mnist": "demo_fashion_mnist.yaml", "digits": "demo_digits.yaml"}[which]
    return Path(str(resources.files("distill") / "recipes" / name)), which


def cmd_demo(args: argparse.Namespace) -> int:
    from distill.api import run
    from distill.recipe import load_recipe

    path, which = demo_recipe_path(args.data)
    if args.print_recipe:
        print(path.read_text(), end="")
        return 0
    if which == "digits" and args.data == "auto":
        print("Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist); demo on scikit-learn's digits.",
              file=sys.stderr)  # fmt: skip
    recipe = load_recipe(path, args.overrides)
    overwrite = args.overwrite or not args.resume
    result = run(recipe, resume=args.resume, overwrite=overwrite, progress=not (args.no_progress or args.quiet),
                 console=not args.quiet)  # fmt: skip
    if args.quiet:
        print(result.table_markdown)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distill import api

    result = api.evaluate(args.run_dir, console=not args.quiet)
    if args.quiet:
        print(result.table_markdown)
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from distill import api
    from distill.core.logs import setup_logging

    setup_logging(None)
    report = api.compress(args.run_dir, args.overrides, progress=not args.no_progress)
    for name, st in report["stages"].items():
        print(f"{name:<10} test accuracy {100 * st['test_acc']:.2f}%")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distill import api
    from distill.core.logs import setup_logging

    setup_logging(None)
    report = api.export(args.run_dir, args.formats, args.overrides)
    for kind, path in report["files"].items():
        print(f"{kind:<11} {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from distill import api
    from distill.core.logs import setup_logging
    from distill.tasks.classification.bench import render_bench

    setup_logging(None)
    print(render_bench(api.bench(args.run_dir, memory=not args.no_memory, threads=args.threads)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from distill import api
    from distill.report.plots import tensorboard_available

    from distill.core.task import task_of_run

    for path in api.report(args.run_dir):
        print(path)
    if task_of_run(args.run_dir).name == "classification" and not tensorboard_available():
        print("tensorboard is not installed: pip install 'distill[tensorboard]' for event files", file=sys.stderr)
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from distill.recipe import example_yaml, fields_markdown, load_recipe

    if args.fields:
        print(fields_markdown(args.task), end="")
        return 0
    if args.example:
        print(example_yaml(args.task), end="")
        return 0
    recipe = load_recipe(args.check, args.overrides)
    if not args.schema_only:
        from distill import api

        api.check(recipe, console=not args.quiet)  # the run's own preflight: data, teacher, students, places
    what = "the recipe is valid" if args.schema_only else "valid: the recipe, and every check a run makes first"
    print(f"# {args.check}: {what}", file=sys.stderr)
    print(recipe.to_yaml(), end="")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from distill.losses import REGISTRY

    for name, spec in REGISTRY.items():
        needs = ", ".join(n for n in spec.needs)
        print(f"{name:<10} {spec.summary}  [needs: {needs}]")
        for pname, p in spec.params.items():
            shown = "(required)" if p.required_text else f"= {p.default!r}"
            print(f"{'':<10}   {pname} {shown}: {p.doc}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from distill import api
    from distill.recipe import load_recipe

    for what, rows in api.layers(load_recipe(args.recipe, args.overrides)).items():
        print(f"{what}:")
        for name, kind, shape in rows:
            print(f"  {name:<24} {kind:<14} {shape}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import inspect

    from distill.models import BUILDERS

    for name, fn in BUILDERS.items():
        doc = (inspect.getdoc(fn) or "").splitlines()[0]
        print(f"{name:<6} {doc}")
        for pname, p in inspect.signature(fn).parameters.items():
            if pname in {"in_shape", "num_classes"}:
                continue
            print(f"{'':<6}   {pname} = {p.default!r}")
    return 0


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    from distill.core.logs import setup_logging

    setup_logging(None)  # this command's stderr (a command may set it up again, quieter or with its run.log)
    try:
        code = func(args)
    except DistillError as exc:
        if os.environ.get("DISTILL_EXIT_FILE"):
            Path(os.environ["DISTILL_EXIT_FILE"]).write_text(str(exc.exit_code))
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except OSError as exc:  # a file-system problem no check caught: say which path and why, not a traceback
        if args.debug:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}. Fix: check that the path exists and that you "
              "may read and write it (--debug shows where it happened).", file=sys.stderr)  # fmt: skip
        code = 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("\ninterrupted: the last finished epoch is checkpointed; continue with --resume", file=sys.stderr)
        code = 130
    except Exception as exc:  # not a user error we foresaw: one line, not a traceback; --debug shows it
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}\nThis is a bug in distill or in code of yours that it "
              "called (a factory, a model's forward). Rerun with --debug for the traceback.", file=sys.stderr)  # fmt: skip
        code = 1
    if _torchrun_worker():
        _worker_exit(code)
    return code


def _torchrun_worker() -> bool:
    """True in a process that torchrun (or accelerate launch) started: its launcher sets these."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "WORLD_SIZE" in os.environ


def _worker_exit(code: int) -> None:
    """End a torchrun worker without the interpreter's teardown.

    The process group is destroyed by then, but the model's DDP reducer (and accelerate's state) still
    hold the gloo backend, whose C++ threads are then torn down in the interpreter's exit handlers: now
    and then that aborts the process ('terminate called without an active exception', SIGABRT), and
    torchrun reports the whole run as failed (CI saw it once: rank 1 aborted on its way out while
    rank 0 was still writing). Everything is written and flushed here, so the worker leaves at once
    with its code.
    """
    import logging

    _close_process_group()
    logging.shutdown()  # flushes run.log
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
