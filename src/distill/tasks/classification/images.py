"""Reading a folder of class subfolders of images (Pillow): every problem named with its file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from distill.data.labels import small_classes, small_classes_message
from distill.errors import DataError

log = logging.getLogger("distill")


def read_image_folder(path: str | Path | None, size: tuple[int, int], channels: int,
                      suffixes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """``(x uint8 (N, C, H, W), y int64 (N,), ids (N,) relative paths, class names)`` of ``path/CLASS/*.png``."""
    if path is None:
        raise DataError("data.source image_folder needs data.path, a folder with one subfolder of images per class.")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}. Fix: point data.path at a folder of class subfolders.")
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise DataError("reading images needs Pillow. Fix: pip install pillow.") from None
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {c: sorted(f for f in (root / c).rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
             for c in classes}  # fmt: skip
    _log_skipped(root, classes, suffixes)
    empty = [c for c in classes if not files[c]]
    if len(classes) < 2 or empty:
        why = f"the class folders {', '.join(empty)} hold no images ({', '.join(suffixes)})" if empty else \
            f"it has {len(classes)} class subfolder{'s' if len(classes) != 1 else ''}; a classifier needs at least 2"  # fmt: skip
        raise DataError(f"cannot read the image folder {root}: {why}. Fix: one subfolder of images per class.")
    mode = "L" if channels == 1 else "RGB"
    height, width = size
    xs, ys, ids, bad = [], [], [], []
    for label, c in enumerate(classes):
        for f in files[c]:
            try:
                with Image.open(f) as im:
                    # upright as a viewer shows it: a phone's photo is often stored sideways with an EXIF turn
                    im = ImageOps.exif_transpose(im).convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                bad.append(f"{f.relative_to(root)} ({type(exc).__name__})")
                continue
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
            ids.append(str(f.relative_to(root)))
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(f"{len(bad)} files in {root} are not readable images: {shown}. Fix: remove or re-save them.")
    small = small_classes(classes[label] for label in ys)
    if small:
        raise DataError(small_classes_message(small, f"the image folder {root}"))
    return np.stack(xs), np.asarray(ys, dtype=np.int64), np.asarray(ids), classes


def _log_skipped(root: Path, classes: list[str], suffixes: Sequence[str]) -> None:
    """One log line for the files that are not read: not an image by their suffix (in a class folder), or
    outside every class folder (loose at the top level, or in a hidden folder)."""
    inside = {c: root / c for c in classes}
    skipped = [f for f in root.rglob("*") if f.is_file() and (
        f.suffix.lower() not in suffixes or f.relative_to(root).parts[0] not in inside)]  # fmt: skip
    if not skipped:
        return
    names = sorted(str(f.relative_to(root)) for f in skipped)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    log.warning("image folder %s: %d files skipped, not images in a class folder (a class is a subfolder of "
                "%s files): %s", root, len(names), "/".join(suffixes), shown)  # fmt: skip
