"""Validation-only probes behind the methods benchmark's grids: selection seeds only, no test numbers.

Not a test. Ten probes, each a list of objectives trained with the settings of
benchmarks/methods.py (same teacher and student; its schedule, at the number of epochs each probe
names) on the selection seed 10 (``sel3``: 11 and 12), printing the last-epoch validation accuracy:

- ``fm20``: function-matching views at 20 epochs against Hinton KD T=1 (is the online
  teacher worth its cost, and which views to put in the benchmark's grid);
- ``kd60``: objectives outside Hinton KD's grid at 60 epochs (is KD's grid too narrow);
- ``flip60``: function matching on mirrored views (the teacher was trained with flips, so a
  mirrored image is in its training distribution) at 60 epochs;
- ``mse60``: logit regression (Ba & Caruana's L2 on logits), alone and with CE or KD, at 60 epochs;
- ``multiT60``: Hinton KD at several temperatures at once (the instance-level part of multi-level
  logit distillation, Jin et al. 2023), at 60 epochs;
- ``tta60``: Hinton KD T=1 from the teacher's flip-averaged outputs (test-time augmentation: the mean
  of its probabilities on each image and on its mirror image), given to distill as a precomputed-outputs
  teacher file, at 60 epochs;
- ``sel3``: the selection step again on two more seeds (11, 12), for KD T=1 and T=0.5 and the two
  settings whose lead on seed 10 did not hold on the test seeds (multi-temperature KD, CRD + KD);
- ``long300``: Hinton KD (T=1, 0.5), DKD and function matching on mirrored views at 300 epochs instead of
  60 (Beyer et al.'s teacher is "patient": function matching's gains come with long schedules);
  ``long300fm``: function matching with the table's views (mixup alpha=0.2, no shift) at 300 epochs, a probe of
  its own so that it can run beside ``long300`` on the other core;
- ``ta60``: a teacher assistant (Mirzadeh et al. 2020): an MLP of 512 and 256 units on the full 28x28
  image, distilled from the CNN by KD T=1 for 60 epochs, then the student distilled from it the same way.

    .venv/bin/python experiments/2026-11-29-methods-selection/methods_probe.py fm20|kd60|flip60|mse60|multiT60|sel3|long300|long300fm|tta60|ta60
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))
import methods as M  # noqa: E402

KD1 = [{"loss": "kd", "weight": 1.0, "temperature": 1.0}]
STUDENT_LAYER = M.student_penultimate(M.base_recipe(None)["student"]["params"])  # as the benchmark's feature rows
PROBES = {
    "fm20": (20, {
        "kd T=1": [{"loss": "kd", "weight": 1.0, "temperature": 1.0}],
        "fm alpha=1 shift=2": [{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": 1.0, "shift": 2}],
        "fm alpha=0 shift=2": [{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": 0.0, "shift": 2}],
        "fm alpha=0.2 shift=1": [{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": 0.2, "shift": 1}],
    }),
    "kd60": (60, {
        "kd T=0.5": [{"loss": "kd", "weight": 1.0, "temperature": 0.5}],
        "kd T=2 w0.5 + ce w0.5 (the shipped recipe)": [{"loss": "kd", "weight": 0.5, "temperature": 2.0},
                                                       {"loss": "ce", "weight": 0.5}],
        "kd T=1 + ce": [{"loss": "kd", "weight": 1.0, "temperature": 1.0}, {"loss": "ce", "weight": 1.0}],
    }),
    "flip60": (60, {
        "fm flip, no mixup, no shift": [{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": 0.0,
                                         "shift": 0, "flip": 1}],
        "fm flip, mixup alpha=0.2, no shift": [{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": 0.2,
                                                "shift": 0, "flip": 1}],
    }),
    "mse60": (60, {
        "logit_mse": [{"loss": "logit_mse", "weight": 1.0}],
        "logit_mse centred": [{"loss": "logit_mse", "weight": 1.0, "center": 1}],
        "logit_mse + ce": [{"loss": "logit_mse", "weight": 1.0}, {"loss": "ce", "weight": 1.0}],
        "logit_mse + kd T=1": [{"loss": "logit_mse", "weight": 1.0}, {"loss": "kd", "weight": 1.0, "temperature": 1.0}],
    }),
    "multiT60": (60, {
        "kd at T=1, 2 and 4, weight 1/3 each": [{"loss": "kd", "weight": 1 / 3, "temperature": t} for t in (1.0, 2.0, 4.0)],
        "kd at T=0.5 and 1, weight 1/2 each": [{"loss": "kd", "weight": 0.5, "temperature": t} for t in (0.5, 1.0)],
        "kd at T=1 and 4, weight 1/2 each": [{"loss": "kd", "weight": 0.5, "temperature": t} for t in (1.0, 4.0)],
    }),
    "sel3": (60, {  # the settings whose selection-seed lead did not hold on the test seeds, and KD's two
        "kd T=1": [{"loss": "kd", "weight": 1.0, "temperature": 1.0}],
        "kd T=0.5": [{"loss": "kd", "weight": 1.0, "temperature": 0.5}],
        "kd at T=0.5 and 1, weight 1/2 each": [{"loss": "kd", "weight": 0.5, "temperature": t} for t in (0.5, 1.0)],
        "kd T=1 + crd weight 1, T=0.5": [{"loss": "kd", "weight": 1.0, "temperature": 1.0},
                                         {"loss": "crd", "weight": 1.0, "temperature": 0.5,
                                          "student_layer": STUDENT_LAYER, "teacher_layer": M.TEACHER_PENULTIMATE}],
    }),
    "long300": (300, {  # is function matching's teacher "patient" enough at 60 epochs? every objective at 300
        "kd T=1": [{"loss": "kd", "weight": 1.0, "temperature": 1.0}],
        "kd T=0.5": [{"loss": "kd", "weight": 1.0, "temperature": 0.5}],
        "dkd (the table's choice)": [{"loss": "dkd", "weight": 1.0, "alpha": 1.0, "beta": 0.5, "temperature": 1.0},
                                     {"loss": "ce", "weight": 1.0}],
        "fm flip, no mixup, no shift": [{"loss": "fm", "weight": 1.0, "temperature": 1.0, "mixup_alpha": 0.0,
                                         "shift": 0, "flip": 1}],
    }),
    "long300fm": (300, {  # long300's second view, a probe of its own so that it can run beside it
        "fm mixup alpha=0.2, no shift (the table's choice)": [{"loss": "fm", "weight": 1.0, "temperature": 1.0,
                                                               "mixup_alpha": 0.2, "shift": 0}],
    }),
}  # fmt: skip
SEEDS = {"sel3": (11, 12)}  # other probes: the selection seed, 10


TA = {"arch": "mlp", "params": {"hidden": [512, 256], "pool": 1}}


def teacher_assistant() -> None:
    """ta60: CNN -> TA (KD T=1) -> student (KD T=1), 60 epochs each, selection seed 10."""
    base = M.base_recipe(60)
    t0 = time.time()
    r = M.one({**base, "student": TA}, KD1, 10, "probe-ta60-ta")
    print(f"ta60 | assistant {TA['params']} | val {100 * r['val_last']:.2f} | {time.time() - t0:.0f} s", flush=True)
    base["teacher"] = {**TA, "checkpoint": str(M.WORK / "probe-ta60-ta" / "student.safetensors"), "name": "assistant",
                       "license": "MIT"}  # fmt: skip
    r = M.one(base, KD1, 10, "probe-ta60-student")
    print(f"ta60 | student from the assistant, kd T=1 | val {100 * r['val_last']:.2f} | {time.time() - t0:.0f} s", flush=True)


def flip_averaged() -> None:
    """tta60: the CNN's flip-averaged outputs for every split, written as a precomputed-outputs file, then
    KD T=1 from that file (selection seed 10)."""
    import numpy as np

    from distill.tasks.classification.data import build_data
    from distill.tasks.classification.builders import load_run_teacher
    from distill.core.fsutil import atomic_path
    from distill.core.recipes import validate_recipe
    from distill.tasks.classification.objective import accuracy_from_logits, predict_logits

    base = M.base_recipe(60)
    recipe = validate_recipe(base)
    data = build_data(recipe.data)
    _, module, _ = load_run_teacher(M.TEACHER.parent, recipe, data)
    ids, logits = [], []
    for name, split in data.splits().items():
        probs = [predict_logits(module, x).softmax(1) for x in (split.x, split.x.flip(-1))]
        logits.append(((probs[0] + probs[1]) / 2).log())
        ids += [str(i) for i in split.ids]
        print(f"tta60 | teacher, flip-averaged, {name} accuracy | {100 * accuracy_from_logits(logits[-1], split.y):.2f}",
              flush=True)  # fmt: skip
    path = M.WORK / "probe-tta60-outputs.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, ids=np.array(ids, dtype=str), logits=torch.cat(logits).numpy())
    base["teacher"] = {"kind": "precomputed", "path": str(path), "values": "logits", "name": "CNN, flip-averaged",
                       "license": "MIT"}  # fmt: skip
    r = M.one(base, KD1, 10, "probe-tta60")
    print(f"tta60 | kd T=1 from the flip-averaged outputs | val {100 * r['val_last']:.2f}", flush=True)


CUSTOM = {"ta60": teacher_assistant, "tta60": flip_averaged}  # probes that are more than a list of objectives


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in {**PROBES, **CUSTOM}:
        print(f"usage: methods_probe.py {'|'.join([*PROBES, *CUSTOM])}", file=sys.stderr)
        return 2
    if not M.TEACHER.exists():
        print("run benchmarks/fashion_mnist.py first (it trains the teacher)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if args[0] in CUSTOM:
        CUSTOM[args[0]]()
        return 0
    epochs, objectives = PROBES[args[0]]
    base = M.base_recipe(epochs)
    for name, terms in objectives.items():
        for seed in SEEDS.get(args[0], (10,)):
            t0 = time.time()
            tag = f"probe-{args[0]}-s{seed}-" + "".join(c if c.isalnum() else "_" for c in name)
            r = M.one(base, terms, seed, tag)
            print(f"{args[0]} | {name} | seed {seed} | val {100 * r['val_last']:.2f} | {r['epoch_seconds']:.2f} s/epoch | "
                  f"{time.time() - t0:.0f} s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
