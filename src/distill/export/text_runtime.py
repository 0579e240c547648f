"""Run an exported text classifier on raw text: ``tokenizer.json`` (Hugging Face tokenizers), ``model.onnx``
(ONNX Runtime) and ``config.json`` (label names, token limit, inputs) of one folder; no torch, no
transformers::

    from distill.export.text_runtime import TextClassifierRuntime
    clf = TextClassifierRuntime("runs/NAME/students/static/onnx")
    clf.predict(["a small domesticated feline"])        # -> ["noun.animal"]
    clf.predict([("a question", "its duplicate?")])     # a pair task: (text, pair) tuples
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def batch_tokenizer(tokenizer_json: str, max_length: int, pad_id: int, pad_token: str) -> Any:
    """A Rust tokenizer from ``tokenizer.json``'s text that truncates to ``max_length`` and pads each batch to its
    longest text: how the runtime (and the run's timing, which times what ships) tokenises."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.enable_truncation(int(max_length))
    tok.enable_padding(pad_id=int(pad_id), pad_token=pad_token)
    return tok


def encode_feeds(tokenizer: Any, texts: Sequence[Any], token_types: bool) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of raw texts or ``(text, pair)`` tuples, int64,
    in one ``encode_batch_fast`` call (no character offsets; ``encode_batch`` on older tokenizers)."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encs = encode(list(texts))
    feed = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64)}  # fmt: skip
    if token_types:
        feed["token_type_ids"] = np.array([e.type_ids for e in encs], dtype=np.int64)
    return feed


class TextClassifierRuntime:
    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.labels: list[str] = list(self.config["labels"])
        self.tokenizer = batch_tokenizer((folder / "tokenizer.json").read_text(encoding="utf-8"), self.config["max_length"],
                                         self.config["pad_token_id"], self.config.get("pad_token", "[PAD]"))  # fmt: skip
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def feeds(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        return encode_feeds(self.tokenizer, texts, "token_type_ids" in self.inputs)

    def logits(self, texts: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """``(N, C)`` logits of raw texts (or ``(text, pair)`` tuples)."""
        out = [self.session.run(None, self.feeds(texts[s : s + batch_size]))[0] for s in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: Sequence[Any], batch_size: int = 64) -> list[str]:
        """The label name of each raw text."""
        return [self.labels[i] for i in self.logits(texts, batch_size).argmax(1)]
