"""Text corpora for language models: read documents, train or load a tokenizer, split, pack.

Sources: a plain text file (one document per line, or documents separated by a line holding only
``separator``, e.g. ``%`` in fortune files), JSONL or Parquet with a ``text`` field, or with
``prompt``/``completion`` fields (pairs for sequence-level distillation).

Shapes: :func:`pack_blocks` returns ``(N, L)`` int64 token ids (documents joined with EOS);
:func:`pad_examples` returns ``ids (N, L)`` and a bool ``loss_mask (N, L)`` that is True on the
completion tokens a model must predict (False on prompt and padding positions).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.errors import DataError

EOS = "<|endoftext|>"


# ------------------------------------------------------------------ reading
def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix.lower(), "text")


def _check_file(path: Path, folder_ok: bool = False) -> None:
    if not path.exists():
        raise DataError(f"text file not found: {path}. Fix: check data.path (relative paths start at the working folder).")
    if not path.is_file() and not (folder_ok and path.is_dir()):
        raise DataError(f"data.path {path} is not a file. Fix: point data.path at one text, .jsonl or .parquet file.")


def _text_files(folder: Path) -> list[Path]:
    """The text files of a folder, sorted: symlinks and binary files (e.g. fortune .dat indexes) skipped."""
    files = []
    for f in sorted(folder.iterdir()):
        if f.is_symlink() or not f.is_file() or f.name.startswith("."):
            continue
        with open(f, "rb") as fh:
            if b"\0" in fh.read(4096):
                continue
        files.append(f)
    if not files:
        raise DataError(f"the folder {folder} holds no text files. Fix: point data.path at a text file or a folder of them.")
    return files


def separator_like(docs: list[str], share: float = 0.1) -> tuple[str, int] | None:
    """The line that looks like a document separator (short, no letter or digit: '%', '---', '***') when it
    makes up more than ``share`` of ``docs`` (the lines of a file read one document per line), with its count."""
    counts = Counter(d for d in docs if len(d) <= 5 and not any(c.isalnum() for c in d))
    if not counts or len(docs) < 10:
        return None
    line, n = counts.most_common(1)[0]
    return (line, n) if n > share * len(docs) else None


def read_records(path: str | Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """The rows of a JSONL or Parquet file as dicts."""
    p = Path(path)
    _check_file(p)
    fmt = _format_of(p, fmt)
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{p} line {n} is not valid JSON ({exc.msg}). Each line of a .jsonl file must be one JSON object, "
                    'e.g. {"text": "..."}. Fix: correct or remove that line.'
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{p} line {n} is a JSON {type(row).__name__}, not an object. Fix: write one object per line.")
            rows.append(row)
        return rows
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
        except Exception as exc:
            raise DataError(f"{p} cannot be read as Parquet ({exc}). Fix: check the file, or set data.format.") from None
    raise DataError(f"{p}: format {fmt!r} has no records. Fix: use a .jsonl or .parquet file.")


def read_documents(
    path: str | Path, fmt: str = "auto", *, separator: str | None = None, text_field: str = "text"
) -> list[str]:
    """Documents of a text, JSONL or Parquet file; with prompt/completion rows, their concatenation.
    A folder (text format) means every text file in it, in name order (e.g. /usr/share/games/fortunes)."""
    p = Path(path)
    _check_file(p, folder_ok=True)
    fmt = _format_of(p, fmt)
    if p.is_dir():
        if fmt != "text":
            raise DataError(f"data.path {p} is a folder; folders are read as text only. Fix: point it at the {fmt} file.")
        docs = []
        for f in _text_files(p):
            docs += read_documents(f, "text", separator=separator) if f.stat().st_size else []
        return docs
    if fmt == "text":
        raw = p.read_bytes()
        if b"\0" in raw[:4096]:
            raise DataError(f"{p} looks binary (NUL bytes), not text. Fix: point data.path at a text file, or set data.format.")
        text = raw.decode("utf-8", errors="replace")
        if separator is None:
            docs = [line.strip() for line in text.splitlines()]
        else:
            docs, cur = [], []
            for line in text.splitlines():
                if line.strip() == separator:
                    docs.append("\n".join(cur).strip())
                    cur = []
                else:
                    cur.append(line)
            docs.append("\n".join(cur).strip())
    else:
        rows = read_records(p, fmt)
        docs = []
        for i, row in enumerate(rows):
            if text_field in row:
                docs.append(str(row[text_field] or "").strip())
            elif "prompt" in row and "completion" in row:
                docs.append((str(row["prompt"]) + str(row["completion"])).strip())
            else:
                raise DataError(
                    f"{p} row {i + 1} has neither a {text_field!r} field nor 'prompt'/'completion' fields "
                    f"(it has: {', '.join(map(str, row)) or 'none'}). Fix: rename the field, or set data.text_field."
                )
    docs = [d for d in docs if d]
    if not docs:
        how = f"documents separated by lines holding only {separator!r}" if separator else "one document per line"
        raise DataError(
            f"{p} holds no text ({fmt} format, {how if fmt == 'text' else 'field ' + repr(text_field)}). "
            "Fix: check the file and data.format/data.separator."
        )
    return docs


def read_pairs(path: str | Path, fmt: str = "auto") -> list[tuple[str, str]]:
    """``(prompt, completion)`` pairs from a JSONL or Parquet file (e.g. answers of a black-box API)."""
    p = Path(path)
    rows = read_records(p, fmt)
    pairs = []
    for i, row in enumerate(rows):
        if "prompt" not in row or "completion" not in row:
            raise DataError(
                f"{p} row {i + 1} lacks a 'prompt' or 'completion' field (it has: {', '.join(map(str, row)) or 'none'}). "
                'Sequence-level distillation needs both, e.g. {"prompt": "Q: ...", "completion": " A: ..."}. '
                "Fix: write both fields in every row."
            )
        pairs.append((str(row["prompt"]), str(row["completion"])))
    if not pairs:
        raise DataError(f"{p} has no prompt/completion rows. Fix: write one JSON object per line with both fields.")
    return pairs


def deduplicate(docs: list[str]) -> list[str]:
    """Exact duplicates (after stripping) removed, first occurrence kept, order kept."""
    seen: set[str] = set()
    out = []
    for d in docs:
        key = d.strip()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by document: (train, val). Both get at least one document."""
    if len(docs) < 2:
        raise DataError(
            f"only {len(docs)} document(s): a train/validation split by document needs at least 2. "
            "Fix: add text, or check data.separator (one document per line by default)."
        )
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(docs) * val_fraction)), len(docs) - 1)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [docs[i] for i in train], [docs[i] for i in val]


