"""Text corpora for sentence-embedding distillation: files, Hugging Face datasets on disk, and two
built-in corpora of real English text.

* A text file (one sentence a line), JSONL (one object a line, a text field), CSV/TSV or Parquet (a text
  column), or a folder written by ``datasets.Dataset.save_to_disk`` (a text column).
* ``builtin:python-docs``: sentences of the docstrings of Python's standard library and of its language
  reference (``pydoc_data``), read from the Python installation that runs distill, so it exists on every
  fresh machine with no download (about 11k sentences; technical English).
* ``builtin:fortunes``: sentences of Debian's ``fortunes`` package (``apt-get install fortunes``; about 2.5 M
  characters of quotations, jokes and literature; everyday English).
* ``builtin:wordnet``: the definitions and usage examples of WordNet 3.0, from Debian's ``wordnet-base``
  package (``apt-get install wordnet-base``; about 180k short English texts: "the rider spurred his horse",
  "a system design that duplicates components to provide alternatives in case one component fails").

Every corpus is stripped, emptied lines dropped and deduplicated (first occurrence kept, order kept).
:func:`split_corpus` makes the seeded held-out split that training never sees.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from distill.errors import DataError

FORTUNES_DIR = "/usr/share/games/fortunes"
WORDNET_DIR = "/usr/share/wordnet"
BUILTIN = ("python-docs", "fortunes", "wordnet")
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def dedupe(texts: Iterable[str]) -> list[str]:
    """Strip, drop empty strings, keep the first occurrence of each text (order kept)."""
    seen: set[str] = set()
    out: list[str] = []
    for t in texts:
        t = " ".join(str(t).split())
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _sentences(paragraph: str, *, min_chars: int = 20, max_chars: int = 200) -> list[str]:
    text = " ".join(paragraph.split())
    return [s for s in _SENT_SPLIT.split(text) if min_chars <= len(s) <= max_chars and re.match(r"^[\"'(]?[A-Z]", s)]


def python_docs_sentences() -> list[str]:
    """Sentences of the standard library's docstrings and of the language reference (pydoc_data)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    code_like = re.compile(r">>>|[{}=\[\]_|\\]|\(\)|\w\.\w+\(")
    for f in sorted(root.rglob("*.py")):
        if {"test", "tests", "site-packages", "dist-packages", "idlelib"} & set(f.parts):
            continue
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    for para in re.split(r"\n\s*\n", doc):
                        out += [s for s in _sentences(para, min_chars=25) if s[-1] in ".!?" and not code_like.search(s)]
    try:
        from pydoc_data.topics import topics

        for text in topics.values():
            for para in re.split(r"\n\s*\n", text):
                out += [s for s in _sentences(para, min_chars=25) if s[-1] in ".!?" and not code_like.search(s)]
    except ImportError:
        pass
    return dedupe(out)


def fortune_entries(folder: str | Path = FORTUNES_DIR,
                    otherwise: str = "use builtin:python-docs (always available) or your own corpus file") -> Iterator[tuple[Path, str]]:  # fmt: skip
    """``(file, entry)`` of every entry of the Debian ``fortunes`` files (entries separated by ``%`` lines);
    a missing package is a :class:`DataError` whose fix ends with ``otherwise``."""
    root = Path(folder)
    files = sorted(p for p in root.glob("*") if p.is_file() and p.suffix not in {".dat", ".u8"}) if root.is_dir() else []
    if not files:
        raise DataError(f"the fortunes corpus is not installed (no files in {root}). Fix: `sudo apt-get install "
                        f"fortunes`, or {otherwise}.")  # fmt: skip
    for f in files:
        for entry in re.split(r"^%\s*$", f.read_text(encoding="utf-8", errors="replace"), flags=re.M):
            yield f, entry


def is_prose(text: str) -> bool:
    """Mostly letters and spaces (not ASCII art)."""
    return sum(c.isalpha() or c == " " for c in text) >= 0.85 * len(text)


def fortunes_sentences(folder: str | Path = FORTUNES_DIR) -> list[str]:
    """Sentences of the Debian ``fortunes`` files."""
    out = [s for _, entry in fortune_entries(folder) for s in _sentences(entry, min_chars=15, max_chars=250) if is_prose(s)]
    return dedupe(out)


def wordnet_glosses(folder: str | Path = WORDNET_DIR,
                    otherwise: str = "use builtin:python-docs (always available) or your own corpus file") -> Iterator[tuple[list[str], str]]:  # fmt: skip
    """``(synset fields, gloss)`` of every synset line of WordNet's ``data.{noun,verb,adj,adv}`` (the licence
    header skipped); a missing package is a :class:`DataError` whose fix ends with ``otherwise``."""
    root = Path(folder)
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise DataError(f"the WordNet corpus is not installed (no data.noun/verb/adj/adv in {root}). Fix: `sudo "
                        f"apt-get install wordnet-base`, or {otherwise}.")  # fmt: skip
    for f in files:
        for line in f.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:  # the licence header, or a line without a gloss
                continue
            head, gloss = line.split("|", 1)
            yield head.split(), gloss


