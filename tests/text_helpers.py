"""Small labelled text sets for the text-classification tests: sentences whose topic words give the class,
with filler words around them, over the vocabulary of the tiny BERT of ``embed_helpers``."""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {
    "animals": "cat cats dog dogs bird fish".split(),
    "weather": "rain snow sun moon star cold hot".split(),
    "computing": "python code data model file test keyboard phone".split(),
}
FILLER = "the a an of to and in is was it that for on with as by at from this big small old new good bad".split()


def labelled_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (text, label) rows, classes balanced; a text is 4-9 filler words and 2 topic words."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    names = sorted(TOPICS)
    while len(rows) < n:
        label = names[len(rows) % len(names)]
        words = rng.choices(FILLER, k=rng.randint(4, 9)) + rng.choices(TOPICS[label], k=2)
        rng.shuffle(words)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], *, text: str = "text", label: str = "label") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([text, label])
        w.writerows(rows)
    return path
