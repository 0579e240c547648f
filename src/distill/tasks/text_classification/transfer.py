"""The transfer set (Tang et al. 2019, "Distilling task-specific knowledge from BERT into simple networks"):
unlabelled texts on which a student learns the teacher's soft labels, beside the labelled training split.

``data.transfer: rest`` takes the texts of ``data.source`` that the labelled sample left out; a file gives its
own. Either way a text that is also in train, validation or test (by its example id, and by its text alone) is
dropped, so no held-out text is ever trained on; the rest is deduplicated and, with ``data.max_transfer``, a
seeded sample. Its labels are -1: no cross-entropy is computed on those rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from distill.core.logs import log
from distill.errors import DataError
from distill.tasks.text_classification.data import LabelledTexts, Split, example_id, read_frame
from distill.tasks.text_classification.models import Encoded
from distill.tasks.text_classification.recipe import TextDataConfig


def with_transfer(data: LabelledTexts, cfg: TextDataConfig) -> LabelledTexts:
    """``data`` (from :func:`~.data.load_labelled_texts`) with its transfer set, when ``cfg.transfer`` names one."""
    if cfg.transfer is not None:
        data.transfer = transfer_split(cfg, data, data.unsampled or Split([], None, np.zeros(0, np.int64), []))
        data.stats["transfer"] = len(data.transfer)
    return data


def transfer_split(cfg: TextDataConfig, data: LabelledTexts, left_out: Split) -> Split:
    """The transfer texts ``cfg.transfer`` names (``left_out``: the source's texts outside the labelled sample)."""
    assert cfg.transfer is not None
    pairs_task = data.train.pairs is not None
    if cfg.transfer == "rest":
        if not len(left_out):
            log.warning("data.transfer rest: the labelled sample is all of %s, so the transfer set is empty (set "
                        "data.max_examples below the source's size to leave texts for it)", cfg.source)  # fmt: skip
        texts, pairs = left_out.texts, left_out.pairs
    else:
        texts, pairs = read_transfer_file(Path(cfg.transfer), cfg, pairs_task)
    held = {i for s in (data.train, data.val, data.test) for i in s.ids}
    held_texts = {t for s in (data.train, data.val, data.test) for t in s.texts}
    by_id: dict[str, tuple[str, str | None]] = {}
    for i, t in enumerate(texts):
        pair = pairs[i] if pairs is not None else None
        key = example_id(t, pair)
        if key not in held and (pairs_task or t not in held_texts):
            by_id.setdefault(key, (t, pair))
    dropped = len(texts) - len(by_id)
    keys = sorted(by_id, key=lambda k: hashlib.sha1(f"{cfg.seed}:transfer:{k}".encode()).hexdigest())
    if cfg.max_transfer is not None:
        keys = keys[: cfg.max_transfer]
    keys.sort()
    log.info("data: transfer set %d texts (%s; %d repeated or in the labelled splits, left out)", len(keys),
             cfg.transfer, dropped)  # fmt: skip
    return Split(texts=[by_id[k][0] for k in keys], pairs=[str(by_id[k][1]) for k in keys] if pairs_task else None,
                 labels=np.full(len(keys), -1, dtype=np.int64), ids=keys)  # fmt: skip


def read_transfer_file(p: Path, cfg: TextDataConfig, pairs_task: bool) -> tuple[list[str], list[str] | None]:
    """Texts (and pair texts) of a transfer file: a table with data.text_column (data.text_pair_column), or .txt."""
    if not p.is_file():
        raise DataError(f"data.transfer not found: {p}. Fix: give a file of unlabelled texts (.csv, .tsv, .jsonl, "
                        ".parquet, or .txt with one text a line), 'rest', or remove data.transfer.")  # fmt: skip
    if p.suffix.lower() == ".txt":
        if pairs_task:
            raise DataError(f"data.transfer {p} is a .txt file (one text a line) but this is a pair task. Fix: give a "
                            f"table with columns {cfg.text_column!r} and {cfg.text_pair_column!r}.")  # fmt: skip
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"data.transfer {p} is not UTF-8 text. Fix: save it as UTF-8.") from None
        texts = [line.strip() for line in lines if line.strip()]
        pairs = None
    else:
        df = read_frame(p)
        cols = [c for c in (cfg.text_column, cfg.text_pair_column if pairs_task else None) if c]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"data.transfer {p} has no column {missing[0]!r} (columns: "
                            f"{', '.join(map(str, df.columns))}). Fix: name its text column as data.text_column "
                            "does, or give a .txt file with one text a line.")  # fmt: skip
        df = df.dropna(subset=cols)
        texts = [str(t) for t in df[cfg.text_column]]
        pairs = [str(t) for t in df[cfg.text_pair_column]] if pairs_task and cfg.text_pair_column else None
        keep = [i for i, t in enumerate(texts) if t.strip()]
        texts = [texts[i] for i in keep]
        pairs = [pairs[i] for i in keep] if pairs is not None else None
    if not texts:
        raise DataError(f"data.transfer {p} holds no texts. Fix: give a file with unlabelled texts, or remove "
                        "data.transfer.")  # fmt: skip
    return texts, pairs


def training_rows(tokens: Callable[[str], Encoded], data: LabelledTexts, logits: dict[str, np.ndarray], *,
                  use: bool, limit: int | None = None) -> tuple[Encoded, np.ndarray, np.ndarray]:  # fmt: skip
    """What a student trains on: the training split, and with ``use`` the transfer set after it (its first ``limit``
    texts; labels -1, the teacher's logits), as (token ids, labels, teacher logits). ``tokens(split)``: that
    split's ids."""
    enc, labels, t_logits = tokens("train"), data.train.labels, logits["train"]
    if not use or data.transfer is None or "transfer" not in logits:
        return enc, labels, t_logits
    extra = tokens("transfer")
    n = len(extra) if limit is None else min(limit, len(extra))
    types = enc.types + extra.types[:n] if enc.types is not None and extra.types is not None else None
    return (Encoded(enc.ids + extra.ids[:n], types, enc.pad_id), np.concatenate([labels, data.transfer.labels[:n]]),
            np.concatenate([t_logits, logits["transfer"][:n]]))  # fmt: skip
