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


class TextClassifierRuntime:
    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.labels: list[str] = list(self.config["labels"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(self.config["max_length"]))
        self.tokenizer.enable_padding(pad_id=int(self.config["pad_token_id"]), pad_token=self.config.get("pad_token", "[PAD]"))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def feeds(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # no character offsets
        encs = encode(list(texts))
        feed = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64)}  # fmt: skip
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in encs], dtype=np.int64)
        return feed

    def logits(self, texts: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """``(N, C)`` logits of raw texts (or ``(text, pair)`` tuples)."""
        out = [self.session.run(None, self.feeds(texts[s : s + batch_size]))[0] for s in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: Sequence[Any], batch_size: int = 64) -> list[str]:
        """The label name of each raw text."""
        return [self.labels[i] for i in self.logits(texts, batch_size).argmax(1)]