def wordnet_sentences(folder: str | Path = WORDNET_DIR) -> list[str]:
    """The glosses of WordNet's data files, split into definitions and quoted usage examples (a gloss is
    ``definition; "example"; "example"``), examples first, deduplicated."""
    examples: list[str] = []
    definitions: list[str] = []
    for _, gloss in wordnet_glosses(folder):
        for part in gloss.split(";"):
            part = part.strip()
            if part.startswith('"'):
                examples.append(part.strip('"').strip())
            elif len(part) > 1:
                definitions.append(part)
    return dedupe(examples + definitions)


def read_corpus(source: str | Path, *, column: str = "text") -> list[str]:
    """Read a corpus: ``builtin:NAME``, a .txt/.jsonl/.csv/.tsv/.parquet file or a ``save_to_disk`` folder."""
    src = str(source)
    if src.startswith("builtin:"):
        name = src.split(":", 1)[1]
        if name == "python-docs":
            return python_docs_sentences()
        if name == "fortunes":
            return fortunes_sentences()
        if name == "wordnet":
            return wordnet_sentences()
        raise DataError(f"unknown built-in corpus {name!r}. Fix: use one of {', '.join('builtin:' + b for b in BUILTIN)}.")
    p = Path(src)
    if not p.exists():
        raise DataError(f"corpus not found: {p}. Fix: check the path (or use builtin:python-docs).")
    if p.is_dir():
        texts = _read_hf_dataset(p, column)
    else:
        suffix = p.suffix.lower()
        if suffix in {".txt", ".text", ""}:
            texts = _read_lines(p)
        elif suffix in {".jsonl", ".ndjson"}:
            texts = _read_jsonl(p, column)
        elif suffix in {".csv", ".tsv", ".parquet"}:
            texts = _read_table(p, column)
        else:
            raise DataError(f"unsupported corpus format {suffix!r} for {p}. Fix: use .txt, .jsonl, .csv, .tsv, .parquet or a datasets folder.")
    out = dedupe(texts)
    if not out:
        raise DataError(f"the corpus {p} has no text. Fix: give a file with one sentence a line (or a {column!r} column).")
    return out


def _read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text. Fix: save it as UTF-8.") from None


def _read_jsonl(p: Path, column: str) -> list[str]:
    out = []
    for i, line in enumerate(_read_lines(p), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{p} line {i} is not JSON ({exc}). Fix: one JSON object a line.") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(column), str):
            raise DataError(f"{p} line {i} has no text field {column!r}. Fix: set data.column to the field holding the text.")
        out.append(obj[column])
    return out


def _read_table(p: Path, column: str) -> list[str]:
    import pandas as pd

    try:
        df = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {p}: {exc}. Fix: check it is a valid {p.suffix[1:]} file.") from None
    if column not in df.columns:
        raise DataError(f"{p} has no column {column!r} (columns: {', '.join(map(str, df.columns))}). Fix: set data.column.")
    return [str(t) for t in df[column].dropna()]


def _read_hf_dataset(p: Path, column: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{p} is a folder; reading Hugging Face datasets needs `pip install datasets`.") from None
    try:
        ds = datasets.load_from_disk(str(p))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{p} is not a dataset saved with save_to_disk ({exc}). Fix: give a file, or save the dataset with save_to_disk.") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{p} holds splits {list(ds)} but no 'train'. Fix: save the split you want with save_to_disk.")
        ds = ds["train"]
    if column not in ds.column_names:
        raise DataError(f"{p} has no column {column!r} (columns: {', '.join(ds.column_names)}). Fix: set data.column.")
    return [str(t) for t in ds[column] if t is not None]


def split_corpus(texts: Sequence[str], held_out: int | float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split into (train, held_out); ``held_out`` is a count or a fraction of the corpus."""
    n = len(texts)
    k = round(n * held_out) if isinstance(held_out, float) and held_out < 1 else int(held_out)
    if not 1 <= k < n:
        raise DataError(
            f"cannot hold out {held_out} of a corpus of {n} texts. Fix: lower data.held_out or give a larger corpus."
        )
    perm = np.random.default_rng(seed).permutation(n)
    held = sorted(perm[:k].tolist())
    keep = sorted(perm[k:].tolist())
    return [texts[i] for i in keep], [texts[i] for i in held]


def read_sts(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Scored sentence pairs (STS style): CSV/TSV/JSONL with ``sentence1``, ``sentence2``, ``score``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"STS file not found: {p}. Fix: check eval.sts.")
    rows: list[dict] = []
    if p.suffix.lower() in {".jsonl", ".ndjson"}:
        rows = [json.loads(line) for line in _read_lines(p) if line.strip()]
    else:
        import pandas as pd

        rows = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",").to_dict("records")
    need = ("sentence1", "sentence2", "score")
    bad = [i for i, r in enumerate(rows, 1) if any(k not in r for k in need)]
    if not rows or bad:
        raise DataError(f"{p}: every row needs {', '.join(need)} (missing in rows {bad[:5]}). Fix: name the columns so.")
    return [str(r["sentence1"]) for r in rows], [str(r["sentence2"]) for r in rows], np.array([float(r["score"]) for r in rows])
