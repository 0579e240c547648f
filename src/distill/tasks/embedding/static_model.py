"""Load and run a static sentence-embedding model ("light format") with only numpy and `tokenizers`.

This file is copied verbatim into every saved static model folder as ``static_model.py``, so the
folder works without `distill` (or torch) installed::

    import sys; sys.path.insert(0, "path/to/folder")
    from static_model import StaticModel
    model = StaticModel.from_dir("path/to/folder")
    vectors = model.encode(["a sentence", "another one"])     # float32 (2, D), L2-normalised rows
    docs = model.encode(notes)                                  # search them, on this machine:
    top, scores = model.search(["where is my phone?"], docs, k=5)

or from a shell, semantic search over a text file (one document a line)::

    python path/to/folder/static_model.py --corpus notes.txt "where is my phone?"

It imports nothing but the standard library, numpy and `tokenizers`; keep it that way.

The folder (format ``distill-static``, version 1, 2, 3 or 4)
---------------------------------------------------------------
``config.json``
    ``{"format": "distill-static", "version": 1 | 2 | 3 | 4, "vocab_size": V, "dim": d, "output_dim": D,
    "normalize": true, "embedding_dtype": "float32" | "float16", "anchor": false | true, "pairs": P,
    "pair_bounds": [b, e] | null, "weighting": ..., "teacher": {...} | null}``
``embeddings.npy``
    the token table, (V, d), float32 or float16 (fp16 halves the size; rows are upcast to float32
    before any arithmetic, so the only loss is the fp16 rounding of the stored values).
``weights.npy``
    per-token weights, (V,), float32, >= 0. Weight 0 means "ignore this token" (special tokens such
    as ``[UNK]``, ``[CLS]``, ``[PAD]``).
``"anchor": true`` in the config (version 2)
    the table's last row is no token: it joins the weighted mean of every text (that has a token of
    positive weight) with its weight ``w[V-1]``, as the ``[CLS]``/``[SEP]`` vectors join a mean-pooling
    teacher's mean. It lets the embedding depend on how long the text is (a short text leans more on
    the anchor), which a plain mean of token rows cannot. Absent or false: no anchor (version 1).
``"pairs": P > 0`` in the config (version 3): ``pair_keys.npy`` and ``pair_embeddings.npy``
    rows for P pairs of neighbouring tokens (those frequent in the training text): keys (P,) int64,
    sorted and unique, ``key = first_id * V + second_id``; rows (P, d) in the table's dtype. The rows of
    a text's pairs that have one join the weighted sum of its token rows, each as it is (its weight is
    in the row), and add nothing to the sum of weights: the one place where word order (a token's left
    neighbour) counts. Absent or 0: no pair rows (versions 1 and 2).
``"pair_bounds": [b, e]`` in the config (version 4, only with pair rows)
    two token ids (the tokenizer's ``[CLS]`` and ``[SEP]``) that count as each text's left and right
    boundary for the pairs: the keys ``b * V + first`` and ``last * V + e`` of a text's first and last
    token are looked up too, so a word at the start or the end of a text can have a row of its own there.
    They are not tokens of the text (no row, no weight). Absent or null: no boundary pairs (version 3).
``projection.npy`` and ``bias.npy``
    (d, D) float32 and (D,) float32: the map from the table's space into the teacher's space.
``tokenizer.json``
    a `tokenizers` file; it is used without special tokens, padding or truncation.

Inference for one text: tokenize (no special tokens); ``m = sum_i w[t_i] E[t_i] / sum_i w[t_i]``
(with an anchor ``a = V - 1``: ``m = (sum_i w[t_i] E[t_i] + w[a] E[a]) / (sum_i w[t_i] + w[a])``);
with pair rows, ``sum_j R[k_j]`` over the text's neighbouring pairs ``k_j = t_j * V + t_{j+1}`` that
are in ``pair_keys`` (with ``pair_bounds``, also the boundary keys ``b * V + t_1`` and ``t_n * V + e``)
joins the numerator of ``m`` (not the denominator); ``y = m @ P + b``; ``y / ||y||`` when ``normalize`` is true. A text with no token of positive weight
(the empty string, only unknown words, only special tokens) gives the zero vector: "no information",
never NaN. Its cosine to anything is 0 by convention.

All arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

FORMAT = "distill-static"
VERSION = 4  # 2 added the anchor, 3 the pair rows, 4 boundary pairs; a folder is written with the lowest version that reads it
FILES = ("config.json", "embeddings.npy", "weights.npy", "projection.npy", "bias.npy", "tokenizer.json")
PAIR_FILES = ("pair_keys.npy", "pair_embeddings.npy")


def folder_version(anchor: bool, pairs: int, bounds: bool = False) -> int:
    """The lowest format version that describes a folder with (or without) these parts: older loaders
    refuse what they cannot read instead of silently ignoring it."""
    return 4 if pairs and bounds else 3 if pairs else 2 if anchor else 1


def check_pair_bounds(bounds, vocab_size: int, has_pairs: bool) -> tuple[int, int] | None:
    """``bounds`` as a tuple of two token ids in ``0 .. V - 1``, or None; ValueError otherwise (or
    when there are no pair rows to look them up in)."""
    if bounds is None:
        return None
    b = tuple(bounds) if isinstance(bounds, (list, tuple)) else ()
    if len(b) != 2 or not all(isinstance(x, (int, np.integer)) and 0 <= x < vocab_size for x in b) or not has_pairs:
        raise ValueError(
            f"pair_bounds must be two token ids in 0..{vocab_size - 1}, with pair rows (got {bounds!r}"
            f"{', and no pair rows' if not has_pairs else ''})."
        )
    return int(b[0]), int(b[1])


def boundary_keys(ids: np.ndarray, offsets: np.ndarray, vocab_size: int,
                  bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The non-empty texts (their indices) and their boundary pairs' keys ``b * V + first`` and
    ``last * V + e``, (len, 2) int64."""
    full = np.flatnonzero(np.diff(offsets) > 0)
    first, last = ids[offsets[full]], ids[offsets[full + 1] - 1]
    return full, np.stack([bounds[0] * vocab_size + first, last * vocab_size + bounds[1]], 1)


