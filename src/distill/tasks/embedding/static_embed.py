"""Static sentence-embedding students: a token table, per-token weights and a projection into the
teacher's space. No network at inference: tokenize, a weighted mean of table rows, one small matmul.

Built by :func:`distill.tasks.embedding.static_build.build_static` from a teacher (model2vec-style: each token
through the teacher, PCA, SIF weights; see that module). Optional parts: an anchor row and pair rows.

Inference: ``m = Σ w[t] E[t] / Σ w[t]`` over the text's tokens (no special tokens; with the anchor ``a``,
``w[a] E[a]`` joins the sum and ``w[a]`` the weights), ``y = proj(m)``,
L2-normalised. With pair rows, the rows of the text's neighbouring token pairs that have one join the
numerator of ``m`` (as if each were a token whose weight is in its row), not its denominator. A text
with no token of positive weight (empty, only unknown or special tokens) gives the zero vector, never NaN.

Fine-tuning (:func:`distill.tasks.embedding.static_training.finetune_static`): loss ``1 − cos(student(text), teacher(text))`` against cached
teacher sentence embeddings; the table (sparse gradients, ``SparseAdam``), the weights (kept >= 1e-6,
special tokens stay 0) and the projection (``Adam``) all train.

The saved folder is the "light format" documented in :mod:`distill.tasks.embedding.static_model` (config.json,
embeddings.npy fp32 or fp16, weights.npy, projection.npy, bias.npy, tokenizer.json and a copy of that
loader as static_model.py), so it runs with only numpy and `tokenizers`. :func:`load_static` reads it
back into a trainable :class:`StaticEmbedder`; both give the same embeddings.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from distill.tasks.embedding import static_model as light
from distill.errors import ModelError
from distill.core.fsutil import write_bytes, write_json, write_text

MIN_WEIGHT = 1e-6


def _bag_offsets(counts: Tensor) -> Tensor:
    """EmbeddingBag offsets (N + 1,) for bags of ``counts`` (N,) consecutive rows."""
    off = torch.zeros(counts.numel() + 1, dtype=torch.long)
    off[1:] = torch.cumsum(counts, 0)
    return off


class StaticEmbedder(nn.Module):
    """Token table (V, d) + weights (V,) + projection d → D (+ bias), a ``tokenizers.Tokenizer``.

    ``forward(ids, offsets)`` takes flat token ids and offsets (N + 1,) as :meth:`tokenize` returns
    them and gives (N, D) embeddings (L2-normalised when ``normalize``; zero rows for texts without
    a token of positive weight)."""

    def __init__(
        self, tokenizer: Any, table: Tensor, weights: Tensor, projection: Tensor, bias: Tensor, *,
        normalize: bool = True, meta: dict[str, Any] | None = None, anchor: bool = False,
        pair_keys: Tensor | None = None, pair_table: Tensor | None = None, pair_bounds: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        v, d = table.shape
        if weights.shape != (v,) or projection.shape[1:] != (d,) or bias.shape != projection.shape[:1]:
            raise ModelError(
                f"static model parts do not fit: table {tuple(table.shape)}, weights {tuple(weights.shape)}, "
                f"projection {tuple(projection.shape)}, bias {tuple(bias.shape)} (expected (V, d), (V,), (D, d), (D,))."
            )
        n_tok = tokenizer.get_vocab_size(with_added_tokens=True)
        if n_tok + bool(anchor) > v:
            raise ModelError(
                f"the tokenizer has {n_tok} tokens but the table only {v} rows"
                + (" (one of them the anchor)" if anchor else "") + "; they do not belong together."
            )
        if (pair_keys is None) != (pair_table is None):
            raise ModelError("pair_keys and pair_table come together (both or neither).")
        if pair_keys is not None:
            try:
                light.check_pair_arrays(torch.as_tensor(pair_keys).numpy(), tuple(pair_table.shape), v, d)
            except ValueError as exc:
                raise ModelError(str(exc)) from None
        try:
            self.pair_bounds = light.check_pair_bounds(pair_bounds, v, pair_keys is not None)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.register_buffer("pair_keys", None if pair_keys is None else torch.as_tensor(pair_keys).clone(), persistent=False)
        self.pairs = None
        if pair_table is not None:
            self.pairs = nn.EmbeddingBag(len(pair_table), d, mode="sum", sparse=True, include_last_offset=True)
            with torch.no_grad():
                self.pairs.weight.copy_(pair_table.float())
        self.embedding = nn.EmbeddingBag(v, d, mode="sum", sparse=True, include_last_offset=True)
        self.proj = nn.Linear(d, projection.shape[0])
        with torch.no_grad():
            self.embedding.weight.copy_(table.float())
            self.proj.weight.copy_(projection.float())
            self.proj.bias.copy_(bias.float())
        self.weights = nn.Parameter(weights.detach().float().clone())
        self.normalize = bool(normalize)
        self.meta = dict(meta or {})
        self.anchor = bool(anchor)

    @property
    def vocab_size(self) -> int:
        return int(self.embedding.weight.shape[0])

    @property
    def dim(self) -> int:
        """Width of the token table (d)."""
        return int(self.embedding.weight.shape[1])

    @property
    def num_pairs(self) -> int:
        """Number of token-pair rows (0: none)."""
        return 0 if self.pairs is None else int(self.pairs.weight.shape[0])

    @property
    def output_dim(self) -> int:
        """Dimension of the sentence embeddings (D, the teacher's)."""
        return int(self.proj.out_features)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Flat token ids and offsets (N + 1,), int64 tensors."""
        ids, offsets = light.tokenize_flat(self.tokenizer, light.check_texts(texts))
        return torch.from_numpy(ids), torch.from_numpy(offsets)

    def pool(self, ids: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """The weighted mean of each text's token rows (N, d), and whether it had a token of positive weight (N,).
        With an anchor, the table's last row joins every such text's mean with its own weight; with pair rows,
        the rows of the text's neighbouring token pairs that have one join the sum (not the sum of weights)."""
        n = offsets.numel() - 1
        w = self.weights[ids]
        sums = self.embedding(ids, offsets, per_sample_weights=w)
        owner = torch.repeat_interleave(torch.arange(n), torch.diff(offsets))
        wsum = torch.zeros(n, dtype=w.dtype).index_add(0, owner, w)
        has = wsum > 0
        if self.anchor:
            last = torch.tensor([self.vocab_size - 1])
            sums = sums + self.weights[last] * nn.functional.embedding(last, self.embedding.weight, sparse=True)
            wsum = wsum + self.weights[last]
        if self.pairs is not None:  # pair rows join the sum as they are, not the sum of weights
            keys, flat_ids, flat_off = self.pair_keys.numpy(), ids.numpy(), offsets.numpy()
            rows = torch.from_numpy(light.pair_positions(flat_ids, flat_off, keys, self.vocab_size))
            hit = rows >= 0
            sums = sums + self.pairs(rows[hit], _bag_offsets(torch.bincount(owner[hit], minlength=n)))
            if self.pair_bounds is not None:  # each text's (b, first) and (last, e) rows: (N, 2), so in text order
                b = torch.from_numpy(light.boundary_positions(flat_ids, flat_off, keys, self.vocab_size, self.pair_bounds))
                sums = sums + self.pairs(b[b >= 0], _bag_offsets((b >= 0).sum(1)))
        return sums / torch.where(has, wsum, torch.ones_like(wsum)).unsqueeze(1), has

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        pooled, has = self.pool(ids, offsets)
        out = self.proj(pooled)
        if self.normalize:
            out = nn.functional.normalize(out, dim=-1)
        return torch.where(has.unsqueeze(1), out, torch.zeros_like(out))

    @torch.inference_mode()
    def encode(self, texts: list[str], *, batch_size: int = 1024, progress: bool = False) -> np.ndarray:
        """Embeddings float32 (N, D) in input order; same numbers as ``StaticModel.encode``."""
        texts = light.check_texts(texts)
        out = np.empty((len(texts), self.output_dim), dtype=np.float32)
        starts = range(0, len(texts), max(1, int(batch_size)))
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encode", unit="batch", leave=False)
        for s in starts:
            ids, offsets = self.tokenize(texts[s : s + batch_size])
            out[s : s + batch_size] = self(ids, offsets).numpy()
        return out


def _backend(tokenizer: Any) -> Any:
    """A private copy of the `tokenizers.Tokenizer` behind ``tokenizer`` (HF fast or plain), with no
    padding and no truncation."""
    from tokenizers import Tokenizer

    inner = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(inner, Tokenizer):
        raise ModelError(
            f"a static model needs a fast (Rust `tokenizers`) tokenizer, got {type(tokenizer).__name__}. "
            "Fix: use a teacher saved with tokenizer.json."
        )
    tok = Tokenizer.from_str(inner.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok



def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def save_static(
    model: StaticEmbedder, tokenizer: Any | None, directory: str | os.PathLike, *,
    dtype: Literal["float32", "float16"] = "float32",
) -> Path:  # fmt: skip
    """Write ``model`` in the light format (see :mod:`distill.tasks.embedding.static_model`) into ``directory``.

    ``tokenizer``: a ``tokenizers.Tokenizer`` or HF fast tokenizer, or None for ``model.tokenizer``.
    ``dtype``: storage of the token table and the pair rows (float16 halves the folder; everything else stays fp32).
    Every file is written atomically; ``config.json`` is removed first and written last, so a folder
    with a config.json is complete."""
    if dtype not in ("float32", "float16"):
        raise ModelError(f"dtype must be 'float32' or 'float16' (got {dtype!r}).")
    tok = _backend(model.tokenizer if tokenizer is None else tokenizer)
    if tok.get_vocab_size(with_added_tokens=True) + model.anchor > model.vocab_size:
        raise ModelError(
            f"the tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens but the model's table "
            f"{model.vocab_size} rows. Fix: save the model with the tokenizer it was built with (tokenizer=None)."
        )
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ModelError(f"{root} exists and is not a folder. Fix: choose another output path.")
    (root / "config.json").unlink(missing_ok=True)
    table = model.embedding.weight.detach().numpy()
    write_bytes(root / "embeddings.npy", _npy(table.astype(np.float16 if dtype == "float16" else np.float32)))
    write_bytes(root / "weights.npy", _npy(model.weights.detach().numpy().astype(np.float32)))
    write_bytes(root / "projection.npy", _npy(model.proj.weight.detach().numpy().T.astype(np.float32)))
    write_bytes(root / "bias.npy", _npy(model.proj.bias.detach().numpy().astype(np.float32)))
    if model.pairs is not None:
        write_bytes(root / "pair_keys.npy", _npy(model.pair_keys.numpy().astype(np.int64)))
        rows = model.pairs.weight.detach().numpy()
        write_bytes(root / "pair_embeddings.npy", _npy(rows.astype(np.float16 if dtype == "float16" else np.float32)))
    else:  # a folder saved before with pair rows: the config already says there are none, but leave no stale files
        for name in light.PAIR_FILES:
            (root / name).unlink(missing_ok=True)
    write_text(root / "tokenizer.json", tok.to_str())
    write_bytes(root / "static_model.py", Path(light.__file__).read_bytes())
    config = {
        "format": light.FORMAT,
        "version": light.folder_version(model.anchor, model.num_pairs, model.pair_bounds is not None),
        "vocab_size": model.vocab_size,
        "dim": model.dim,
        "output_dim": model.output_dim,
        "normalize": model.normalize,
        "embedding_dtype": dtype,
        "anchor": model.anchor,
        "pairs": model.num_pairs,
        "pair_bounds": None if model.pair_bounds is None else list(model.pair_bounds),
        "weighting": model.meta.get("weighting"),
        "added_words": model.meta.get("added_words", 0),
        "teacher": model.meta.get("teacher"),
        "usage": "import sys; sys.path.insert(0, FOLDER); from static_model import StaticModel; "
        "StaticModel.from_dir(FOLDER).encode(texts)",
    }
    write_json(root / "config.json", config)
    return root


def load_static(directory: str | os.PathLike) -> StaticEmbedder:
    """Read a light-format folder into a trainable :class:`StaticEmbedder` (fp16 tables become fp32)."""
    try:
        m = light.StaticModel.from_dir(directory)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the static model in {directory}: {exc}") from None
    meta = {k: m.config.get(k) for k in ("weighting", "added_words", "teacher")}
    return StaticEmbedder(
        m.tokenizer, torch.from_numpy(m.embeddings.astype(np.float32)), torch.from_numpy(m.weights.copy()),
        torch.from_numpy(m.projection.T.copy()), torch.from_numpy(m.bias.copy()), normalize=m.normalize, meta=meta,
        anchor=m.anchor,
        pair_keys=None if m.pair_keys is None else torch.from_numpy(m.pair_keys.astype(np.int64)),
        pair_table=None if m.pair_embeddings is None else torch.from_numpy(m.pair_embeddings.astype(np.float32)),
        pair_bounds=m.pair_bounds,
    )  # fmt: skip

