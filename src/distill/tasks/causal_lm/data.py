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
    separator_like,
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
    warnings = [w] if (w := _separator_warning(recipe, docs)) else []
    if d.max_documents:
        docs = docs[: d.max_documents]
    if d.dedup:
        docs = deduplicate(docs)
    train_docs, val_docs = split_documents(docs, d.val_fraction, d.seed)
    stats: dict[str, Any] = {"documents_read": n_read, "documents": len(docs), **({"warnings": warnings} if warnings else {})}
    return Documents(train_docs, val_docs, stats)


def _separator_warning(recipe: Any, docs: list[str]) -> str | None:
    """Said (console and run.log, and in metrics.json's data) when a text read one document per line repeats
    a line that looks like a separator: a warning, not a refusal, since such lines can be text (code's '}')."""
    d = recipe.data
    if d.separator is not None or (d.format != "text" and not (d.format == "auto" and _read_as_text(Path(d.path)))):
        return None
    found = separator_like(docs)
    if found is None:
        return None
    line, n = found
    message = (f"data.path {d.path}: {n} of its {len(docs)} lines ({100 * n / len(docs):.0f}%) hold only {line!r}, "
               f"which looks like a document separator, but data.separator is not set: every line is read as a "
               f"document, the {line!r} lines too, and a document of several lines is cut into one per line. "
               f"Fix: set data.separator: {line!r} (if those lines are text, ignore this).")  # fmt: skip
    log.warning("warning: %s", message)
    return message


def _read_as_text(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() not in (".jsonl", ".parquet")


@dataclass
class Prepared:
    """What the preflight read and checked before anything is written: the documents, the tokenizer (loaded,
    or trained here in memory and saved once the run directory exists), the packed blocks and a given teacher."""

    docs: Documents
    tokenizer: Any = None
    trained_here: bool = False
    train: torch.Tensor | None = None
    val: torch.Tensor | None = None
    teacher: Any = None


def tokenize_text(recipe: Any, docs: Documents) -> tuple[Any, bool, torch.Tensor, torch.Tensor]:
    """The tokenizer (the given one, the teacher's, or trained on the training documents, in memory) and
    the packed training and validation blocks: a text too short for one block is refused here."""
    d = recipe.data
    tok_dir = d.tokenizer.dir or recipe.teacher.dir
    if tok_dir is not None:
        tokenizer, trained = load_tokenizer(tok_dir), False
    else:
        tokenizer, trained = train_tokenizer(docs.train, d.tokenizer.vocab_size, min_frequency=d.tokenizer.min_frequency), True
    train = pack_blocks(docs.train, tokenizer, d.block_len, what="training")
    val = pack_blocks(docs.val, tokenizer, d.block_len, what="validation")
    return tokenizer, trained, train, val


def prepare_data(recipe: Any, run_dir: Path, prepared: Prepared | None = None, accelerator: Any = None, *,
                 finished: bool = False) -> LMData:  # fmt: skip
    """Tokenizer (the teacher's, a given one, or trained here on the training documents: by the preflight,
    saved by the main process for the others to load; resuming, the run's own) and packed blocks.
    ``finished``: for a post-run command, which reads the run's own tokenizer and never writes one."""
    d = recipe.data
    prepared = prepared or Prepared(read_text(recipe))
    docs = prepared.docs
    tok_dir = d.tokenizer.dir or recipe.teacher.dir
    trained = (run_dir / "tokenizer" / "tokenizer.json").exists()
    if tok_dir is None:
        barrier(accelerator)  # every process has looked before the main one writes
    tokenizer = prepared.tokenizer
    if tok_dir is not None:
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tok_dir)
    elif trained:
        tokenizer = load_tokenizer(run_dir / "tokenizer")  # resuming: the run's own tokenizer
    elif finished:
        from distill.core.rundir import check_run_files

        check_run_files(run_dir, [run_dir / "tokenizer" / "tokenizer.json"])  # a command never trains it anew
    else:
        if is_main(accelerator):
            t0 = time.perf_counter()
            if tokenizer is None:
                tokenizer = train_tokenizer(docs.train, d.tokenizer.vocab_size, min_frequency=d.tokenizer.min_frequency)
            save_tokenizer(tokenizer, run_dir / "tokenizer")
            log.info("tokenizer: byte-level BPE, %d tokens, trained on %d documents (%.1fs to save)",
                     len(tokenizer), len(docs.train), time.perf_counter() - t0)  # fmt: skip
        barrier(accelerator)
        if not is_main(accelerator):
            tokenizer = load_tokenizer(run_dir / "tokenizer")
    if tokenizer is prepared.tokenizer and prepared.train is not None:
        train, val = prepared.train, prepared.val
    else:
        train = pack_blocks(docs.train, tokenizer, d.block_len, what="training")
        val = pack_blocks(docs.val, tokenizer, d.block_len, what="validation")
    for message in docs.stats.get("warnings", []):
        log.warning("warning: %s", message, extra={"file_only": True})  # said on the console by the preflight
    stats = {**docs.stats, "train_documents": len(docs.train),
             "val_documents": len(docs.val), "train_blocks": len(train), "val_blocks": len(val),
             "block_len": d.block_len, "train_tokens": int(train.numel()), "vocab_size": len(tokenizer)}  # fmt: skip
    log.info("data: %d documents (%d after dedup) → %d train / %d val blocks of %d tokens", docs.stats["documents_read"],
             docs.stats["documents"], len(train), len(val), d.block_len)  # fmt: skip
    return LMData(tokenizer, train, val, stats)


def blocks_fingerprint(blocks: torch.Tensor) -> str:
    return hashlib.sha256(blocks.contiguous().numpy().tobytes() + str(tuple(blocks.shape)).encode()).hexdigest()
