"""A text classifier's folder: saved in Hugging Face format (transformer students, the fine-tuned teacher) or as
weights plus ``distill_text_classifier.json`` (static and factory students), the tokenizer beside; loaded back
as a :class:`~distill.tasks.text_classification.models.TextModel`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.core.fsutil import write_json
from distill.tasks.text_classification.models import (
    KIND_FILE,
    FactoryClassifier,
    HFClassifier,
    StaticClassifier,
    TextModel,
    load_hf_classifier,
    load_tokenizer,
)


def save_text_model(model: TextModel, folder: Path, names: list[str], *, factory: str | None = None) -> None:
    """A student folder: Hugging Face format for transformer models, else weights + KIND_FILE; the tokenizer beside.
    Written into a temporary folder that then replaces ``folder``: a kill leaves the old one or the new one."""
    import shutil
    import tempfile

    from transformers.utils import logging as hf_logging

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    m = model.module
    hf_logging.disable_progress_bar()  # "Writing model shards" of one shard is noise
    try:
        if isinstance(m, HFClassifier):
            m.net.config.id2label = dict(enumerate(names))
            m.net.config.label2id = {n: i for i, n in enumerate(names)}
            m.net.save_pretrained(str(tmp))
        else:
            torch.save(packed_state(m) if isinstance(m, StaticClassifier) else m.state_dict(), tmp / "model.pt")
            info: dict[str, Any] = {"kind": model.kind, "labels": names, "vocab_size": len(model.tokenizer)}
            if isinstance(m, StaticClassifier):
                info.update(dim=m.table.embedding_dim, pad_token_id=m.table.padding_idx, ngram_buckets=m.ngram_buckets,
                            tables=m.tables)  # fmt: skip
            else:
                info["factory"] = factory
            write_json(tmp / KIND_FILE, info)
        model.tokenizer.save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_text_model(folder: str | Path) -> tuple[TextModel, list[str]]:
    """A folder ``save_text_model`` wrote: the model (eval mode) and its label names."""
    folder = Path(folder)
    info_path = folder / KIND_FILE
    if not info_path.is_file():
        model = load_hf_classifier(folder, what="student folder")
        cfg = model.module.net.config
        return model, [str(cfg.id2label[i]) for i in sorted(cfg.id2label)]
    info = json.loads(info_path.read_text(encoding="utf-8"))
    tok = load_tokenizer(folder, False)
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    if info["kind"] == "static":
        module: nn.Module = StaticClassifier(torch.zeros(info["vocab_size"], info["dim"]), len(info["labels"]),
                                             info["pad_token_id"] or 0, info.get("ngram_buckets", 0))  # fmt: skip
        module.tables = info.get("tables", "float32")
        module.scales = {k[: -len(".weight.scale")]: v for k, v in state.items() if k.endswith(".weight.scale")}
        state = unpacked_state(state)
    else:
        from distill.core.task import resolve

        module = FactoryClassifier(resolve(info["factory"])(num_labels=len(info["labels"]), vocab_size=info["vocab_size"]))
    module.load_state_dict(state)
    module.eval()
    return TextModel(module, tok, info["kind"]), list(info["labels"])


def packed_state(m: StaticClassifier) -> dict[str, torch.Tensor]:
    """A static student's weights with its tables as ``m.tables`` keeps them: int8 rows plus a scale each
    (``NAME.weight.int8``, ``NAME.weight.scale``), float16, or float32; the rest as they are."""
    state = m.state_dict()
    for name in m.tables_of():
        w = state.pop(f"{name}.weight")
        if m.tables == "int8":
            state[f"{name}.weight.int8"], state[f"{name}.weight.scale"] = m.int8_table(name)
        else:
            state[f"{name}.weight"] = w.half() if m.tables == "float16" else w
    return state


def unpacked_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`packed_state` back to float32 weights (the values the run measured)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight.scale"):
            continue
        if key.endswith(".weight.int8"):
            base = key[: -len(".int8")]
            out[base] = value.float() * state[base + ".scale"]
        else:
            out[key] = value.float() if value.is_floating_point() else value
    return out


def count_parameters(model: TextModel) -> int:
    return sum(p.numel() for p in model.module.parameters())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
