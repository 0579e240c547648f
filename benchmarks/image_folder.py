"""An image-folder run by hand, as a user with a folder of photos would make it: Fashion-MNIST written out as
PNG files in one subfolder per class, then `distill run` (a CNN teacher, an MLP student: the demo recipe's
models and schedules with `data.source: image_folder`), `distill eval`, `distill export` and `distill report`
through the real CLI, and the exported student called on the test images **as files** (`export/classifier.py`,
onnxruntime and Pillow, no torch) against the run's own test accuracy.

Not a test. Needs Debian's dataset-fashion-mnist. Writes benchmarks/results/image_folder.{json,md}; work files
under benchmarks/.work/image_folder/.

    .venv/bin/python benchmarks/image_folder.py [--limit N] [--out STEM]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import results_io  # noqa: E402
from distill.data import FASHION_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "image_folder"


def write_pngs(folder: Path, limit: int | None) -> dict[str, int]:
    """Fashion-MNIST's 70,000 images as PNG files, ``folder/<class>/<split>-<index>.png``."""
    from PIL import Image

    xtr, ytr, xte, yte = load_fashion_mnist(FASHION_MNIST_DIR)
    if folder.exists():
        shutil.rmtree(folder)
    counts = {}
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        n = len(x) if limit is None else min(limit, len(x))
        for i in range(n):
            target = folder / FASHION_CLASSES[int(y[i])].replace("/", "-") / f"{split}-{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(x[i], dtype=np.uint8).reshape(28, 28)).save(target)
        counts[split] = n
    return counts


def recipe(folder: Path, run_dir: Path) -> dict:
    raw = yaml.safe_load((ROOT.parent / "src/distill/recipes/demo_fashion_mnist.yaml").read_text())
    raw["name"] = "fashion-png"
    raw["data"] = {"source": "image_folder", "path": str(folder), "image_size": [28, 28], "channels": 1,
                   "test_fraction": 1 / 7, "val_fraction": 0.0833333333, "seed": 0}  # fmt: skip
    raw["teacher"]["name"] = "Fashion-MNIST-as-PNG CNN (trained in this run)"
    raw["train"]["num_threads"] = 1
    raw["output"] = {"dir": str(run_dir), "cache_dir": str(WORK / "cache")}
    return raw


def cli(*args: str) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return p.returncode, round(time.perf_counter() - t0, 1), (p.stdout + p.stderr).strip().splitlines()[-1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="write only the first N images of each split (a quick check)")
    ap.add_argument("--out", help="write STEM.json and STEM.md instead of benchmarks/results/image_folder")
    args = ap.parse_args(argv)
    if not Path(FASHION_MNIST_DIR).is_dir():
        print(f"{FASHION_MNIST_DIR} is missing: sudo apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    folder, run_dir = WORK / "fashion-png", WORK / "run"
    counts = write_pngs(folder, args.limit)
    written_s = round(time.perf_counter() - t0, 1)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    recipe_path = WORK / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe(folder, run_dir), sort_keys=False))
    steps = {}
    for name, cmd in (("run", ["run", str(recipe_path), "--no-progress"]), ("eval", ["eval", str(run_dir), "-q"]),
                      ("export", ["export", str(run_dir)]), ("report", ["report", str(run_dir)])):  # fmt: skip
        code, seconds, last = cli(*cmd)
        steps[name] = {"exit_code": code, "seconds": seconds, "last_line": last[0] if last else ""}
        if code != 0:
            break
    out = results_io.header("image_folder", images=counts, png_seconds=written_s, steps=steps)
    ok = all(s["exit_code"] == 0 for s in steps.values()) and len(steps) == 4
    if ok:
        models = json.loads((run_dir / "metrics.json").read_text())["models"]
        by_role = {m["role"]: m for m in models}
        spec = importlib.util.spec_from_file_location("shipped", run_dir / "export" / "classifier.py")
        shipped = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shipped)  # type: ignore[union-attr]
        model = shipped.Classifier(run_dir / "export", threads=1)
        from distill.tasks.classification.data import build_data  # the test split's ids, as the run drew them
        from distill.tasks.classification.recipe import DataConfig

        ids = list(build_data(DataConfig(**recipe(folder, run_dir)["data"])).test.ids)
        t1 = time.perf_counter()
        labels = []
        for s in range(0, len(ids), 512):
            labels += model.predict([folder / i for i in ids[s : s + 512]])
        files_s = time.perf_counter() - t1
        truth = [i.split("/")[0] for i in ids]
        acc = float(np.mean(np.array(labels) == np.array(truth)))
        out["files"] = {"test_images": len(ids), "accuracy_from_files": acc, "seconds": round(files_s, 1),
                        "in_run_student_test_acc": by_role["student"]["test_acc"],
                        "teacher_test_acc": by_role["teacher"]["test_acc"],
                        "baseline_test_acc": by_role.get("baseline", {}).get("test_acc")}  # fmt: skip
        out["targets"] = {
            "every command exits 0": ok,
            "the exported student on the PNG files gives the in-run test accuracy (within 1e-6)":
                abs(acc - by_role["student"]["test_acc"]) <= 1e-6,
        }  # fmt: skip
    else:
        out["targets"] = {"every command exits 0": False}
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    md = results_io.title_lines("Image folder: Fashion-MNIST as PNG files, through the CLI", out)
    md += [f"Command: `{out['command']}`. {counts['train']:,} + {counts['test']:,} PNG files written in "
           f"{written_s} s (one subfolder per class); the demo recipe's CNN teacher and MLP student with "
           "`data.source: image_folder` (28x28, grayscale, 1/7 held out for test).", ""]  # fmt: skip
    md += results_io.table(["step", "exit", "seconds", "last line"],
                           [f"| distill {k} | {v['exit_code']} | {v['seconds']} | {v['last_line'][:100]} |"
                            for k, v in steps.items()])  # fmt: skip
    if ok:
        f = out["files"]
        md += [f"Teacher {f['teacher_test_acc']:.2%}, distilled student {f['in_run_student_test_acc']:.2%}"
               + (f", hard-label student {f['baseline_test_acc']:.2%}" if f["baseline_test_acc"] is not None else "")
               + f" test accuracy in the run. The exported student called on the {f['test_images']:,} test images "
               f"as PNG files (export/classifier.py: Pillow reads, converts and resizes each as the run did; "
               f"onnxruntime, no torch): {f['accuracy_from_files']:.2%}, in {f['seconds']} s.", ""]  # fmt: skip
    md += results_io.table(["target", "met"], [f"| {k} | {'yes' if v else '**no**'} |" for k, v in out["targets"].items()])
    results_io.write(out, md, args.out)
    return 0 if all(out["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
