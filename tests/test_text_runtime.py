"""The runtime's tokenizer (what the exported text students and the run's timing use): its word path for plain
ASCII gives the Rust tokenizer's ids exactly, on random text of every printable character, truncated and padded;
texts it cannot take, pairs and other tokenizers go through the Rust tokenizer."""

from __future__ import annotations

import random

import numpy as np
import pytest

from distill.export.text_runtime import BatchTokenizer
from tests.embed_helpers import make_tiny_sentence_model

WORDS = ["the", "Cat", "sat", "123", "don't", "unaffable", "[MASK]", "[mask]", "##ing", " ", ".", "\t"]


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = make_tiny_sentence_model(tmp_path_factory.mktemp("tok") / "encoder", hidden=8)
    return (folder / "tokenizer.json").read_text(encoding="utf-8")


def random_texts(rng: random.Random, chars: list[str], n: int) -> list[str]:
    def one() -> str:
        parts = [rng.choice(chars) if rng.random() < 0.4 else rng.choice(WORDS + ["x" * rng.randint(1, 110)])
                 for _ in range(rng.randint(0, 30))]  # fmt: skip
        return "".join(parts)

    return [one() for _ in range(n)]


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("max_length", [3, 6, 32])
def test_the_word_path_gives_the_rust_tokenizers_ids(tokenizer_json: str, max_length: int) -> None:
    tok = BatchTokenizer(tokenizer_json, max_length, 0, "[PAD]")
    assert tok.word_path, tok.word_path_off
    rng = random.Random(max_length)
    printable = [chr(c) for c in range(32, 127)] + ["\t", "\n", "\r"]
    anything = printable + [chr(c) for c in range(32)] + ["\x7f", "é", "ß", "中", "\u00a0", "\u200b"]
    taken = 0
    for chars in (printable, anything):
        for _ in range(300):
            batch = random_texts(rng, chars, rng.randint(1, 8))
            taken += sum(tok._ids(t) is not None for t in batch)
            assert same(tok.feeds(batch, True), tok._by_rust(batch)), batch
    assert taken > 500  # most printable texts went by words, not all to Rust
    # a text holding a special token's string, control characters, accents: the Rust tokenizer takes them
    for text in ("a [MASK] b", "tab\x0bbed", "café"):
        assert tok._ids(text) is None
    pairs = [("first text", "its pair"), ("another", "one")]
    assert same(tok.feeds(pairs, True), tok._by_rust(pairs))
    assert tok.feeds([], False)["input_ids"].shape[0] == 0


def test_another_tokenizer_goes_through_rust_and_says_why(tokenizer_json: str) -> None:
    import json

    spec = json.loads(tokenizer_json)
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    tok = BatchTokenizer(json.dumps(spec), 16, 0, "[PAD]")
    assert not tok.word_path and tok.word_path_off == "not a BERT WordPiece tokenizer"
    texts = ["Hello, world!", "don't stop"]
    assert same(tok.feeds(texts, True), tok._by_rust(texts))
    assert "token_type_ids" not in tok.feeds(texts, False)
