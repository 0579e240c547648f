"""A language-model run's data: the documents (read, deduplicated, split), the tokenizer (the teacher's,
a given one, or trained here) and the packed blocks; saving a model folder with its tokenizer."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.tasks.causal_lm.text import (
    deduplicate,
    load_tokenizer,
    pack_blocks,
    read_documents,
    save_tokenizer,
    split_documents,
    train_tokenizer,
)

log = logging.getLogger("distill")


def is_main(accelerator: Any) -> bool:
    return accelerator is None or accelerator.is_main_process


def barrier(accelerator: Any) -> None:
    """Every process waits here (a barrier; nothing with one process)."""
    if accelerator is not None:
        accelerator.wait_for_everyone()


@dataclass
class LMData:
    tokenizer: Any
    train: torch.Tensor  # (N, L) packed training blocks
    val: torch.Tensor  # (M, L) packed held-out blocks
    stats: dict[str, Any]


@dataclass
class LMRunResult:
    run_dir: Path
    metrics: dict[str, Any]
    table_markdown: str


def save_model(model: Any, directory: Path, tokenizer: Any) -> None:
    """save_pretrained (safetensors) + tokenizer into a temporary folder, then rename."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one tiny shard: its "Writing model shards" bar is noise
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------- data
@dataclass
class Documents:
    train: list[str]
    val: list[str]
    stats: dict[str, Any]


def read_text(recipe: Any) -> Documents:
    """The documents of ``data.path``, deduplicated and split (seeded): the preflight's part of the data."""
    d = recipe.data
    docs = read_documents(d.path, d.format, separator=d.separator, text_field=d.text_field)
    n_read = len(docs)
    if d.max_documents:
        docs = docs[: d.max_documents]
    if d.dedup:
        docs = deduplicate(docs)
    train_docs, val_docs = split_documents(docs, d.val_fraction, d.seed)
    return Documents(train_docs, val_docs, {"documents_read": n_read, "documents": len(docs)})


def prepare_data(recipe: Any, run_dir: Path, docs: Documents | None = None, accelerator: Any = None) -> LMData:
    """Tokenizer (the teacher's, a given one, or trained here on the training documents: by the main
    process, which saves it for the others to load) and packed blocks."""
    d = recipe.data
    docs = docs or read_text(recipe)
    train_docs, val_docs = docs.train, docs.val
    tok_dir = d.tokenizer.dir or recipe.teacher.dir
    trained = (run_dir / "tokenizer" / "tokenizer.json").exists()
    if tok_dir is None:
        barrier(accelerator)  # every process has looked before the main one writes
    if tok_dir is not None:
        tokenizer = load_tokenizer(tok_dir)
    elif trained:
        tokenizer = load_tokenizer(run_dir / "tokenizer")
    else:
        if is_main(accelerator):
            t0 = time.perf_counter()
            tokenizer = train_tokenizer(train_docs, d.tokenizer.vocab_size, min_frequency=d.tokenizer.min_frequency)
            save_tokenizer(tokenizer, run_dir / "tokenizer")
            log.info("tokenizer: byte-level BPE, %d tokens, trained on %d documents in %.1fs",
                     len(tokenizer), len(train_docs), time.perf_counter() - t0)  # fmt: skip
        barrier(accelerator)
        if not is_main(accelerator):
            tokenizer = load_tokenizer(run_dir / "tokenizer")
    train = pack_blocks(train_docs, tokenizer, d.block_len, what="training")
    val = pack_blocks(val_docs, tokenizer, d.block_len, what="validation")
    stats = {**docs.stats, "train_documents": len(train_docs),
             "val_documents": len(val_docs), "train_blocks": len(train), "val_blocks": len(val),
             "block_len": d.block_len, "train_tokens": int(train.numel()), "vocab_size": len(tokenizer)}  # fmt: skip
    log.info("data: %d documents (%d after dedup) → %d train / %d val blocks of %d tokens", docs.stats["documents_read"],
             docs.stats["documents"], len(train), len(val), d.block_len)  # fmt: skip
    return LMData(tokenizer, train, val, stats)


def blocks_fingerprint(blocks: torch.Tensor) -> str:
    return hashlib.sha256(blocks.contiguous().numpy().tobytes() + str(tuple(blocks.shape)).encode()).hexdigest()