# ---------------------------------------------------------------- tokenizer
def train_tokenizer(docs: list[str], vocab_size: int, directory: str | Path | None = None, *, min_frequency: int = 2) -> Any:
    """A byte-level BPE tokenizer trained on ``docs`` (EOS ``<|endoftext|>``, also used for padding),
    wrapped as a transformers ``PreTrainedTokenizerFast`` and saved to ``directory`` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=EOS)
    if directory is not None:
        save_tokenizer(fast, directory)
    return fast


def save_tokenizer(tokenizer: Any, directory: str | Path) -> None:
    """save_pretrained into a temporary folder, then rename (a killed run leaves no half tokenizer)."""
    import shutil
    import tempfile

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        if target.exists():
            for f in tmp.iterdir():
                f.replace(target / f.name)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(directory: str | Path) -> Any:
    """A tokenizer folder (save_pretrained format), local files only."""
    from transformers import AutoTokenizer

    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"tokenizer folder not found: {d}. Fix: check data.tokenizer.dir, or leave it unset to train one.")
    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:
        raise DataError(
            f"cannot load a tokenizer from {d} ({type(exc).__name__}: {exc}). It needs tokenizer.json or the "
            "vocabulary files of save_pretrained. Fix: point data.tokenizer.dir at such a folder."
        ) from None
    if tok.eos_token_id is None:
        raise DataError(
            f"the tokenizer in {d} has no EOS token; packing needs one between documents. Fix: set eos_token in its "
            "tokenizer_config.json."
        )
    return tok


# ------------------------------------------------------------------ packing
def encode(tokenizer: Any, docs: list[str]) -> list[list[int]]:
    return tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []


def pack_blocks(docs: list[str], tokenizer: Any, block_len: int, *, what: str = "training") -> Tensor:
    """Documents joined with EOS after each and cut into ``(N, block_len)`` blocks (the rest dropped)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in encode(tokenizer, docs):
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // block_len
    if n == 0:
        raise DataError(
            f"the {what} documents give {len(stream)} tokens, fewer than one block of {block_len}. "
            "Fix: add text, lower data.block_len, or lower data.val_fraction."
        )
    return torch.tensor(stream[: n * block_len], dtype=torch.long).view(n, block_len)


def pad_examples(
    pairs: list[tuple[list[int], list[int]]], block_len: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """Token-id pairs ``(prompt, completion)`` → ``ids (N, L)``, ``loss_mask (N, L)`` True where a
    completion token is the target: the mask marks positions whose NEXT token must be predicted
    (mask[t] True ⇔ ids[t+1] is a completion token). Over-long examples keep their prompt's tail."""
    ids = torch.full((len(pairs), block_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), block_len), dtype=torch.bool)
    for i, (p, c) in enumerate(pairs):
        c = list(c)[: block_len - 1]
        p = list(p)[-(block_len - len(c)) :] if p else []
        if not p:  # a completion needs at least one token before it
            p, c = [pad_id], c[: block_len - 1]
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, len(p) - 1 : len(seq) - 1] = True
    return ids, mask


def encode_pairs(tokenizer: Any, pairs: list[tuple[str, str]], eos_after: bool = True) -> list[tuple[list[int], list[int]]]:
    prompts = encode(tokenizer, [p for p, _ in pairs])
    comps = encode(tokenizer, [c for _, c in pairs])
    eos = [tokenizer.eos_token_id] if eos_after else []
    return [(p, c + eos) for p, c in zip(prompts, comps)]
