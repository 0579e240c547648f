"""Command line: argument parsing only; each command calls one library function."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

from distill.errors import DistillError

def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (:mod:`distill.cli_parser`), each wired to its ``cmd_*`` function here."""
    from distill.cli_parser import build_parser as parser_of

    return parser_of({
        "run": cmd_run, "demo": cmd_demo, "eval": cmd_eval, "compress": cmd_compress, "export": cmd_export,
        "bench": cmd_bench, "report": cmd_report, "recipe": cmd_recipe, "methods": cmd_methods,
        "layers": cmd_layers, "models": cmd_models,
    })  # fmt: skip


# ---------------------------------------------------------------- commands
# torchrun in this process's child, quiet about a worker that failed: distill's own message says what went
# wrong (once, from the parent), so torchrun's ChildFailedError traceback, its "distill FAILED" block and its
# elastic log lines are left out; its exit code is the first failed worker's
_LAUNCHER = """
import logging, sys
from torch.distributed.run import main
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
logging.disable(logging.ERROR)
try:
    main()
except ChildFailedError as exc:
    code = exc.get_first_failure()[1].exitcode
    sys.exit(code if isinstance(code, int) and 0 < code < 256 else 1)
"""


def _relaunch(nproc: int, argv: list[str], debug: bool = False) -> int:
    """Re-run this command under torchrun with ``nproc`` processes; return its exit code. A worker that stops
    on an error leaves its message and exit code in a file instead of printing it; the first one (by rank)
    is printed here, once. With ``--debug`` torchrun runs as it is, tracebacks and all."""
    import json
    import subprocess
    import tempfile

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
    launcher = ["-m", "torch.distributed.run"] if debug else ["-c", _LAUNCHER]
    cmd = [sys.executable, *launcher, "--standalone", f"--nproc_per_node={nproc}", "-m", "distill", *rest]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        env["DISTILL_EXIT_FILE"] = str(Path(tmp) / "exit")
        print(f"launching {nproc} processes: torchrun --nproc_per_node={nproc} -m distill {' '.join(rest)}",
              file=sys.stderr)  # fmt: skip
        done = subprocess.run(cmd, env=env)
        if done.returncode == 0 or debug:
            return done.returncode
        reports = []
        ranked = [f for f in Path(tmp).glob("exit.*") if f.suffix[1:].isdigit()]
        for f in sorted(ranked, key=lambda f: int(f.suffix[1:])):
            try:
                reports.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
    if not reports:
        print(f"error: a process of the {nproc}-process run stopped with exit code {done.returncode} before it could "
              "say why (killed, or out of memory?). Fix: rerun with --debug for every process's output, or without "
              "--nproc.", file=sys.stderr)  # fmt: skip
        return done.returncode if done.returncode > 0 else 1
    first = reports[0]
    if first.get("message"):
        print(first["message"], file=sys.stderr)
    return int(first.get("code", done.returncode) or 1)


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from distill import api
    from distill.core.task import task_of_recipe
    from distill.errors import UnsupportedError
    from distill.core.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)  # validate before starting processes
    task = task_of_recipe(recipe)
    if args.nproc < 1:
        raise DistillError(f"--nproc must be >= 1 (got {args.nproc}). Fix: give the number of processes, e.g. --nproc 2.")
    if args.nproc != 1 and task.nproc is not None:
        raise UnsupportedError(f"--nproc {args.nproc}: {task.nproc}.")
    if args.nproc != 1 and "WORLD_SIZE" not in os.environ:
        _preflight_for(recipe, args.nproc)  # a bad input is said once, here, before any process starts
        return _relaunch(args.nproc, args.argv, debug=args.debug)
    try:
        result = api.run(recipe, resume=args.resume, overwrite=args.overwrite,
                         progress=not (args.no_progress or args.quiet), console=not args.quiet)  # fmt: skip
    finally:
        _close_process_group()
    if args.quiet:
        print(result.table_markdown)
    return 0


def _preflight_for(recipe: object, nproc: int) -> None:
    """The run's preflight (the checks ``distill recipe --check`` makes) for ``nproc`` processes, in this process."""
    from distill import api

    before = os.environ.get("DISTILL_NPROC")
    os.environ["DISTILL_NPROC"] = str(nproc)
    try:
        api.check(recipe, console=False)
    finally:
        if before is None:
            os.environ.pop("DISTILL_NPROC", None)
        else:
            os.environ["DISTILL_NPROC"] = before


def _close_process_group() -> None:
    """Under torchrun, tear the process group down before the interpreter exits: left to the exit
    handlers, gloo's threads can be destroyed while running (abort, 'terminate called ...')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def demo_recipe_path(which: str = "auto") -> tuple[Path, str]:
    from distill.data import FASHION_MNIST_DIR

    if which == "auto":
        which = "fashion_mnist" if Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists() else "digits"
    name = {"fashion_mnist": "demo_fashion_mnist.yaml", "digits": "demo_digits.yaml"}[which]
    return Path(str(resources.files("distill") / "recipes" / name)), which


def cmd_demo(args: argparse.Namespace) -> int:
    from distill.api import run
    from distill.core.recipes import load_recipe

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
    from distill.core.recipes import load_recipe
    from distill.core.task import get_task

    if args.fields:
        print(get_task(args.task).fields_markdown(), end="")
        return 0
    if args.example:
        print(get_task(args.task).example_yaml(), end="")
        return 0
    recipe = load_recipe(args.check, args.overrides)
    if not args.schema_only:
        from distill import api

        api.check(recipe, console=not args.quiet)  # the run's own preflight: data, teacher, students, places
    what = "the recipe is valid" if args.schema_only else "valid: the recipe, and every check a run makes first"
    print(f"# {args.check}: {what}", file=sys.stderr)
    if not args.quiet:
        print(recipe.to_yaml(), end="")  # the resolved recipe, every default written out
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
    from distill.core.recipes import load_recipe

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
    message = ""
    try:
        code = func(args)
    except DistillError as exc:
        if args.debug:
            raise
        message, code = f"error: {exc}", exc.exit_code
    except OSError as exc:  # a file-system problem no check caught: say which path and why, not a traceback
        if args.debug:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        message = (f"error: cannot access{where}: {exc.strerror or exc}. Fix: check that the path exists and that you "
                   "may read and write it (--debug shows where it happened).")  # fmt: skip
        code = 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        message, code = "\ninterrupted: the last finished epoch is checkpointed; continue with --resume", 130
    except Exception as exc:  # not a user error we foresaw: one line, not a traceback; --debug shows it
        if args.debug:
            raise
        message = (f"error: unexpected {type(exc).__name__}: {exc}\nThis is a bug in distill or in code of yours that "
                   "it called (a factory, a model's forward). Rerun with --debug for the traceback.")  # fmt: skip
        code = 1
    if message:
        _say(message, code)
    if _torchrun_worker():
        _worker_exit(code)
    return code


def _say(message: str, code: int) -> None:
    """Print the error; in a worker that ``distill run --nproc`` launched, leave it (and the exit code) for the
    parent instead, which prints the first worker's once (every worker usually meets the same error)."""
    import json

    target = os.environ.get("DISTILL_EXIT_FILE")
    if not (target and _torchrun_worker()):
        print(message, file=sys.stderr)
        return
    rank = os.environ.get("RANK", "0")
    tmp = Path(f"{target}.{rank}.tmp")
    tmp.write_text(json.dumps({"code": code, "message": message}))
    tmp.replace(f"{target}.{rank}")


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
