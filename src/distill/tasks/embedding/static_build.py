"""Building a static student (:class:`~distill.tasks.embedding.static_embed.StaticEmbedder`) from a teacher.

Build (:func:`build_static`), model2vec-style:

1. Every vocabulary token goes through the teacher as its own one-token input (``[CLS] tok [SEP]``,
   or whatever special tokens the teacher's tokenizer adds), with the teacher's pooling (and dense
   layers and normalisation): a (V, D) matrix ``X``.
2. PCA to ``dim``: centre with ``mean = X.mean(0)``, ``components`` (dim, D) are the top right
   singular vectors of ``X - mean`` (sign fixed so each component's largest entry is positive, for
   reproducibility). The table is ``(X - mean) @ components.T`` (V, dim). The projection back to the
   teacher's space is initialised as the PCA inverse transform: ``y = m @ components + mean``, i.e.
   ``proj.weight = components.T`` and ``proj.bias = mean``. With ``dim == D`` this is exact, so the
   untrained student reproduces the teacher's one-token embeddings; the student's outputs always
   live in the teacher's space, so cosine to the teacher is defined and fine-tuning can use it.
3. Per-token weights ``w``: ``"sif"``: ``a / (a + p(t))`` with ``p(t)`` the token's frequency in
   the tokenized ``corpus``; tokens never seen in the corpus get the smallest probability of a
   seen token (i.e. the largest weight). Without a corpus ``"sif"`` falls back to ``"zipf"``:
   as model2vec does, assume the vocabulary is ordered roughly by frequency and take
   ``p(rank r) ∝ 1 / (r + 2)`` (r = 0 for the first id), then the same ``a / (a + p)``. For
   BERT's WordPiece vocabulary this is rough (ids 0..~2000 are ``[unusedN]`` and single
   characters), which is why a corpus is better. ``"none"``: all weights 1. Special tokens
   (``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]`` ...) always get weight 0: they are ignored.
4. ``extend_vocab=N`` (needs a corpus, WordPiece tokenizers): the N most frequent whole words of the
   corpus that the tokenizer splits into several pieces become single tokens. They are added to the
   saved tokenizer as non-special added tokens (``single_word=True``, matched on the normalised,
   lower-cased text), so the tokenizer emits them; their rows are the teacher's embedding of the word
   itself, passed through the same PCA.
5. ``anchor=True`` (the default): one more row at the end of the table, the teacher's embedding of the
   empty text (its special tokens alone) through the same PCA, with the largest token weight (the
   rarest token's). It is no token: it joins
   every text's weighted mean, as ``[CLS]`` and ``[SEP]`` join a mean-pooling teacher's mean, so a short
   text leans more on it than a long one. A plain mean of token rows cannot depend on the text's length;
   this teacher's embeddings do. Fine-tuning trains its row and weight like any token's.
6. ``pair_min_count=N`` (needs a corpus): a row, zero at start, for each pair of neighbouring tokens
   (within a text) seen at least N times in the tokenized corpus, keyed ``first_id * V + second_id``
   with V the table's rows. Fine-tuning learns them; a text's pair rows join the weighted sum of its
   token rows (not the sum of weights). The text's boundaries count as neighbours too: where the
   tokenizer wraps a text in ``[CLS] ... [SEP]``, the pairs ``([CLS], first token)`` and ``(last token,
   [SEP])`` get rows like any other pair seen N times (``pair_bounds``), so a word can weigh otherwise
   at the start or the end of a text (WordNet validation Spearman 0.839 -> 0.843 for 11% more rows).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Literal

import numpy as np
import torch

from distill.tasks.embedding import static_model as light
from distill.errors import DataError, ModelError
from distill.models.sentence import inference_batches
from distill.tasks.embedding.static_embed import StaticEmbedder, _backend

WEIGHTINGS = ("sif", "zipf", "none")


def _special_template(tok: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text's tokens (``[CLS]`` / ``[SEP]`` for BERT)."""
    vocab = tok.get_vocab(with_added_tokens=False)
    for word in ("the", "a", "Ġthe", "▁the", *sorted(vocab, key=vocab.get)[-50:]):
        plain = tok.encode(word, add_special_tokens=False).ids
        if len(plain) == 1:
            full = tok.encode(word, add_special_tokens=True).ids
            i = full.index(plain[0])
            return full[:i], full[i + 1 :]
    return [], []


def _special_ids(tok: Any) -> list[int]:
    return sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special)


