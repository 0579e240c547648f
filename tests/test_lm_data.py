"""Text data for language models: reading formats, errors, tokenizer, split, packing, padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.tasks.causal_lm.text import (
    deduplicate,
    load_tokenizer,
    pack_blocks,
    pad_examples,
    read_documents,
    read_pairs,
    split_documents,
    train_tokenizer,
)
from distill.errors import DataError

DOCS = [f"Fortune number {i}: the cat sat on the mat and ran {i % 7} times." for i in range(60)]


def test_plain_lines_and_separator(tmp_path: Path) -> None:
    lines = tmp_path / "a.txt"
    lines.write_text("one doc\n\nsecond doc\n")
    assert read_documents(lines) == ["one doc", "second doc"]
    fort = tmp_path / "fortunes"
    fort.write_text("A fortune\nover two lines\n%\nAnother\n%\n")
    assert read_documents(fort, separator="%") == ["A fortune\nover two lines", "Another"]


def test_jsonl_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "hello world"}\n\n{"text": "bye"}\n')
    assert read_documents(j) == ["hello world", "bye"]
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "Q: 1+1?", "completion": " A: 2"}) + "\n")
    assert read_documents(pc) == ["Q: 1+1? A: 2"]
    assert read_pairs(pc) == [("Q: 1+1?", " A: 2")]
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["x y", "z"]}), p)
    assert read_documents(p) == ["x y", "z"]


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("missing.txt", None, "not found"),
        ("empty.txt", "\n\n", "holds no text"),
        ("bad.jsonl", '{"text": "ok"}\n{not json\n', "line 2 is not valid JSON"),
        ("nofield.jsonl", '{"body": "x"}\n', "neither a 'text' field"),
        ("list.jsonl", "[1, 2]\n", "not an object"),
        ("bad.parquet", "not parquet", "cannot be read as Parquet"),
    ],
)
def test_data_errors_say_what_and_how(tmp_path: Path, name: str, content: str | None, fragment: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match="Fix:") as err:
        read_documents(path)
    assert fragment in str(err.value)


def test_pairs_need_both_fields(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "x"}\n')
    with pytest.raises(DataError, match="lacks a 'prompt' or 'completion'"):
        read_pairs(p)


def test_dedup_and_seeded_split() -> None:
    docs = ["a", "b", " a ", "c", "d", "b"]
    assert deduplicate(docs) == ["a", "b", "c", "d"]
    tr1, va1 = split_documents(DOCS, 0.1, seed=3)
    tr2, va2 = split_documents(DOCS, 0.1, seed=3)
    assert (tr1, va1) == (tr2, va2) and len(va1) == 6 and not set(tr1) & set(va1)
    assert split_documents(DOCS, 0.1, seed=4)[1] != va1
    with pytest.raises(DataError, match="at least 2"):
        split_documents(["only"], 0.1, 0)


def test_tokenizer_round_trip_and_packing(tmp_path: Path) -> None:
    tok = train_tokenizer(DOCS, 300, tmp_path / "tok")
    assert len(tok) <= 300 and tok.eos_token_id is not None
    again = load_tokenizer(tmp_path / "tok")
    assert again("the cat sat")["input_ids"] == tok("the cat sat")["input_ids"]
    assert tok.decode(tok("the cat sat", add_special_tokens=False)["input_ids"]) == "the cat sat"
    blocks = pack_blocks(DOCS[:5], tok, 16)
    assert blocks.dtype == torch.long and blocks.shape[1] == 16
    first = tok(DOCS[0], add_special_tokens=False)["input_ids"]
    flat = blocks.flatten().tolist()
    assert flat[: len(first)] == first and flat[len(first)] == tok.eos_token_id
    with pytest.raises(DataError, match="fewer than one block"):
        pack_blocks(["hi"], tok, 64, what="validation")
    with pytest.raises(DataError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "nope")


def test_pad_examples_masks_prompt_and_padding() -> None:
    ids, mask = pad_examples([([5, 6, 7], [8, 9]), ([1], [2, 3, 4])], block_len=8, pad_id=0)
    assert ids[0].tolist() == [5, 6, 7, 8, 9, 0, 0, 0]
    # mask[t] ⇔ ids[t + 1] is a completion token
    assert mask[0].tolist() == [False, False, True, True, False, False, False, False]
    assert mask[1].tolist() == [True, True, True, False, False, False, False, False]
    long_ids, long_mask = pad_examples([(list(range(1, 10)), [20, 21])], block_len=6, pad_id=0)
    assert long_ids[0].tolist() == [6, 7, 8, 9, 20, 21] and int(long_mask.sum()) == 2
