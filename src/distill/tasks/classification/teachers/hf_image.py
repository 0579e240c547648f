"""A Hugging Face image classifier as a classification teacher (``teacher.kind: hf``).

A local folder that ``save_pretrained`` wrote (``config.json`` with ``id2label``, ``*.safetensors``, optionally
``preprocessor_config.json``) is loaded offline with ``AutoModelForImageClassification``; the folder's own code
runs only with ``trust_remote_code``. Before it teaches:

* **labels by name.** ``config.id2label`` is matched to the data's class names (:func:`label_order`): the same
  names in the same order are taken as they are, in another order the outputs are permuted to the data's order
  (and the log says so), the generic ``LABEL_0..`` names are taken by index when the counts agree; anything else
  is an error that names both lists.
* **images as the model expects them** (:class:`PixelMap`): the run's standardisation is undone (pixels in
  [0, 1]); grayscale is repeated to the model's ``num_channels`` (RGB becomes gray by ITU-R 601 luma for a
  one-channel model); images are resized as the processor says (``size``: height/width or a shortest edge,
  ConvNeXT's ``crop_pct`` included), with its ``resample`` (PIL's bilinear, bicubic and nearest by torch's
  antialiased ones; Lanczos, box and Hamming approximated, and the log says so), then centre-cropped to
  ``crop_size`` when ``do_center_crop``; a folder without a processor (or one that neither resizes nor crops) is
  resized to ``config.image_size``. Then the processor's ``rescale_factor`` and ``image_mean``/``image_std``
  apply. Without ``preprocessor_config.json`` the model gets pixels in [0, 1].
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import TeacherError
from distill.core.fingerprint import module_fingerprint

log = logging.getLogger("distill")

BATCH = 64  # images per forward pass of the teacher (its inputs may be much larger than the data's)
LUMA = (0.299, 0.587, 0.114)  # RGB -> gray, as Pillow's convert("L")


def _shown(names: list[str], limit: int = 12) -> str:
    head = ", ".join(names[:limit])
    return f"{len(names)}: {head}{', ...' if len(names) > limit else ''}"


def label_order(theirs: list[str], names: list[str], who: str) -> tuple[list[int], str]:
    """For each data class (in order), the model's output index, and what was done in words.

    Names are compared stripped and case-folded. Raises TeacherError naming both lists when they differ."""
    key = [str(t).strip().casefold() for t in theirs]
    want = [str(n).strip().casefold() for n in names]
    if key == want:
        return list(range(len(names))), "its labels are the data's class names, in the same order"
    if len(theirs) == len(names) and all(str(t) == f"LABEL_{i}" for i, t in enumerate(theirs)):
        return list(range(len(names))), (f"its labels are the generic LABEL_0..LABEL_{len(names) - 1}: taken by "
                                         f"index as the data's classes ({', '.join(names[:12])})")  # fmt: skip
    if sorted(key) == sorted(want) and len(set(key)) == len(key):
        order = [key.index(w) for w in want]
        return order, (f"its labels are the data's class names in another order ({', '.join(map(str, theirs[:12]))}): "
                       "its outputs are reordered to the data's order")  # fmt: skip
    missing = [n for n, w in zip(names, want) if w not in key]
    extra = [str(t) for t, k in zip(theirs, key) if k not in want]
    why = "; ".join(p for p in (f"not in the data: {', '.join(extra[:12])}" if extra else "",
                                f"not in the teacher: {', '.join(missing[:12])}" if missing else "") if p) or \
        "some names repeat"  # fmt: skip
    generic = all(str(t).startswith("LABEL_") for t in theirs)
    hint = (f" Its config.json has generic names LABEL_0.. for {len(theirs)} classes, the data has {len(names)}."
            if generic else "")  # fmt: skip
    raise TeacherError(
        f"{who}: the teacher's labels (config.json id2label, {_shown([str(t) for t in theirs])}) are not the data's "
        f"class names ({_shown(list(map(str, names)))}): {why}.{hint} Fix: use a teacher fine-tuned on these classes, "
        "or write the data's class names into its config.json id2label (index -> name; image_folder: the subfolder "
        "names), or name the image subfolders as the teacher's labels."
    )


@dataclass(frozen=True)
class PixelMap:
    """From the run's standardised images ``(N, C, H, W)`` to the ``pixel_values`` the model takes."""

    data_mean: float  # the run's standardisation: pixels / scale = x * data_std + data_mean
    data_std: float
    channels: tuple[int, int]  # the data's, the model's
    size: tuple[tuple[int, int], tuple[int, int]]  # the data's (H, W), the model's
    rescale: float  # pixel values 0..255 are multiplied by this
    mean: tuple[float, ...] | None  # per channel, after rescaling (None: no normalisation)
    std: tuple[float, ...] | None
    source: str  # where rescale/mean/std came from
    crop: tuple[int, int] | None = None  # centre crop (H, W) after the resize (pads with zeros where it is larger)
    mode: str = "bilinear"  # torch's interpolation for the processor's resample
    mode_note: str = ""  # where the resample is approximated

    def __call__(self, x: Tensor) -> Tensor:
        p = x.float() * self.data_std + self.data_mean  # pixels in [0, 1]
        cin, cout = self.channels
        if cin == 1 and cout > 1:
            p = p.expand(-1, cout, -1, -1)
        elif cin == 3 and cout == 1:
            p = (p * torch.tensor(LUMA, dtype=p.dtype, device=p.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if self.size[0] != self.size[1]:
            if self.mode == "nearest":
                p = nn.functional.interpolate(p, size=self.size[1], mode="nearest")
            else:
                p = nn.functional.interpolate(p, size=self.size[1], mode=self.mode, align_corners=False, antialias=True)
                p = p.clamp(0.0, 1.0) if self.mode == "bicubic" else p  # PIL clips bicubic's overshoot to 0..255
        if self.crop is not None:
            p = centre_crop(p, self.crop)
        v = p * (255.0 * self.rescale)
        if self.mean is not None and self.std is not None:
            mean, std = (torch.tensor(t, dtype=v.dtype, device=v.device).view(1, -1, 1, 1)
                         for t in (self.mean, self.std))  # fmt: skip
            v = (v - mean) / std
        return v.contiguous()

    def describe(self) -> str:
        (cin, cout), (sin, sout) = self.channels, self.size
        steps = []
        if cin != cout:
            steps.append(f"gray repeated to {cout} channels" if cin == 1 else "RGB to gray (luma)")
        if sin != sout:
            steps.append(f"resized {sin[0]}x{sin[1]} -> {sout[0]}x{sout[1]} ({self.mode}{self.mode_note})")
        if self.crop is not None:
            steps.append(f"centre-cropped to {self.crop[0]}x{self.crop[1]}")
        steps.append(f"pixels 0..255 x {self.rescale:.6g}")
        if self.mean is not None:
            steps.append(f"normalised with mean {list(self.mean)}, std {list(self.std or ())}")
        end = self.crop or sout
        shapes = f"images ({cin}, {sin[0]}, {sin[1]}) -> ({cout}, {end[0]}, {end[1]})"
        return f"{shapes}: {', '.join(steps)} ({self.source})"


def _hw(value: Any) -> tuple[int, int] | None:
    """(H, W) of a config's or processor's size: an int, a pair, or {height, width} / {shortest_edge}."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:
            return (int(value["shortest_edge"]),) * 2  # type: ignore[return-value]
    return None


# PIL's resample codes (an image processor's ``resample``) -> torch's interpolation, and what is approximated
RESAMPLE = {0: ("nearest", ""), 1: ("bicubic", ", for PIL's Lanczos"), 2: ("bilinear", ""), 3: ("bicubic", ""),
            4: ("area", ", for PIL's box"), 5: ("bilinear", ", for PIL's Hamming")}  # fmt: skip


def centre_crop(p: Tensor, crop: tuple[int, int]) -> Tensor:
    """The centre ``crop`` of ``(N, C, H, W)`` images, as transformers' ``center_crop`` takes it (an image smaller
    than the crop is padded with zeros around it first)."""
    (h, w), (ch, cw) = p.shape[-2:], crop
    if ch > h or cw > w:
        top, left = max(0, (ch - h) // 2), max(0, (cw - w) // 2)
        p = nn.functional.pad(p, (left, max(0, cw - w) - left, top, max(0, ch - h) - top))
        h, w = p.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    return p[..., top : top + ch, left : left + cw]


def _resize_target(proc: dict[str, Any], h: int, w: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(resize (H, W), centre crop (H, W)) of an image processor for an ``h x w`` image, as transformers computes
    them: ``size`` as height/width, or a shortest edge (the other scaled to keep the aspect; with ConvNeXT's
    ``crop_pct`` and an edge under 384: resized to edge / crop_pct, then cropped to the edge); then ``crop_size``
    when ``do_center_crop``. (None, None) when the processor neither resizes nor crops."""
    size = proc.get("size") if proc.get("do_resize", True) else None
    resize: tuple[int, int] | None = None
    crop = _hw(proc.get("crop_size")) if proc.get("do_center_crop") else None
    if isinstance(size, dict) and "shortest_edge" in size and not ("height" in size and "width" in size):
        edge = int(size["shortest_edge"])
        pct = proc.get("crop_pct")
        if pct and "crop_pct" in proc and edge < 384 and not proc.get("do_center_crop"):  # ConvNeXT's rule
            crop, edge = (edge, edge), int(edge / float(pct))
        short, long = (h, w) if h <= w else (w, h)
        other = int(edge * long / short)
        resize = (edge, other) if h <= w else (other, edge)
    elif size is not None:
        resize = _hw(size)
    return resize, crop


def pixel_map(config: Any, processor: dict[str, Any] | None, data: Any, who: str) -> PixelMap:
    """How the data's images become the model's inputs (the module docstring says in which order)."""
    cin, h, w = (int(d) for d in data.in_shape)
    cout = int(getattr(config, "num_channels", 3) or 3)
    if cin != cout and not (cin == 1 or (cin == 3 and cout == 1)):
        raise TeacherError(f"{who}: the model takes {cout}-channel images and the data has {cin} channels. Fix: set "
                           "data.channels to the model's num_channels (1 or 3).")  # fmt: skip
    proc = processor or {}
    size, crop = _resize_target(proc, h, w) if processor is not None else (None, None)
    if size is None and crop is None:
        size = _hw(getattr(config, "image_size", None))
    code = proc.get("resample", 2)
    if code not in RESAMPLE:
        raise TeacherError(f"{who}: preprocessor_config.json's resample {code!r} is not one of PIL's codes "
                           f"{sorted(RESAMPLE)}. Fix: set it to 2 (bilinear) or 3 (bicubic).")  # fmt: skip
    mode, note = RESAMPLE[code]
    rescale, mean, std = 1.0 / 255.0, None, None
    if processor is not None:
        rescale = float(proc.get("rescale_factor", 1.0 / 255.0)) if proc.get("do_rescale", True) else 1.0
        if proc.get("do_normalize", True) and proc.get("image_mean") is not None and proc.get("image_std") is not None:
            mean, std = _per_channel(proc["image_mean"], cout, who), _per_channel(proc["image_std"], cout, who)
            if any(s <= 0 for s in std):
                raise TeacherError(f"{who}: preprocessor_config.json's image_std {list(std)} has a value <= 0. Fix: "
                                   "give positive standard deviations.")  # fmt: skip
    source = "preprocessor_config.json" if processor is not None else "no preprocessor_config.json: pixels in [0, 1]"
    pre = data.preprocessing
    return PixelMap(float(pre["mean"]), float(pre["std"]), (cin, cout), ((h, w), size or (h, w)), rescale, mean, std,
                    source, crop, mode, note)  # fmt: skip


def _per_channel(values: Any, channels: int, who: str) -> tuple[float, ...]:
    v = [float(values)] if isinstance(values, (int, float)) else [float(x) for x in values]
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise TeacherError(f"{who}: preprocessor_config.json has {len(v)} values for {channels} channels. Fix: give "
                           "one image_mean/image_std value per channel of the model.")  # fmt: skip
    return tuple(v)


class HFImageTeacher(nn.Module):
    """``(N, C, H, W)`` standardised images as the run has them -> ``(N, classes)`` logits in the data's class
    order; batched (:data:`BATCH` images a pass), eval mode, no gradients in :meth:`logits`."""

    def __init__(self, net: nn.Module, order: list[int], pixels: PixelMap, folder: Path) -> None:
        super().__init__()
        self.net = net.eval()
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.pixels = pixels
        self.folder = folder
        self.num_classes = len(order)
        self.needs_ids = False
        self._fp: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        device = self.order.device  # where the model is; the logits go back to where x is
        chunks = (x[i : i + BATCH].to(device) for i in range(0, x.shape[0], BATCH))
        outs = [self.net(pixel_values=self.pixels(c)).logits for c in chunks]
        logits = torch.cat(outs) if outs else torch.zeros(0, len(self.order), device=device)
        return logits.index_select(-1, self.order).float().to(x.device)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        was = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was)

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256(module_fingerprint(self.net).encode())
            h.update(repr((self.order.tolist(), self.pixels)).encode())
            self._fp = "hf-image:" + h.hexdigest()
        return self._fp


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own logging at error level and its progress bars off inside the block (both come back after)."""
    from transformers.utils import logging as hf_logging

    before, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


def read_processor(folder: Path, who: str) -> dict[str, Any] | None:
    """``preprocessor_config.json`` of the folder as a dict, or None when there is none."""
    p = folder / "preprocessor_config.json"
    if not p.is_file():
        return None
    try:
        out = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TeacherError(f"{who}: cannot read {p}: {exc}. Fix: repair the file (JSON, as an image processor's "
                           "save_pretrained writes it) or remove it.") from None  # fmt: skip
    if not isinstance(out, dict):
        raise TeacherError(f"{who}: {p} is not a JSON object. Fix: repair the file or remove it.")
    return out


def _check_folder(p: Path, who: str) -> None:
    if not p.is_dir():
        raise TeacherError(f"{who} {p} is not a folder. Fix: give the folder of a Hugging Face image classifier "
                           "(what save_pretrained wrote: config.json, model.safetensors).")  # fmt: skip
    if not (p / "config.json").is_file():
        raise TeacherError(f"{who} {p} has no config.json, so it is not a Hugging Face model folder. Fix: point it "
                           "at the folder that save_pretrained wrote.")  # fmt: skip
    if not any(p.glob("*.safetensors")):
        other = sorted(f.name for f in p.iterdir() if f.suffix in {".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"})
        found = f" (it has {', '.join(other)})" if other else ""
        raise TeacherError(f"{who} {p} has no .safetensors weights{found}; distill loads weights only from "
                           "safetensors (no pickle). Fix: save the model again with save_pretrained (safetensors is "
                           "its default).")  # fmt: skip


def _load_net(p: Path, trust_remote_code: bool, who: str) -> nn.Module:
    from transformers import AutoConfig, AutoModelForImageClassification

    fix = "" if trust_remote_code else " If the folder needs its own code, set teacher.trust_remote_code: true."
    try:
        config = AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).splitlines() or [""])[0].rstrip(". ")
        if not trust_remote_code and ("custom code" in first or "trust_remote_code" in first):
            raise TeacherError(f"{who} {p} ships its own model code (config.json's auto_map), and code from a folder "
                               "runs only when the recipe allows it. Fix: set teacher.trust_remote_code: true if you "
                               "trust this folder.") from None  # fmt: skip
        raise TeacherError(f"{who} {p}: its config.json does not load: {type(exc).__name__}: {first}. Fix: point it "
                           f"at a folder that save_pretrained wrote.{fix}") from None  # fmt: skip
    from distill.models.hf_load import check_loading_info, not_single_label

    wrong = not_single_label(config)
    if wrong:
        raise TeacherError(f"{who} {p}: {wrong}. Fix: use a single-label image classifier folder.")
    try:
        net, info = AutoModelForImageClassification.from_pretrained(
            str(p), config=config, trust_remote_code=trust_remote_code, local_files_only=True, use_safetensors=True,
            dtype=torch.float32, output_loading_info=True,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0].rstrip(". ")
        if "Unrecognized configuration class" in first or "for this kind of AutoModel" in first:
            archs = ", ".join(getattr(config, "architectures", None) or []) or "none named"
            raise TeacherError(
                f"{who} {p} is a {config.model_type!r} model ({archs}), not an image classifier: "
                "AutoModelForImageClassification has no class for it. Fix: classification's teacher.kind hf takes an "
                "image classification folder (ViT, ConvNext, ResNet, ...); a text classifier is a teacher of "
                f"task: text_classification.{fix}"
            ) from None
        raise TeacherError(f"{who} {p} does not load as a Hugging Face image classifier: {type(exc).__name__}: "
                           f"{first}. Fix: point it at a folder save_pretrained wrote.{fix}") from None  # fmt: skip
    check_loading_info(p, net, info, what="image classifier (a base model without its classification head?)",
                       fix="give the folder of a trained image classifier.", error=TeacherError)
    return net


def load_hf_image_teacher(path: str | Path, data: Any, *, trust_remote_code: bool = False,
                          who: str = "teacher.path") -> HFImageTeacher:  # fmt: skip
    """The image classifier in folder ``path``, its labels matched to ``data``'s class names and its inputs mapped
    from ``data``'s images (see the module docstring); tried on one training image."""
    if data.kind != "image":
        raise TeacherError(f"{who}: a Hugging Face image classifier needs images, and {data.source} is a table. Fix: "
                           "use an onnx or sklearn teacher for tables, or image data (image_folder, fashion_mnist).")  # fmt: skip
    p = Path(path)
    _check_folder(p, who)
    with _quiet_transformers():
        net = _load_net(p, trust_remote_code, who)
    id2label = getattr(net.config, "id2label", None) or {}
    theirs = [str(id2label[i]) for i in sorted(id2label, key=int)]
    order, note = label_order(theirs, list(map(str, data.class_names)), f"{who} {p}")
    teacher = HFImageTeacher(net, order, pixel_map(net.config, read_processor(p, who), data, f"{who} {p}"), p)
    try:
        teacher.logits(data.train.x[:1])
    except Exception as exc:  # noqa: BLE001 - any failure of the model on a mapped image is the user's to fix
        raise TeacherError(f"{who} {p} cannot run on the data's images mapped as {teacher.pixels.describe()}: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Fix: check the "
                           "folder's config (image_size, num_channels) and preprocessor_config.json.") from None  # fmt: skip
    log.info("teacher %s: %s (%s); %s", p.name, type(net).__name__, note, teacher.pixels.describe())
    return teacher


__all__ = ["BATCH", "HFImageTeacher", "PixelMap", "label_order", "load_hf_image_teacher", "pixel_map", "read_processor"]
