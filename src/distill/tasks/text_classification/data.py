"""Labelled texts for text classification: read (files, a datasets folder, or a built-in set), checked,
deduplicated, and split into train / validation / test, stratified by class and seeded.

Every example has a stable id (a hash of its text and pair), so a split is the same on every machine
and a text never lands in two splits: identical texts are one example, and a text given with two
different labels is dropped (counted in the log), since no model can be right on both.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.logs import log
from distill.data import check_header
from distill.data.corpus import FORTUNES_DIR, WORDNET_DIR, fortune_entries, is_prose, wordnet_glosses
from distill.data.labels import label_variants, small_classes, small_classes_message, variants_message
from distill.errors import DataError
from distill.tasks.text_classification.recipe import BUILTIN_TEXT_SETS, TextDataConfig

# WordNet 3.0's lexicographer files, by number (lexnames(5WN)): the label of every synset.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()


@dataclass
class Split:
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray  # (N,) int64 indices into LabelledTexts.label_names
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def inputs(self) -> list[Any]:
        """What a tokenizer takes: texts, or (text, pair) tuples."""
        return self.texts if self.pairs is None else list(zip(self.texts, self.pairs, strict=True))


@dataclass
class LabelledTexts:
    label_names: list[str]
    train: Split
    val: Split
    test: Split
    source: str
    dropped_conflicts: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    transfer: Split | None = None  # unlabelled texts (labels -1) the students learn the teacher's soft labels on
    unsampled: Split | None = None  # with data.transfer: the source's labelled texts outside the sample (transfer.py)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ----------------------------------------------------------------- readers
OWN = "give your own labelled texts in data.source (CSV, JSONL, Parquet)"


def wordnet_lexnames(folder: str | Path = WORDNET_DIR) -> tuple[list[str], list[str]]:
    """(definition, lexicographer file) of every synset of WordNet 3.0's data.{noun,verb,adj,adv}."""
    texts, labels = [], []
    for fields, gloss in wordnet_glosses(folder, OWN):
        lex = int(fields[1])
        definition = gloss.split('; "', 1)[0].strip().rstrip(";").strip()
        if len(definition) > 1 and lex < len(LEXNAMES):
            texts.append(definition)
            labels.append(LEXNAMES[lex])
    return texts, labels


def fortunes_topics(folder: str | Path = FORTUNES_DIR, min_per_topic: int = 20) -> tuple[list[str], list[str]]:
    """(entry, file name) of Debian's fortunes: each file is a topic; entries of 15-400 characters of prose."""
    by_topic: dict[str, list[str]] = {}
    for f, entry in fortune_entries(folder, OWN):
        text = " ".join(entry.split())
        if 15 <= len(text) <= 400 and is_prose(text):
            by_topic.setdefault(f.name, []).append(text)
    texts, labels = [], []
    for topic, entries in by_topic.items():
        if len(entries) >= min_per_topic:
            texts += entries
            labels += [topic] * len(entries)
    return texts, labels


def _columns_error(p: Path, missing: str, key: str, columns: list[str]) -> DataError:
    return DataError(
        f"{p} has no column {missing!r} (columns: {', '.join(map(str, columns))}). Fix: set data.{key} to the column "
        "that holds it."
    )


def read_frame(p: Path) -> Any:
    import pandas as pd

    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix in {".jsonl", ".ndjson"}:
            rows = []
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise DataError(f"{p} line {i} is not JSON ({exc}). Fix: one JSON object a line.") from None
            if not all(isinstance(r, dict) for r in rows):
                raise DataError(f"{p} holds a JSON line that is not an object. Fix: one JSON object a line.")
            return pd.DataFrame(rows)
        if suffix in {".csv", ".tsv"}:
            sep = "\t" if suffix == ".tsv" else ","
            check_header(p, sep)  # no column twice, no header split by another separator
            return pd.read_csv(p, sep=sep, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text. Fix: save it as UTF-8.") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {p}: {exc}. Fix: check it is a valid {suffix[1:]} file.") from None
    raise DataError(f"unsupported data format {suffix!r} for {p}. Fix: use .csv, .tsv, .jsonl, .parquet or a datasets folder.")


def _read_dataset_folder(p: Path) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{p} is a folder; reading a datasets save_to_disk folder needs `pip install datasets`.") from None
    try:
        ds = datasets.load_from_disk(str(p))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{p} is not a datasets folder saved with save_to_disk ({exc}). Fix: point data.source at one, or at a file.") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets(list(ds.values()))  # distill makes its own splits
    return ds.to_pandas()