def boundary_positions(ids: np.ndarray, offsets: np.ndarray, keys: np.ndarray, vocab_size: int,
                       bounds: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """For each text, the rows (in ``keys``, sorted) of its boundary pairs ``(b, first)`` and ``(last, e)``,
    or -1 (an empty text, or the pair has no row). (N, 2) int64."""
    rows = np.full((len(offsets) - 1, 2), -1, dtype=np.int64)
    full, pair = boundary_keys(ids, offsets, vocab_size, bounds)
    if len(full) and len(keys):
        pos = np.minimum(np.searchsorted(keys, pair), len(keys) - 1)
        rows[full] = np.where(keys[pos] == pair, pos, -1)
    return rows


def check_pair_arrays(keys: np.ndarray, rows_shape: tuple[int, ...], vocab_size: int, dim: int) -> None:
    """ValueError unless ``keys`` are sorted, unique int64 keys in ``0 .. V*V - 1`` and the rows are (P, d)."""
    keys = np.asarray(keys)
    if keys.ndim != 1 or keys.dtype != np.int64 or tuple(rows_shape) != (len(keys), dim) or (
        len(keys) and (keys[0] < 0 or keys[-1] >= vocab_size * vocab_size or (np.diff(keys) <= 0).any())
    ):
        raise ValueError(
            f"pair arrays do not fit: keys {keys.shape} {keys.dtype}, rows {tuple(rows_shape)} (expected sorted unique "
            f"int64 keys first_id * {vocab_size} + second_id in 0..{vocab_size * vocab_size - 1} and rows (P, {dim}))."
        )


def pair_positions(ids: np.ndarray, offsets: np.ndarray, keys: np.ndarray, vocab_size: int) -> np.ndarray:
    """For each flat token position, the row (in ``keys``, sorted) of the pair it starts with its right
    neighbour in the same text, or -1 (no neighbour, or the pair has no row). (len(ids),) int64."""
    rows = np.full(len(ids), -1, dtype=np.int64)
    if len(ids) < 2 or len(keys) == 0:
        return rows
    pair = ids[:-1] * vocab_size + ids[1:]
    pos = np.minimum(np.searchsorted(keys, pair), len(keys) - 1)
    hit = keys[pos] == pair
    ends = offsets[1:-1]
    hit[ends[(ends > 0) & (ends < len(ids))] - 1] = False  # a text's last token and the next text's first
    rows[:-1][hit] = pos[hit]
    return rows


def tokenize_flat(tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` in one flat int64 array and offsets (N + 1,): text ``i`` is
    ``ids[offsets[i]:offsets[i + 1]]``. No special tokens; the batch is tokenised in parallel (Rust)."""
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    encodings = encode(list(texts), add_special_tokens=False)
    n = len(encodings)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(offsets[-1]))
    return ids, offsets


def check_texts(texts) -> list[str]:
    """``texts`` as a list of str (a bare str is one text); a clear TypeError otherwise."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str. Fix: pass a list of strings.")
    return texts


class StaticModel:
    """A static sentence embedder: token table + per-token weights + a projection, numpy only."""

    def __init__(self, tokenizer, embeddings: np.ndarray, weights: np.ndarray, projection: np.ndarray,
                 bias: np.ndarray, *, normalize: bool = True, config: dict | None = None,
                 anchor: bool = False, pair_keys: np.ndarray | None = None,
                 pair_embeddings: np.ndarray | None = None, pair_bounds: tuple[int, int] | None = None) -> None:  # fmt: skip
        (v, d), p_shape = embeddings.shape, projection.shape
        if weights.shape != (v,) or len(p_shape) != 2 or p_shape[0] != d or bias.shape != p_shape[1:]:
            raise ValueError(
                f"static model arrays do not fit together: embeddings {embeddings.shape}, weights {weights.shape}, "
                f"projection {projection.shape}, bias {bias.shape} (expected (V, d), (V,), (d, D), (D,)). "
                "Fix: the folder is corrupt or was edited; save it again."
            )
        n_tok = tokenizer.get_vocab_size(with_added_tokens=True)
        if n_tok + bool(anchor) > v:
            raise ValueError(
                f"the tokenizer has {n_tok} tokens but the table only {v} rows"
                + (" (the last one the anchor)" if anchor else "") + ". "
                "Fix: the tokenizer.json does not belong to this table; save the folder again."
            )
        try:
            if (pair_keys is None) != (pair_embeddings is None):
                raise ValueError("pair keys and pair rows come together.")
            if pair_keys is not None:
                check_pair_arrays(pair_keys, pair_embeddings.shape, v, d)
            self.pair_bounds = check_pair_bounds(pair_bounds, v, pair_keys is not None)
        except ValueError as exc:
            raise ValueError(f"{exc} Fix: the folder is corrupt; save it again.") from None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.embeddings = embeddings
        self.pair_keys = None if pair_keys is None else np.ascontiguousarray(pair_keys)
        self.pair_embeddings = pair_embeddings
        self._pairs = None if pair_embeddings is None else np.asarray(pair_embeddings, dtype=np.float32)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.normalize = bool(normalize)
        self.config = dict(config or {})
        self.anchor = bool(anchor)
        # rows pre-multiplied by their weights, fp32 (V x d x 4 bytes in memory even for an fp16 file)
        self._weighted = self.embeddings.astype(np.float32) * self.weights[:, None]

    @property
    def dim(self) -> int:
        """Width of the token table (d)."""
        return int(self.embeddings.shape[1])

    @property
    def output_dim(self) -> int:
        """Dimension of the sentence embeddings (D, the teacher's)."""
        return int(self.projection.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def num_pairs(self) -> int:
        """Number of token-pair rows (0: none)."""
        return 0 if self.pair_keys is None else len(self.pair_keys)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> StaticModel:
        """Load a folder in the light format (see the module docstring)."""
        from tokenizers import Tokenizer

        path = os.fspath(path)
        missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a complete static model folder: missing {', '.join(missing)}. "
                "Fix: point at a folder written by distill's save_static."
            )
        with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
        if config.get("format") != FORMAT or not isinstance(config.get("version"), int):
            raise ValueError(f"{path}/config.json is not a {FORMAT!r} config (format={config.get('format')!r}).")
        if config["version"] > VERSION:
            raise ValueError(
                f"{path} has format version {config['version']}, this loader reads up to {VERSION}. "
                "Fix: use the static_model.py saved inside that folder, or a newer distill."
            )

        def load(name: str) -> np.ndarray:
            return np.load(os.path.join(path, name), allow_pickle=False)

        embeddings = load("embeddings.npy")
        if embeddings.dtype not in (np.float32, np.float16):
            raise ValueError(f"{path}/embeddings.npy has dtype {embeddings.dtype}; expected float32 or float16.")
        pairs = {}
        if config.get("pairs"):
            missing = [f for f in PAIR_FILES if not os.path.isfile(os.path.join(path, f))]
            if missing:
                raise FileNotFoundError(
                    f"{path}/config.json names {config['pairs']} pair rows but {', '.join(missing)} is missing. "
                    "Fix: copy the whole folder, or save it again."
                )
            pairs = {"pair_keys": load("pair_keys.npy"), "pair_embeddings": load("pair_embeddings.npy")}
            if pairs["pair_embeddings"].dtype not in (np.float32, np.float16) or len(pairs["pair_keys"]) != config["pairs"]:
                raise ValueError(
                    f"{path}: pair files do not match the config (pairs {config['pairs']}, keys "
                    f"{pairs['pair_keys'].shape}, rows {pairs['pair_embeddings'].dtype}). Fix: save the folder again."
                )
        tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        return cls(
            tokenizer, embeddings, load("weights.npy"), load("projection.npy"), load("bias.npy"),
            normalize=bool(config.get("normalize", True)), config=config, anchor=bool(config.get("anchor", False)),
            pair_bounds=config.get("pair_bounds"), **pairs,
        )  # fmt: skip

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat token ids and offsets (N + 1,) of ``texts`` (see :func:`tokenize_flat`)."""
        return tokenize_flat(self.tokenizer, check_texts(texts))

    def embed_ids(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Sentence embeddings (N, D) float32 from flat ids and offsets (N + 1,).

        Vectorised over texts, one step per token position: texts sorted by length, position ``p``
        adds the (pre-weighted) rows of the p-th token of every text longer than ``p``. This is ~7x
        faster than ``np.add.reduceat`` over rows, and no Python loop runs per token."""
        n = len(offsets) - 1
        prow = None if self._pairs is None else pair_positions(ids, offsets, self.pair_keys, self.vocab_size)
        bounds = self.pair_bounds
        brow = None if bounds is None else boundary_positions(ids, offsets, self.pair_keys, self.vocab_size, bounds)
        if n == 1:  # one text (latency path): a plain sum
            sums = self._weighted[ids].sum(axis=0, keepdims=True, dtype=np.float32)
            if prow is not None:
                found = prow[prow >= 0] if brow is None else np.concatenate([prow[prow >= 0], brow[brow >= 0]])
                sums += self._pairs[found].sum(axis=0, dtype=np.float32)
            return self._finish(sums, self.weights[ids].sum(keepdims=True, dtype=np.float32))
        lengths = np.diff(offsets)
        order = np.argsort(-lengths, kind="stable")
        sorted_len, starts = lengths[order], offsets[:-1][order]
        longest = int(sorted_len[0]) if n else 0
        active = np.searchsorted(-sorted_len, -np.arange(longest), side="left")  # texts longer than p
        sums = np.zeros((n, self.dim), dtype=np.float32)
        wsum = np.zeros(n, dtype=np.float32)
        for p in range(longest):
            k = int(active[p])
            at = starts[:k] + p
            tok = ids[at]
            sums[:k] += self._weighted[tok]
            wsum[:k] += self.weights[tok]
            if prow is not None:  # the pair this token starts with its right neighbour
                r = prow[at]
                hit = np.flatnonzero(r >= 0)
                sums[hit] += self._pairs[r[hit]]
        if brow is not None:  # each text's boundary pairs (at most one of each kind a text)
            brow = brow[order]
            for c in range(2):
                hit = np.flatnonzero(brow[:, c] >= 0)
                sums[hit] += self._pairs[brow[hit, c]]
        result = np.empty((n, self.output_dim), dtype=np.float32)
        result[order] = self._finish(sums, wsum)
        return result

    def _finish(self, sums: np.ndarray, wsum: np.ndarray) -> np.ndarray:
        """Weighted sums (n, d) (pair rows included) and weight sums (n,) to embeddings (n, D)."""
        has = wsum > 0
        if self.anchor:  # the last row joins every mean with its weight
            sums = sums + self._weighted[-1]
            wsum = wsum + self.weights[-1]
        out = (sums / np.where(has, wsum, 1.0)[:, None]) @ self.projection
        out += self.bias
        if self.normalize:
            norm = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norm > 0, norm, 1.0)
        out[~has] = 0.0
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """Embeddings of ``texts`` as float32 (N, D), in input order (L2-normalised if the config says
        so; the zero vector for a text without known tokens). A bare str counts as one text."""
        texts = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        out = np.empty((len(texts), self.output_dim), dtype=np.float32)
        for s in range(0, len(texts), batch_size):
            out[s : s + batch_size] = self.embed_ids(*tokenize_flat(self.tokenizer, texts[s : s + batch_size]))
        return out

    def search(self, queries: Sequence[str], documents: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of ``documents`` (N, D embeddings from :meth:`encode`) to each query, by cosine:
        indices (Q, k') and scores (Q, k'), best first, ``k' = min(k, N)``."""
        if k < 1:
            raise ValueError(f"k must be >= 1 (got {k})")
        q = self.encode(queries)
        docs = np.asarray(documents, dtype=np.float32)
        if docs.ndim != 2 or docs.shape[1] != self.output_dim:
            raise ValueError(f"documents must be (N, {self.output_dim}) embeddings from encode(), got {docs.shape}")
        norms = np.linalg.norm(docs, axis=1)
        scores = (q @ docs.T) / np.where(norms > 0, norms, 1.0)  # the queries are unit rows (or zero)
        k = min(k, len(docs))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(scores, top, axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    """On-device semantic search with this folder's model: ``python static_model.py --corpus FILE QUERY...``."""
    import argparse

    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(
        prog="static_model.py",
        description="Semantic search over a text file (one document a line) with a static embedding model, "
        "numpy and tokenizers only: nothing leaves this machine.",
    )
    ap.add_argument("queries", nargs="+", help="what to look for")
    ap.add_argument("--corpus", required=True, help="a UTF-8 text file, one document a line (blank lines skipped)")
    ap.add_argument("--model", default=here, help="the model folder (default: the folder this file is in)")
    ap.add_argument("-k", type=int, default=5, help="results per query (default 5)")
    args = ap.parse_args(argv)
    try:
        with open(args.corpus, encoding="utf-8") as fh:
            docs = [line.strip() for line in fh if line.strip()]
        if not docs:
            raise ValueError(f"{args.corpus} has no non-blank line. Fix: one document a line.")
        if args.k < 1:
            raise ValueError(f"-k must be >= 1 (got {args.k}).")
        model = StaticModel.from_dir(args.model)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    top, scores = model.search(args.queries, model.encode(docs), k=args.k)
    for query, idx, sc in zip(args.queries, top, scores):
        print(query)
        for i, s in zip(idx, sc):
            print(f"  {s:.3f}  {docs[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