def _token_matrix(teacher: Any, tok: Any, ids: np.ndarray, batch_size: int, progress: bool) -> np.ndarray:
    """The teacher's embedding of each id as a one-token input with its special tokens: (len(ids), D)."""
    pre, post = _special_template(tok)
    out = np.empty((len(ids), int(teacher.dim)), dtype=np.float32)
    try:
        with inference_batches(teacher, len(ids), batch_size, desc="teacher on vocabulary", progress=progress) as starts:
            for s in starts:
                chunk = torch.as_tensor(ids[s : s + batch_size], dtype=torch.long).unsqueeze(1)
                b = chunk.shape[0]
                input_ids = torch.cat(
                    [torch.tensor([pre] * b, dtype=torch.long).reshape(b, len(pre)), chunk,
                     torch.tensor([post] * b, dtype=torch.long).reshape(b, len(post))], dim=1,
                )  # fmt: skip
                emb = teacher(input_ids, torch.ones_like(input_ids))
                out[s : s + b] = emb.float().numpy()
    except (IndexError, RuntimeError) as exc:
        raise ModelError(
            f"the teacher failed on its own vocabulary tokens: {exc}. Fix: the tokenizer and the teacher's "
            "embedding matrix must match (same vocabulary size)."
        ) from None
    return out


