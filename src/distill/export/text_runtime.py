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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# printable ASCII and the three whitespace controls: a text with anything else (accents, other controls) goes to the
# Rust tokenizer, whose normalizer changes it; on these, BERT's normalizer only lowercases and turns \t\n\r to spaces
_OTHER_CHARS = re.compile(r"[^\t\n\r -~]")
# BERT's pre-tokenizer on such text: runs of letters and digits, each ASCII punctuation mark alone
_WORDS = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")
_CACHE_WORDS = 500_000
# the texts the word path is checked on against the Rust tokenizer before it is used (every kind of character it takes)
_PROBES = ("Hello, World!", "a\tb\nc\rd  e", "x" * 130 + " ok", "don't-stop_now #1: 3.14/2=1.57 [ok] {x} |y| ~z^ `q` @a",
           "UNAFFABLE unaffable Unaffable", "", " ", "!!!", "12345678901234567890 word " * 6)


def _special_ids(spec: dict[str, Any] | None) -> tuple[list[int], list[int]] | None:
    """The ids a post-processor puts before and after one text, or None for one the word path does not know."""
    if spec is None:
        return [], []
    if spec.get("type") == "BertProcessing":
        return [int(spec["cls"][1])], [int(spec["sep"][1])]
    if spec.get("type") != "TemplateProcessing":
        return None
    before: list[int] = []
    after: list[int] = []
    seen = False
    for piece in spec.get("single", []):
        if "Sequence" in piece:
            if seen or piece["Sequence"].get("type_id", 0) != 0:
                return None
            seen = True
        elif "SpecialToken" in piece and piece["SpecialToken"].get("type_id", 0) == 0:
            ids = spec["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            (after if seen else before).extend(int(i) for i in ids)
        else:
            return None
    return (before, after) if seen else None


class BatchTokenizer:
    """``tokenizer.json`` made into batches as the runtime feeds them: truncated to ``max_length``, each batch padded
    to its longest text; how the runtime (and the run's timing, which times what ships) tokenises.

    A WordPiece (BERT) tokenizer takes a faster path for a single text of plain ASCII: the text is cut into words
    and punctuation as BERT's pre-tokenizer does, and each word's pieces come from a cache filled by the Rust
    tokenizer itself (WordPiece splits every word on its own), so the ids are the Rust tokenizer's, about 9x sooner
    on one thread (``benchmarks/text_tokenizer.py``).
    Everything else (pairs, other characters, a text holding a special token's string, other tokenizers) goes
    through the Rust tokenizer. The path is checked against it on probe texts first: ``word_path`` says whether it
    is on, ``word_path_off`` why not."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int, pad_token: str) -> None:
        from tokenizers import Tokenizer

        self.max_length, self.pad_id = int(max_length), int(pad_id)
        self.rust = Tokenizer.from_str(tokenizer_json)
        self.rust.enable_truncation(self.max_length)
        self.rust.enable_padding(pad_id=self.pad_id, pad_token=pad_token)
        self._encode = getattr(self.rust, "encode_batch_fast", self.rust.encode_batch)
        spec = json.loads(tokenizer_json)
        self.word_path_off = self._word_path(spec, tokenizer_json)
        if self.word_path_off is None:
            got, want = self._by_words(list(_PROBES)), self._by_rust(list(_PROBES))
            if any(not np.array_equal(got[k], want[k]) for k in want):
                self.word_path_off = "its ids differ from the Rust tokenizer's on a probe text"
        self.word_path = self.word_path_off is None

    def _word_path(self, spec: dict[str, Any], tokenizer_json: str) -> str | None:
        from tokenizers import Tokenizer

        norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        if (norm.get("type"), pre.get("type"), model.get("type")) != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
            return "not a BERT WordPiece tokenizer"
        if not norm.get("clean_text", True):
            return "its normalizer keeps control characters"
        specials = _special_ids(spec.get("post_processor"))
        if specials is None:
            return "its post-processor is not [CLS] text [SEP]"
        self._before, self._after = specials
        self._keep = self.max_length - len(self._before) - len(self._after)
        if self._keep < 1:
            return "max_length leaves no room for text"
        self._lower = bool(norm.get("lowercase", True))
        added = sorted({a["content"].lower() for a in spec.get("added_tokens", []) if a.get("content")}, key=len, reverse=True)
        self._added = re.compile("|".join(map(re.escape, added))) if added else None
        self._plain = Tokenizer.from_str(tokenizer_json)
        self._plain.no_truncation()
        self._plain.no_padding()
        self._pieces: dict[str, list[int]] = {}
        return None

    def _ids(self, text: str) -> list[int] | None:
        """The ids of one plain-ASCII text by words, or None for a text the Rust tokenizer must take."""
        if not text.isascii() or _OTHER_CHARS.search(text):
            return None
        low = text.lower()
        if self._added is not None and self._added.search(low):
            return None
        pieces, out = self._pieces, []
        for word in _WORDS.findall(low if self._lower else text):
            ids = pieces.get(word)
            if ids is None:
                ids = self._plain.encode(word, add_special_tokens=False).ids
                if len(pieces) < _CACHE_WORDS:
                    pieces[word] = ids
            out.extend(ids)
            if len(out) >= self._keep:
                del out[self._keep :]
                break
        return self._before + out + self._after

    def _by_rust(self, texts: list[Any]) -> dict[str, np.ndarray]:
        encs = self._encode(texts) if texts else []
        width = len(encs[0].ids) if encs else 0
        return {key: np.array([getattr(e, attr) for e in encs], dtype=np.int64).reshape(len(encs), width)
                for key, attr in (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids"))}

    def _by_words(self, texts: list[Any]) -> dict[str, np.ndarray]:
        rows = [self._ids(t) if isinstance(t, str) else None for t in texts]
        rest = [i for i, r in enumerate(rows) if r is None]
        if rest:
            if len(rest) == len(rows) or not all(isinstance(texts[i], str) for i in rest):
                return self._by_rust(texts)
            for i, e in zip(rest, self._encode([texts[i] for i in rest]), strict=True):
                rows[i] = e.ids[: sum(e.attention_mask)]
        width = max((len(r) for r in rows), default=0)  # type: ignore[arg-type]
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r  # type: ignore[arg-type]
            mask[i, : len(r)] = 1  # type: ignore[arg-type]
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def feeds(self, texts: Sequence[Any], token_types: bool) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of raw texts or ``(text, pair)`` tuples, int64."""
        texts = list(texts)
        feed = self._by_words(texts) if self.word_path and texts else self._by_rust(texts)
        if not token_types:
            del feed["token_type_ids"]
        return feed


class TextClassifierRuntime:
    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.labels: list[str] = list(self.config["labels"])
        self.tokenizer = BatchTokenizer((folder / "tokenizer.json").read_text(encoding="utf-8"), self.config["max_length"],
                                        self.config["pad_token_id"], self.config.get("pad_token", "[PAD]"))  # fmt: skip
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def feeds(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        return self.tokenizer.feeds(texts, "token_type_ids" in self.inputs)

    def inputs_of(self, texts: Any) -> list[Any]:
        """``texts`` as a list the tokenizer takes: one string is one text (not its characters); every item must
        be a string, or a ``(text, pair)`` of two for a model trained on pairs (``config.json``'s ``pairs``)."""
        if isinstance(texts, str):
            texts = [texts]
        items = [tuple(x) if isinstance(x, list) else x for x in texts]
        pairs = self.config.get("pairs")
        for i, x in enumerate(items):
            one = isinstance(x, str)
            two = isinstance(x, tuple) and len(x) == 2 and all(isinstance(p, str) for p in x)
            if pairs is True and not two:
                raise TypeError(f"item {i} is {type(x).__name__} {x!r:.60}: this model classifies pairs of texts. "
                                "Fix: pass (text, pair) tuples of two strings.")  # fmt: skip
            if pairs is False and not one:
                raise TypeError(f"item {i} is {type(x).__name__} {x!r:.60}: this model classifies single texts. "
                                "Fix: pass strings (decode bytes, turn numbers or None into text or drop them).")  # fmt: skip
            if not (one or two):
                raise TypeError(f"item {i} is {type(x).__name__} {x!r:.60}. Fix: pass strings, or (text, pair) tuples.")
        return items

    def logits(self, texts: Sequence[Any] | str, batch_size: int = 64) -> np.ndarray:
        """``(N, C)`` logits of raw texts (or ``(text, pair)`` tuples; one string is one text)."""
        texts = self.inputs_of(texts)
        out = [self.session.run(None, self.feeds(texts[s : s + batch_size]))[0] for s in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: Sequence[Any] | str, batch_size: int = 64) -> list[str]:
        """The label name of each raw text (a list of one for one string)."""
        return [self.labels[i] for i in self.logits(texts, batch_size).argmax(1)]