def read_labelled(cfg: TextDataConfig) -> tuple[list[str], list[str] | None, list[str]]:
    """(texts, pair texts or None, labels as strings) of ``data.source``, every row checked."""
    src = cfg.source
    if src.startswith("builtin:"):
        name = src.split(":", 1)[1]
        if cfg.text_pair_column:
            raise DataError(f"data.text_pair_column applies to your own files; builtin:{name} has one text a row. Fix: remove it.")
        if name == "wordnet-lexnames":
            return (*_pairless(wordnet_lexnames()),)
        if name == "fortunes-topics":
            return (*_pairless(fortunes_topics()),)
        raise DataError(f"unknown built-in set {name!r}. Fix: use one of {', '.join('builtin:' + b for b in BUILTIN_TEXT_SETS)}.")
    p = Path(src)
    if not p.exists():
        raise DataError(f"data.source not found: {p}. Fix: check the path (or use builtin:wordnet-lexnames).")
    df = _read_dataset_folder(p) if p.is_dir() else read_frame(p)
    cols = [str(c) for c in df.columns]
    for key in ("text_column", "label_column", "text_pair_column"):
        col = getattr(cfg, key)
        if col is not None and col not in df.columns:
            raise _columns_error(p, col, key, cols)
    if cfg.label_column in {cfg.text_column, cfg.text_pair_column}:
        raise DataError(f"data.label_column {cfg.label_column!r} is also a text column: the label would be in the "
                        "input. Fix: name the label column and the text column(s) apart.")  # fmt: skip
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]
    bad = df[wanted].isna().any(axis=1)
    if bad.any():
        rows = [int(i) + 1 for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise DataError(f"{p}: {int(bad.sum())} rows have an empty {' / '.join(wanted)} (rows {rows}...). Fix: fill "
                        "or remove them.")  # fmt: skip
    if len(df) == 0:
        raise DataError(f"{p} has no rows (columns: {', '.join(cols)}). Fix: give a file with labelled texts.")
    texts = [str(t) for t in df[cfg.text_column]]
    pairs = [str(t) for t in df[cfg.text_pair_column]] if cfg.text_pair_column else None
    labels = [_label_str(v) for v in df[cfg.label_column]]
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{p}: {len(empty)} rows have blank text (rows {empty[:5]}...). Fix: remove them.")
    return texts, pairs, labels


def _pairless(tl: tuple[list[str], list[str]]) -> tuple[list[str], None, list[str]]:
    return tl[0], None, tl[1]


def _label_str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _order_labels(names: set[str]) -> list[str]:
    """Label names in a stable order: numerically when every label is an integer, else alphabetically."""
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def example_id(text: str, pair: str | None) -> str:
    return hashlib.sha1((text + ("\x00" + pair if pair is not None else "")).encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------ split
def load_labelled_texts(cfg: TextDataConfig) -> LabelledTexts:
    """Read, deduplicate, sample and split ``data`` (see the module docstring)."""
    texts, pairs, labels = read_labelled(cfg)
    by_id: dict[str, tuple[str, str | None, str]] = {}
    conflicted: set[str] = set()
    for i, (t, lab) in enumerate(zip(texts, labels, strict=True)):
        pair = pairs[i] if pairs is not None else None
        key = example_id(t, pair)
        if key in by_id and by_id[key][2] != lab:
            conflicted.add(key)
        by_id.setdefault(key, (t, pair, lab))
    for key in conflicted:
        del by_id[key]
    if conflicted:
        log.warning("data: %d texts appear with two different labels; they are left out (no model can be right on both)",
                    len(conflicted))  # fmt: skip
    keys = sorted(by_id)  # stable: by id, not by file order
    names = _order_labels({by_id[k][2] for k in keys})
    variants = label_variants(names)
    if variants:
        counts_by_name = dict(Counter(by_id[k][2] for k in keys))
        raise DataError(variants_message(variants, cfg.source, counts_by_name))
    if len(names) < 2:
        raise DataError(f"{cfg.source} has one class ({names[0] if names else 'none'}): nothing to classify. Fix: give "
                        "texts of at least two labels.")  # fmt: skip
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[by_id[k][2]] for k in keys], dtype=np.int64)
    small = small_classes(by_id[k][2] for k in keys)
    if small:
        raise DataError(small_classes_message(small, cfg.source))
    # each example's place in its class is a hash of the seed and its id: the split does not depend on the file's
    # order, and adding or removing a few texts moves only those
    rank = np.array([int(hashlib.sha1(f"{cfg.seed}:{k}".encode()).hexdigest()[:12], 16) for k in keys])
    chosen = _stratified_sample(y, rank, cfg.max_examples) if cfg.max_examples else np.arange(len(y))
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in range(len(names)):
        members = chosen[y[chosen] == c]
        members = members[np.argsort(rank[members], kind="stable")]
        n_test = max(1, round(len(members) * cfg.test_fraction))
        n_val = max(1, round(len(members) * cfg.val_fraction))
        parts["test"] += members[:n_test].tolist()
        parts["val"] += members[n_test : n_test + n_val].tolist()
        parts["train"] += members[n_test + n_val :].tolist()

    def split(idx: list[int]) -> Split:
        idx = sorted(idx)
        ks = [keys[i] for i in idx]
        return Split(texts=[by_id[k][0] for k in ks], pairs=[by_id[k][1] for k in ks] if pairs is not None else None,
                     labels=y[idx], ids=ks)  # fmt: skip

    out = LabelledTexts(names, split(parts["train"]), split(parts["val"]), split(parts["test"]), cfg.source,
                        dropped_conflicts=len(conflicted))  # fmt: skip
    if cfg.transfer is not None:  # its texts are read by transfer.with_transfer, which may take these
        taken = set(chosen.tolist())
        out.unsampled = split([i for i in range(len(keys)) if i not in taken])
    out.stats = {"classes": len(names), "train": len(out.train), "val": len(out.val), "test": len(out.test),
                 "transfer": 0, "dropped_conflicting_labels": len(conflicted), "pairs": pairs is not None}  # fmt: skip
    log.info("data: %s, %d classes, %d train / %d validation / %d test texts", cfg.source,
             len(names), len(out.train), len(out.val), len(out.test))  # fmt: skip
    return out


def _stratified_sample(y: np.ndarray, rank: np.ndarray, n: int) -> np.ndarray:
    """About ``n`` indices with the class proportions of ``y``, at least 3 of each class (all of a smaller one):
    the first of each class in ``rank`` order."""
    if n >= len(y):
        return np.arange(len(y))
    counts = np.bincount(y)
    keep = np.maximum(np.minimum(counts, 3), np.round(counts * n / len(y)).astype(int))
    out = []
    for c, k in enumerate(keep):
        members = np.flatnonzero(y == c)
        out.append(members[np.argsort(rank[members], kind="stable")[:k]])
    return np.sort(np.concatenate(out))
