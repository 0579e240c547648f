"""Process-wide settings as context managers that restore what they changed: torch's thread count
and its random generator. Nothing in distill changes either for good."""

from __future__ import annotations

import contextlib
import functools
import platform
import sys
from collections.abc import Callable, Iterator
from typing import Any



@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch runs on ``n`` threads inside the block (None or 0: as it is); the caller's count comes back after."""
    import torch  # here, not at the top: `import distill` (the API, the CLI's --help) must not load torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """torch's CPU generator seeded with ``seed`` inside the block; the caller's state comes back after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def run_context(threads: int | None) -> Iterator[None]:
    """What a run changes of the process, undone after it: the thread count and torch's generator
    (training loops seed it for dropout)."""
    import torch

    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        yield


def keeps_process_state(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run inside :func:`run_context`: whatever it does to torch's thread count and generator (a command
    that runs a recipe's ``num_threads``, builds or samples models), the caller gets its own back."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with run_context(None):
            return fn(*args, **kwargs)

    return wrapper


def environment() -> dict[str, Any]:
    """Where a run was measured: torch, threads, platform, processor, and the command."""
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "command": " ".join(["distill", *sys.argv[1:]]) if sys.argv and "distill" in sys.argv[0] else None,
    }


def require(modules: dict[str, str], why: str) -> None:
    """Raise one clear error, before anything runs, when an optional package a stage needs is missing.

    ``modules``: import name -> the pip extra that brings it (``{"onnx": "onnx"}``)."""
    import importlib.util

    from distill.errors import DistillError

    missing = {m: extra for m, extra in modules.items() if importlib.util.find_spec(m) is None}
    if missing:
        extras = sorted(set(missing.values()))
        raise DistillError(
            f"{why} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed. Fix: pip install "
            + " ".join(f"'distill[{e}]'" for e in extras) + ", or remove that part of the recipe."
        )