def contextual_token_vectors(
    teacher: Any, texts: list[str], *, batch_size: int = 64, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass of the teacher over ``texts``: its sentence embeddings (N, D) and, for every vocabulary
    id, the sum (V, H) and count (V,) of the teacher's last-layer vectors of that token in context.

    ``sums / counts`` is the token's mean contextual vector: with mean pooling, the teacher's sentence
    embedding is (before normalisation) the mean of these vectors over the sentence's tokens, so a
    static table built from them starts close to the teacher (``build_static(context=(sums, counts))``)."""
    v = _backend(teacher.tokenizer).get_vocab_size(with_added_tokens=True)
    sums = torch.zeros(v, teacher.hidden_size, dtype=torch.float64)
    counts = torch.zeros(v, dtype=torch.float64)
    emb = np.empty((len(texts), int(teacher.dim)), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    desc = "teacher (sentences and token contexts)"
    with inference_batches(teacher, len(texts), batch_size, desc=desc, progress=progress) as starts:
        for s in starts:
            idx = order[s : s + batch_size]
            enc = teacher.tokenize([texts[i] for i in idx])
            out = teacher.features(enc["input_ids"], enc["attention_mask"], hidden_states=True)
            emb[idx] = out["embedding"].float().numpy()
            last = out["hidden_states"][-1]
            m = enc["attention_mask"].bool()
            ids = enc["input_ids"][m]
            sums.index_add_(0, ids, last[m].double())
            counts.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
    return emb, sums.float().numpy(), counts.numpy()


def _with_context(single: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Token rows: the mean contextual vector where the token was seen, else its one-token vector scaled
    to the median norm of the contextual ones."""
    if sums.shape[0] != single.shape[0] or sums.shape[1] != single.shape[1]:
        raise ModelError(
            f"contextual vectors {sums.shape} do not match the vocabulary table {single.shape}. Fix: compute them "
            "with the same teacher (contextual_token_vectors)."
        )
    seen = counts > 0
    out = single.copy()
    if seen.any():
        out[seen] = sums[seen] / counts[seen, None]
        scale = float(np.median(np.linalg.norm(out[seen], axis=1)))
        out[~seen] = single[~seen] * (scale / np.maximum(np.linalg.norm(single[~seen], axis=1, keepdims=True), 1e-12))
    return out


def _pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(components (dim, D), mean (D,)) of the rows of ``x``; each component's largest-|.| entry positive."""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    _, _, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    comps = vt[:dim]
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    return comps, mean


def _frequent_split_words(tok: Any, corpus: list[str], n: int) -> list[str]:
    """The ``n`` most frequent whole words of ``corpus`` (as the tokenizer normalises and pre-splits
    them) that the tokenizer cuts into several pieces without ``[UNK]``."""
    from tokenizers.models import WordPiece

    if not isinstance(tok.model, WordPiece):
        raise ModelError(
            f"extend_vocab works with WordPiece tokenizers (BERT family); this teacher's is {type(tok.model).__name__}. "
            "Fix: set extend_vocab to 0."
        )
    counts: Counter[str] = Counter()
    norm, pre = tok.normalizer, tok.pre_tokenizer
    for text in corpus:
        text = norm.normalize_str(text) if norm is not None else text
        words = pre.pre_tokenize_str(text) if pre is not None else [(w, None) for w in text.split()]
        counts.update(w for w, _ in words if len(w) > 1 and any(c.isalpha() for c in w))
    unk = tok.token_to_id(tok.model.unk_token)
    chosen: list[str] = []
    ranked = [w for w, _ in counts.most_common()]
    for s in range(0, len(ranked), 4096):
        block = ranked[s : s + 4096]
        for word, enc in zip(block, tok.encode_batch(block, add_special_tokens=False)):
            if len(enc.ids) > 1 and unk not in enc.ids:
                chosen.append(word)
                if len(chosen) == n:
                    return chosen
    return chosen


def _weights(tok: Any, v: int, weighting: str, ids: np.ndarray | None, sif_a: float) -> np.ndarray:
    """Per-token weights from the corpus's flat token ids (None: no corpus)."""
    if weighting == "none":
        w = np.ones(v, dtype=np.float64)
    elif weighting == "sif" and ids is not None:
        if ids.size == 0:
            raise DataError("the corpus has no tokens, so SIF weights cannot be estimated. Fix: pass real sentences.")
        counts = np.bincount(ids, minlength=v).astype(np.float64)
        p = counts / counts.sum()
        p[counts == 0] = p[counts > 0].min()
        w = sif_a / (sif_a + p)
    else:  # zipf, or sif without a corpus
        inv_rank = 1.0 / np.arange(2, v + 2, dtype=np.float64)
        w = sif_a / (sif_a + inv_rank / inv_rank.sum())
    w[_special_ids(tok)] = 0.0
    return w.astype(np.float32)


def _teacher_identity(teacher: Any) -> dict[str, Any]:
    name = getattr(getattr(getattr(teacher, "backbone", None), "config", None), "_name_or_path", None)
    info: dict[str, Any] = {"dim": int(teacher.dim)}
    if name:
        info["name_or_path"] = str(name)
    for key in ("pooling", "normalize", "max_seq_length"):
        if hasattr(teacher, key):
            info[key] = getattr(teacher, key)
    return info


def _check_build_args(
    v: int, d_teacher: int, *, dim: Any, weighting: Any, corpus: list[str] | None, extend_vocab: Any,
    sif_a: Any, batch_size: Any, pair_min_count: Any,
) -> None:  # fmt: skip
    """ModelError naming every argument of :func:`build_static` that is out of range."""
    problems = []
    if weighting not in WEIGHTINGS:
        problems.append(f"weighting must be one of {', '.join(map(repr, WEIGHTINGS))} (got {weighting!r})")
    if not isinstance(dim, int) or not 1 <= dim <= min(v, d_teacher):
        problems.append(
            f"dim must be an integer in 1..{min(v, d_teacher)} (PCA of the teacher's {d_teacher}-d vectors of "
            f"{v} tokens cannot give more components; got {dim!r})"
        )
    if not isinstance(extend_vocab, int) or extend_vocab < 0:
        problems.append(f"extend_vocab must be an integer >= 0 (got {extend_vocab!r})")
    elif extend_vocab and corpus is None:
        problems.append("extend_vocab needs a corpus to find frequent words in")
    if not (isinstance(sif_a, (int, float)) and sif_a > 0 and math.isfinite(sif_a)):
        problems.append(f"sif_a must be a positive number (got {sif_a!r}); 1e-3 is the usual value")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be an integer >= 1 (got {batch_size!r})")
    if not isinstance(pair_min_count, int) or pair_min_count < 0:
        problems.append(f"pair_min_count must be an integer >= 0 (got {pair_min_count!r})")
    elif pair_min_count and corpus is None:
        problems.append("pair_min_count needs a corpus to count neighbouring token pairs in")
    if problems:
        raise ModelError("cannot build a static model: " + "; ".join(problems) + ". Fix: change those arguments.")


def _added_word_rows(
    teacher: Any, tok: Any, v: int, corpus: list[str], n: int, batch_size: int
) -> tuple[list[str], list[np.ndarray]]:
    """Step 4: the ``n`` most frequent split words of ``corpus`` added to ``tok`` (ids ``v ..``), and the
    teacher's embeddings of them as rows ([] or one (len, D) array)."""
    from tokenizers import AddedToken

    added = _frequent_split_words(tok, corpus, n)
    if not added:
        return added, []
    tok.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in added])
    new_ids = [tok.token_to_id(w) for w in added]
    if new_ids != list(range(v, v + len(added))):
        raise ModelError(f"the tokenizer gave unexpected ids to the added words: {new_ids[:5]}...")
    with torch.inference_mode():
        return added, [np.asarray(teacher.encode(added, batch_size=batch_size), dtype=np.float32)]


