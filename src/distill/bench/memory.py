"""Peak memory of running a model, measured in a fresh child process.

The child imports torch and onnxruntime, resets the kernel's high-water mark of
its resident set (``/proc/self/clear_refs``), notes its current resident size,
loads the model, runs a few batches, and reports how far the peak (``VmHWM``)
rose above that: the model's weights plus the largest activations and the
runtime's working buffers, in MiB. A fresh process per model keeps one model's
allocations out of another's number. Linux only (None elsewhere).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

_CHILD = r"""
import json, sys
import numpy as np
import torch
import onnxruntime
kind, path, shape, batch = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    raise KeyError(key)

torch.randn(batch, *shape)  # warm the allocator before the baseline
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset VmHWM to the current resident size
before = status("VmRSS")
x = torch.randn(batch, *shape)
if kind == "onnx":
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = int(sys.argv[5])
    sess = onnxruntime.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x.numpy()})
else:
    from distill.export.torch_format import load_torch
    model = load_torch(path).eval()
    with torch.inference_mode():
        for _ in range(3):
            model(x)
after = status("VmHWM")
print(json.dumps({"peak_mib": max(after - before, 0) / 1024.0}))
"""


def peak_memory_mib(kind: str, path: str | Path, in_shape: Sequence[int], batch: int = 256, threads: int = 1) -> float | None:
    """Peak RSS growth (MiB) of loading ``path`` (an ONNX file, or a ``save_torch`` folder) and running
    batches of ``batch`` random samples; None when the child fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(path), json.dumps(list(in_shape)), str(batch), str(threads)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if out.returncode != 0:
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