def _start_pairs(
    tok: Any, flat: tuple[np.ndarray, np.ndarray], n_rows: int, min_count: int, dim: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """Step 6: the frequent pairs' keys, their rows (zero) and the boundary ids (or None)."""
    pre, post = _special_template(tok)
    bounds = (pre[-1], post[0]) if pre and post else None
    pair_keys = frequent_pairs(*flat, n_rows, min_count, bounds=bounds)
    return pair_keys, np.zeros((len(pair_keys), dim), dtype=np.float32), bounds


def build_static(
    teacher: Any, *, dim: int = 256, weighting: Literal["sif", "zipf", "none"] = "sif",
    corpus: list[str] | None = None, extend_vocab: int = 0, sif_a: float = 1e-3, batch_size: int = 256,
    progress: bool = True, keep_mean: bool = True, context: tuple[np.ndarray, np.ndarray] | None = None,
    anchor: bool = True, pair_min_count: int = 0,
) -> StaticEmbedder:  # fmt: skip
    """A static student of ``teacher`` (a :class:`~distill.models.sentence.SentenceEncoder`): see the
    module docstring for each step. ``corpus`` (sentences) gives SIF frequencies and the words of
    ``extend_vocab``; it is tokenized once, never stored. ``keep_mean=False`` initialises the
    projection's bias to 0 instead of the PCA mean: the output is then the reconstruction minus the
    vocabulary's mean vector, which separates sentences better before fine-tuning (Spearman agreement
    0.31 against 0.17 on MiniLM, dim 256); after fine-tuning the two starts end up the same."""
    tok = _backend(teacher.tokenizer)
    v, d_teacher = tok.get_vocab_size(with_added_tokens=True), int(teacher.dim)
    _check_build_args(v, d_teacher, dim=dim, weighting=weighting, corpus=corpus, extend_vocab=extend_vocab,
                      sif_a=sif_a, batch_size=batch_size, pair_min_count=pair_min_count)  # fmt: skip
    if corpus is not None:
        corpus = light.check_texts(corpus)
        if not corpus:
            raise DataError("the corpus is empty. Fix: pass sentences, or corpus=None (Zipf weights, no extend_vocab).")

    x = _token_matrix(teacher, tok, np.arange(v), batch_size, progress)
    if context is not None:
        x = _with_context(x, *context)
    comps, mean = _pca(x, dim)
    rows = [x]
    added: list[str] = []
    if extend_vocab:
        added, extra = _added_word_rows(teacher, tok, v, corpus or [], extend_vocab, batch_size)
        rows += extra
    if anchor:
        rows.append(_anchor_row(teacher, tok, fallback=mean))
    table = (np.concatenate(rows) - mean) @ comps.T
    flat = light.tokenize_flat(tok, corpus) if corpus is not None else None
    weights = _weights(tok, table.shape[0] - bool(anchor), weighting, None if flat is None else flat[0], float(sif_a))
    if anchor:  # weighted like the rarest token
        weights = np.append(weights, weights.max() if weights.max() > 0 else np.float32(1.0))
    pair_keys = pair_table = bounds = None
    if pair_min_count:
        pair_keys, pair_table, bounds = _start_pairs(tok, flat, table.shape[0], pair_min_count, dim)
    meta = {
        "teacher": _teacher_identity(teacher),
        "weighting": weighting if (weighting != "sif" or corpus is not None) else "zipf (sif without a corpus)",
        "sif_a": float(sif_a),
        "added_words": len(added),
        "base_vocab_size": v,
    }
    return StaticEmbedder(
        tok, torch.from_numpy(table.astype(np.float32)), torch.from_numpy(weights),
        torch.from_numpy(comps.T.astype(np.float32)),
        torch.from_numpy(mean.astype(np.float32) if keep_mean else np.zeros_like(mean, dtype=np.float32)),
        normalize=True, meta=meta, anchor=anchor,
        pair_keys=None if pair_keys is None else torch.from_numpy(pair_keys),
        pair_table=None if pair_table is None else torch.from_numpy(pair_table), pair_bounds=bounds,
    )  # fmt: skip


def frequent_pairs(
    ids: np.ndarray, offsets: np.ndarray, vocab_size: int, min_count: int, *, bounds: tuple[int, int] | None = None
) -> np.ndarray:
    """Sorted keys ``first * vocab_size + second`` of the pairs of neighbouring tokens (within a text)
    seen at least ``min_count`` times in the flat ``ids``/``offsets``. With ``bounds = (b, e)`` each
    non-empty text also counts its boundary pairs ``(b, first)`` and ``(last, e)``."""
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    keys = (ids[:-1] * vocab_size + ids[1:])[owner[1:] == owner[:-1]] if len(ids) >= 2 else np.zeros(0, np.int64)
    if bounds is not None:
        keys = np.concatenate([keys, light.boundary_keys(ids, offsets, vocab_size, bounds)[1].ravel()])
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq[counts >= min_count].astype(np.int64)


def _anchor_row(teacher: Any, tok: Any, fallback: np.ndarray) -> np.ndarray:
    """The teacher's embedding of the empty text (its special tokens alone), (1, D): the anchor's start.
    A tokenizer without special tokens gives ``fallback`` (the vocabulary's mean: the zero row after PCA)."""
    pre, post = _special_template(tok)
    if not pre + post:
        return np.asarray(fallback, dtype=np.float32).reshape(1, -1)
    return np.asarray(teacher.encode([""]), dtype=np.float32)
