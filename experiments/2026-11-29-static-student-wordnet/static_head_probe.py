"""What does the static student lack? A probe on WordNet (the corpus on which the transformer student
meets its targets, and the static table stopped at Spearman 0.75 before its anchor row, 0.82 with it).
Not a test.

The static student of ``recipes/embeddings_wordnet.yaml`` (each token through all-MiniLM-L6-v2, PCA to
256, SIF weights from the training text) is fine-tuned (1 - cos against the teacher's embeddings) as
it is, with an MLP on the pooled vector added to its linear projection (256 -> H -> 384, GELU;
the table, weights, projection and head trained together), and with hashed pairs of neighbouring
tokens (bigrams), each bucket a vector in the table's space, their mean added to the pooled vector. Measured on a validation split: 2,000 of
the recipe's training texts held out of this probe's training (seeded); the recipe's own held-out text
is never touched. Sentences/s: torch forward at batch 64 on one thread, tokenisation included.
``--anchor 0 1`` compares the table without and with its anchor row (build_static's default), and each
variant prints how much of its error in pair similarities is per text, and how that follows length.

``--pair-min-count N`` gives a row to each neighbouring pair seen N times instead of hashing (what the
library's ``pair_min_count`` does), ``--pair-init teacher`` starts those rows where the student is exact on
the pair as a two-token text, ``--decay`` lets the learning rates fall linearly to 0 (the library's
default since 2026-11-29), ``--extra-train FILE`` adds texts to training only. ``--boundary-pairs`` pairs
each text's first token with [CLS] and its last with [SEP] (the library's since 2026-11-29); ``--pair-drop P``,
``--pair-dim K`` and ``--augment drop|swap N`` try pair dropout, narrower pair rows and teacher-labelled
one-word variants of training texts.

    .venv/bin/python experiments/2026-11-29-static-student-wordnet/static_head_probe.py [--hidden 0 1024 ...] [--bigrams 0 100000 ...] [--dim 256]
        [--anchor 0 1] [--pair-min-count 2 --pair-lr 3e-4 [--pair-init teacher]] [--decay] [--extra-train FILE]
        [--memorise] [--epochs 3]

Uses the teacher-embedding cache of ``benchmarks/embeddings.py --corpus wordnet`` (else computes the
teacher's embeddings of 179k texts, ~6 minutes on 2 threads). Prints one line per variant and epoch.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the maintained suites this probe reuses
sys.path.insert(0, str(BENCHMARKS))

import embeddings as bench  # noqa: E402 - the benchmark's own recipe

from distill.tasks.embedding.cache import cached_embeddings, teacher_fingerprint  # noqa: E402
from distill.tasks.embedding.pipeline import default_teacher_path, load_texts  # noqa: E402
from distill.tasks.embedding.static_training import _gather  # noqa: E402
from distill.models.sentence import load_sentence_encoder  # noqa: E402
from distill.tasks.embedding.static_build import _special_template, build_static, frequent_pairs  # noqa: E402
from distill.tasks.embedding.static_embed import MIN_WEIGHT, StaticEmbedder  # noqa: E402
from distill.core.recipes import validate_recipe  # noqa: E402
from distill.tasks.embedding.metrics import quality  # noqa: E402


def bounded(ids: Tensor, offsets: Tensor, begin: int, end: int) -> tuple[Tensor, Tensor]:
    """Each text's ids between ``begin`` and ``end`` (its [CLS] and [SEP]): so that the first and the
    last token each make a pair with the text's boundary, a row of its own where it is seen often enough."""
    n = offsets.numel() - 1
    off2 = offsets + 2 * torch.arange(n + 1)
    out = torch.empty(ids.numel() + 2 * n, dtype=ids.dtype)
    mask = torch.ones(out.numel(), dtype=torch.bool)
    mask[off2[:-1]] = False
    mask[off2[1:] - 1] = False
    out[mask] = ids
    out[off2[:-1]] = begin
    out[off2[1:] - 1] = end
    return out, off2


class HeadStatic(nn.Module):
    """A static student whose pooled vector also goes through an MLP added to the linear projection."""

    def __init__(self, base: StaticEmbedder, hidden: int, bigrams: int = 0, pair_vocab: np.ndarray | None = None,
                 pair_dim: int = 0) -> None:
        super().__init__()
        self.base = base
        self.pair_norm = "weights"
        self.skip = False
        self.bounds: tuple[int, int] | None = None  # [CLS]/[SEP] ids: pairs with the text's boundaries too
        self.pair_drop = 0.0  # in training, each found pair's row left out with this probability
        self.factor_a = self.factor_b = None  # factorised pair rows: A[left] * B[right] for every neighbouring pair
        d, out = base.dim, base.output_dim
        # pairs of neighbouring tokens, each with its own vector (zero at start): hashed into `bigrams`
        # buckets, or (pair_vocab: sorted keys id1 * V + id2) only the pairs of that vocabulary, one row each
        self.pair_vocab = None if pair_vocab is None else torch.from_numpy(pair_vocab)
        if self.pair_vocab is not None:
            bigrams = len(pair_vocab)
        self.buckets = bigrams
        pd = pair_dim or d  # pair rows of their own width, mapped into the table's space by a learned matrix
        self.pairs = nn.EmbeddingBag(bigrams, pd, mode="sum", sparse=True, include_last_offset=True) if bigrams else None
        self.pair_up = nn.Linear(pd, d, bias=False) if bigrams and pair_dim else None
        if self.pairs is not None:
            nn.init.zeros_(self.pairs.weight)
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, out)) if hidden else None
        if self.head is not None:
            nn.init.zeros_(self.head[2].weight)  # starts as the linear student
            nn.init.zeros_(self.head[2].bias)

    def pair_ids(self, ids: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """Row ids of each text's neighbouring token pairs (hashed, or those in the pair vocabulary), flat,
        with offsets (N + 1,)."""
        n = offsets.numel() - 1
        lengths = torch.diff(offsets)
        owner = torch.repeat_interleave(torch.arange(n), lengths)
        same = owner[1:] == owner[:-1]
        if self.pair_vocab is not None:
            v = self.base.vocab_size
            keys = ids[:-1] * v + ids[1:]
            pair_owner = owner[:-1]
            if self.skip and len(ids) > 2:  # tokens two apart: keys from V * V on
                keys = torch.cat([keys, v * v + ids[:-2] * v + ids[2:]])
                same = torch.cat([same, owner[2:] == owner[:-2]])
                pair_owner = torch.cat([pair_owner, owner[:-2]])
            h = torch.searchsorted(self.pair_vocab, keys).clamp(max=len(self.pair_vocab) - 1)
            same = same & (self.pair_vocab[h] == keys)
            h, pair_owner = h[same], pair_owner[same]
            order = torch.argsort(pair_owner, stable=True)
            h, pair_owner = h[order], pair_owner[order]
            counts = torch.bincount(pair_owner, minlength=n)
            off = torch.zeros(n + 1, dtype=torch.long)
            off[1:] = torch.cumsum(counts, 0)
            return h, off
        else:
            h = (ids[:-1] * 1_000_003 + ids[1:]) % self.buckets
        pair_owner = owner[:-1][same]
        counts = torch.bincount(pair_owner, minlength=n)
        off = torch.zeros(n + 1, dtype=torch.long)
        off[1:] = torch.cumsum(counts, 0)
        return h[same], off

    def add_factor_pairs(self, seed: int = 0) -> None:
        v, d = self.base.vocab_size, self.base.dim
        self.factor_a = nn.Embedding(v, d, sparse=True)
        self.factor_b = nn.Embedding(v, d, sparse=True)
        with torch.no_grad():
            self.factor_a.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
            self.factor_b.weight.zero_()

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        pooled, _ = self.base.pool(ids, offsets)
        if self.factor_a is not None:
            n = offsets.numel() - 1
            owner = torch.repeat_interleave(torch.arange(n), torch.diff(offsets))
            same = owner[1:] == owner[:-1]
            prod = self.factor_a(ids[:-1][same]) * self.factor_b(ids[1:][same])
            fsum = torch.zeros(n, prod.shape[1]).index_add(0, owner[:-1][same], prod)
            wsum = torch.zeros(n).index_add(0, owner, self.base.weights[ids])
            if self.base.anchor:
                wsum = wsum + self.base.weights[-1]
            pooled = pooled + fsum / wsum.clamp(min=1e-6).unsqueeze(1)
        if self.pairs is not None:
            p_ids, p_off = self.pair_ids(*(bounded(ids, offsets, *self.bounds) if self.bounds else (ids, offsets)))
            keep = None
            if self.training and self.pair_drop:
                keep = (torch.rand(p_ids.shape) >= self.pair_drop).float()
            psum = self.pairs(p_ids, p_off, per_sample_weights=keep)
            if self.pair_up is not None:
                psum = self.pair_up(psum)
            if self.pair_norm == "found":  # the mean of the found pairs' rows (the library's first version)
                pooled = pooled + psum / torch.diff(p_off).clamp(min=1).unsqueeze(1)
            elif self.pair_norm == "all":  # their sum over all of the text's neighbouring pairs
                pooled = pooled + psum / (torch.diff(offsets) - 1).clamp(min=1).unsqueeze(1)
            else:  # "weights" (the library's): over the text's token weights, as if each pair were a token
                w = self.base.weights[ids]
                n = offsets.numel() - 1
                owner = torch.repeat_interleave(torch.arange(n), torch.diff(offsets))
                wsum = torch.zeros(n).index_add(0, owner, w)
                if self.base.anchor:
                    wsum = wsum + self.base.weights[-1]
                pooled = pooled + psum / wsum.clamp(min=1e-6).unsqueeze(1)
        out = self.base.proj(pooled)
        if self.head is not None:
            out = out + self.head(pooled)
        return nn.functional.normalize(out, dim=-1)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        parts = []
        was = self.training
        self.eval()
        for s in range(0, len(texts), batch_size):
            ids, off = self.base.tokenize(texts[s : s + batch_size])
            parts.append(self(ids, off).numpy())
        self.train(was)
        return np.concatenate(parts)


def teacher_pair_rows(teacher, base: StaticEmbedder, pair_vocab: np.ndarray) -> Tensor:
    """For each pair (a, b): PCA(teacher([CLS] a b [SEP])) - the student's pooled vector of the text "a b"."""
    from distill.tasks.embedding.static_build import _special_template

    v = base.vocab_size
    a, b = pair_vocab // v, pair_vocab % v
    pre, post = _special_template(base.tokenizer)
    rows = torch.empty(len(pair_vocab), base.dim)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(pair_vocab), 1024):
            n = len(pair_vocab[s : s + 1024])
            ids = torch.cat([torch.tensor([pre] * n).reshape(n, -1), torch.from_numpy(a[s : s + n, None]),
                             torch.from_numpy(b[s : s + n, None]), torch.tensor([post] * n).reshape(n, -1)], 1)
            e = teacher(ids, torch.ones_like(ids)).float()
            x = (e - base.proj.bias) @ base.proj.weight  # PCA forward: (x - mean) @ comps.T
            flat = torch.stack([torch.from_numpy(a[s : s + n]), torch.from_numpy(b[s : s + n])], 1).reshape(-1)
            pooled, _ = base.pool(flat, torch.arange(0, 2 * n + 1, 2))
            rows[s : s + n] = x - pooled
    print(f"teacher pair rows: {len(pair_vocab):,} in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def per_text_error(student: np.ndarray, teacher: np.ndarray, n_tokens: np.ndarray) -> str:
    """How much of the error in pair similarities (student cosine - teacher cosine, over all pairs of the
    validation texts) is per text: text i's mean error against every other text, r_i, makes pair (i, j)
    err by about r_i + r_j. Also how r_i follows the text's length. A plain weighted mean of token rows
    cannot depend on length; a mean-pooling teacher's embedding does (its [CLS]/[SEP] weigh more in a short text)."""
    s = student / np.maximum(np.linalg.norm(student, axis=1, keepdims=True), 1e-12)
    t = teacher / np.maximum(np.linalg.norm(teacher, axis=1, keepdims=True), 1e-12)
    err = s @ s.T - t @ t.T
    n = len(err)
    np.fill_diagonal(err, 0.0)
    r = err.sum(1) / (n - 1)
    off = ~np.eye(n, dtype=bool)
    rest = err - r[:, None] - r[None, :]
    share = 1.0 - rest[off].var() / err[off].var()
    rho = float(np.corrcoef(r, np.log(np.maximum(n_tokens, 1)))[0, 1])
    return (f"pair-similarity error std {err[off].std():.4f}, {share:.0%} of its variance per text; "
            f"correlation of a text's error with its log length {rho:+.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[0, 1024], help="MLP widths to try (0: no head)")
    ap.add_argument("--bigrams", type=int, nargs="+", default=[0], help="hash buckets of token pairs to try (0: none)")
    ap.add_argument("--pair-min-count", type=int, default=0,
                    help="instead of hashing: one row for each pair of neighbouring tokens seen this often in the "
                    "training texts (0: hashed buckets, as --bigrams says)")
    ap.add_argument("--pair-init", choices=["zero", "teacher"], default="zero",
                    help="pair rows start at zero, or (teacher) at what makes the student exact on the pair as a "
                    "two-token text: the teacher's embedding of it through the PCA, minus the pair's weighted mean")
    ap.add_argument("--pair-norm", choices=["found", "all", "weights"], default="weights",
                    help="the pair rows' sum over: the pairs found (the library's mean), all neighbouring pairs of the "
                    "text, or the text's token weights (as if each pair were a token)")
    ap.add_argument("--skip-pairs", action="store_true",
                    help="also rows for pairs of tokens two apart (seen --pair-min-count times)")
    ap.add_argument("--pair-dim", type=int, default=0,
                    help="pair rows this wide, mapped into the table's space by a learned matrix (0: the table's width)")
    ap.add_argument("--boundary-pairs", action="store_true",
                    help="pairs also of each text's first token with [CLS] and its last with [SEP]")
    ap.add_argument("--pair-drop", type=float, default=0.0,
                    help="in training, leave each found pair row out with this probability (as unseen pairs are at test)")
    ap.add_argument("--factor-pairs", action="store_true",
                    help="rows for every neighbouring pair, factorised: A[left] * B[right] (two more token tables; "
                    "unseen pairs get one too), joining the weighted sum like pair rows")
    ap.add_argument("--pair-lr", type=float, default=None, help="SparseAdam's learning rate for the pair rows (default --lr)")
    ap.add_argument("--anchor", type=int, nargs="+", choices=[0, 1], default=[1],
                    help="with (1, the default of build_static) or without (0) the anchor row in every text's mean")
    ap.add_argument("--memorise", action="store_true",
                    help="train on the validation texts too: how well the model class can fit them at all (an upper bound)")
    ap.add_argument("--extra-train", default=None,
                    help="a text file (one text a line) added to the training texts (never to validation): does more text help?")
    ap.add_argument("--init", choices=["token", "context"], default="token",
                    help="token rows from the teacher on each token alone, or its mean vector in the training texts "
                    "(a teacher pass over them with hidden states, cached: ~7 minutes the first time)")
    ap.add_argument("--augment", nargs=2, metavar=("KIND", "N"), default=None,
                    help="add N variants of training texts, labelled by the teacher: drop (one word left out) or swap")
    ap.add_argument("--extend-vocab", type=int, default=0, help="build_static's extend_vocab: frequent split words as whole tokens")
    ap.add_argument("--dim", type=int, default=256, help="width of the token table (PCA of the teacher's; the recipe's: 256)")
    ap.add_argument("--batch", type=int, default=256, help="texts per step (the recipe's: 256)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--soup", type=int, default=1,
                    help="train this many copies from the same start, each with its own batch order, and average their "
                    "parameters (a model soup: still one static table)")
    ap.add_argument("--decay", action="store_true", help="learning rates fall linearly to 0 over the epochs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads to train (timing: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = validate_recipe(bench.recipe(False, "wordnet"))
    texts = load_texts(recipe).train
    path = default_teacher_path()
    teacher = load_sentence_encoder(path)
    targets = cached_embeddings(lambda x: teacher.encode(x, batch_size=64), texts, Path(recipe.output.cache_dir),
                                teacher_fingerprint(path, teacher), "the training text")  # fmt: skip
    perm = np.random.default_rng(0).permutation(len(texts))
    val_idx, fit_idx = np.sort(perm[:2000]), np.sort(perm[0 if args.memorise else 2000 :])
    fit_texts, val_texts = [texts[i] for i in fit_idx], [texts[i] for i in val_idx]
    y = nn.functional.normalize(torch.as_tensor(targets[fit_idx]).float(), dim=-1)
    if args.extra_train:
        val_set = set(val_texts)
        more = [t for t in dict.fromkeys(Path(args.extra_train).read_text(encoding="utf-8").splitlines())
                if t.strip() and t not in val_set]  # fmt: skip
        more_y = cached_embeddings(lambda x: teacher.encode(x, batch_size=64), more, Path(recipe.output.cache_dir),
                                   teacher_fingerprint(path, teacher), "the extra training text")  # fmt: skip
        fit_texts = fit_texts + more
        y = torch.cat([y, nn.functional.normalize(torch.as_tensor(more_y).float(), dim=-1)])
        print(f"extra training text: {len(more):,} texts from {args.extra_train}", flush=True)
    n_orig = len(fit_texts)  # weights and the pair vocabulary come from these (not from augmented copies)
    if args.augment:
        kind, n_aug = args.augment[0], int(args.augment[1])
        rng = np.random.default_rng(1)
        val_set = set(val_texts)
        more = []
        for i in rng.permutation(len(fit_texts)):
            words = fit_texts[i].split()
            if len(words) < 4:
                continue
            j = int(rng.integers(len(words)))
            if kind == "drop":  # one word left out
                t = " ".join(words[:j] + words[j + 1 :])
            else:  # "swap": two neighbouring words exchanged
                j = min(j, len(words) - 2)
                t = " ".join(words[:j] + [words[j + 1], words[j]] + words[j + 2 :])
            if t not in val_set:
                more.append(t)
            if len(more) >= n_aug:
                break
        more = list(dict.fromkeys(more))
        more_y = cached_embeddings(lambda x: teacher.encode(x, batch_size=64), more, Path(recipe.output.cache_dir),
                                   teacher_fingerprint(path, teacher), f"{kind}-augmented training text")  # fmt: skip
        fit_texts = fit_texts + more
        y = torch.cat([y, nn.functional.normalize(torch.as_tensor(more_y).float(), dim=-1)])
        print(f"augmented training text ({kind}): {len(more):,} texts", flush=True)
    y_val = targets[val_idx]
    context = None
    if args.init == "context":
        from distill.tasks.embedding.cache import cached_context

        _, sums, counts = cached_context(teacher, fit_texts, Path(recipe.output.cache_dir), teacher_fingerprint(path, teacher),
                                         batch_size=64, progress=False)  # fmt: skip
        context = (sums, counts)
    bases = {a: build_static(teacher, dim=args.dim, weighting="sif", corpus=fit_texts[:n_orig], progress=False, anchor=bool(a),
                             context=context, extend_vocab=args.extend_vocab) for a in args.anchor}  # fmt: skip
    ids, offsets = bases[args.anchor[0]].tokenize(fit_texts)
    ids, offsets = ids.numpy(), offsets.numpy()
    keep = np.flatnonzero(np.diff(offsets) > 0)
    pair_vocab = None
    if args.pair_min_count:
        v = bases[args.anchor[0]].vocab_size
        o_ids, o_off = (x.numpy() for x in bases[args.anchor[0]].tokenize(fit_texts[:n_orig]))
        if args.boundary_pairs:
            pre, post = _special_template(bases[args.anchor[0]].tokenizer)
            bounds = (pre[-1], post[0])
            o_ids, o_off = (x.numpy() for x in bounded(torch.from_numpy(o_ids), torch.from_numpy(o_off), *bounds))
        pair_vocab = frequent_pairs(o_ids, o_off, v, args.pair_min_count)  # the library's pair vocabulary
        n_distinct = len(frequent_pairs(ids, offsets, v, 1))
        if args.skip_pairs:
            owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            k2 = (v * v + ids[:-2] * v + ids[2:])[owner[2:] == owner[:-2]]
            u2, c2 = np.unique(k2, return_counts=True)
            print(f"skip pairs: {int((c2 >= args.pair_min_count).sum()):,} of {len(u2):,}", flush=True)
            pair_vocab = np.concatenate([pair_vocab, u2[c2 >= args.pair_min_count]])
        print(f"pair vocabulary: {len(pair_vocab):,} of {n_distinct:,} distinct neighbouring pairs "
              f"(seen >= {args.pair_min_count} times)", flush=True)  # fmt: skip
    print(f"{len(fit_texts):,} texts to train, {len(val_texts):,} to validate"
          + (" (trained on too: memorisation)" if args.memorise else ""), flush=True)
    buckets_list = [0] if pair_vocab is not None else args.bigrams
    soup: list[dict[str, Tensor]] = []
    for hidden, buckets, anchor, member in [(h, b, a, m) for a in args.anchor for b in buckets_list for h in args.hidden
                                            for m in range(args.soup)]:  # fmt: skip
        torch.manual_seed(0)
        model = HeadStatic(copy.deepcopy(bases[anchor]), hidden, buckets, pair_vocab, args.pair_dim)
        model.pair_norm = args.pair_norm
        if args.factor_pairs:
            model.add_factor_pairs()
        model.skip = args.skip_pairs
        model.pair_drop = args.pair_drop
        if args.boundary_pairs:
            model.bounds = bounds
        if pair_vocab is not None and args.pair_init == "teacher":
            with torch.no_grad():
                model.pairs.weight.copy_(teacher_pair_rows(teacher, model.base, pair_vocab))
        pairs = f"{len(pair_vocab):,} frequent pairs" if pair_vocab is not None else (buckets or "none")
        name = f"head {hidden or 'none'}, bigrams {pairs}, anchor {'yes' if anchor else 'no'}"
        sparse = torch.optim.SparseAdam([model.base.embedding.weight], lr=args.lr)
        pair_opt = (torch.optim.SparseAdam([model.pairs.weight], lr=args.pair_lr or args.lr)
                    if model.pairs is not None else None)  # fmt: skip
        tables = ["base.embedding.weight", "pairs.weight", "factor_a.weight", "factor_b.weight"]
        factor_opt = (torch.optim.SparseAdam([model.factor_a.weight, model.factor_b.weight], lr=args.pair_lr or args.lr)
                      if model.factor_a is not None else None)  # fmt: skip
        dense = torch.optim.Adam([p for n, p in model.named_parameters() if n not in tables], lr=args.lr)
        ignored = model.base.weights.detach() == 0
        gen = torch.Generator().manual_seed(member)  # soup members differ in the order of their batches only
        opts = [o for o in (sparse, dense, pair_opt, factor_opt) if o is not None]
        base_lrs = [[g["lr"] for g in o.param_groups] for o in opts]
        total_steps, step = args.epochs * -(-len(keep) // args.batch), 0
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            order = keep[torch.randperm(len(keep), generator=gen).numpy()]
            for s in range(0, len(order), args.batch):
                idx = order[s : s + args.batch]
                if args.decay:
                    for o, lrs in zip(opts, base_lrs):
                        for g, lr0 in zip(o.param_groups, lrs):
                            g["lr"] = lr0 * (1 - step / total_steps)
                step += 1
                b_ids, b_off = _gather(ids, offsets, idx)
                out = model(torch.from_numpy(b_ids), torch.from_numpy(b_off))
                loss = (1.0 - nn.functional.cosine_similarity(out, y[idx], dim=-1)).mean()
                sparse.zero_grad(set_to_none=True)
                dense.zero_grad()
                if pair_opt is not None:
                    pair_opt.zero_grad(set_to_none=True)
                if factor_opt is not None:
                    factor_opt.zero_grad(set_to_none=True)
                loss.backward()
                sparse.step()
                dense.step()
                if pair_opt is not None and model.pairs.weight.grad is not None:
                    pair_opt.step()
                if factor_opt is not None and model.factor_a.weight.grad is not None:
                    factor_opt.step()
                with torch.no_grad():
                    model.base.weights.clamp_(min=MIN_WEIGHT).masked_fill_(ignored, 0.0)
            q = quality(model.encode(val_texts), y_val, n_pairs=5000, n_queries=1000, k=10, seed=0)
            print(f"{name}: epoch {epoch + 1}, cosine {q['cosine']:.3f}, Spearman {q['spearman']:.3f}, "
                  f"top-10 {q['top10']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        if args.soup > 1:
            soup.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            if len(soup) < args.soup:
                continue
            model.load_state_dict({k: torch.stack([m[k].float() for m in soup]).mean(0).to(soup[0][k].dtype) for k in soup[0]})
            soup = []
            q = quality(model.encode(val_texts), y_val, n_pairs=5000, n_queries=1000, k=10, seed=0)
            print(f"{name}: soup of {args.soup} (parameters averaged), cosine {q['cosine']:.3f}, Spearman "
                  f"{q['spearman']:.3f}, top-10 {q['top10']:.3f}", flush=True)  # fmt: skip
        print(f"{name}: {per_text_error(model.encode(val_texts), y_val, np.diff(model.base.tokenize(val_texts)[1].numpy()))}",
              flush=True)  # fmt: skip
        torch.set_num_threads(1)
        sample = val_texts[:1000]
        model.encode(sample[:128], batch_size=64)
        t1 = time.perf_counter()
        for _ in range(3):
            model.encode(sample, batch_size=64)
        rate = 3 * len(sample) / (time.perf_counter() - t1)
        torch.set_num_threads(args.threads)
        print(f"{name}: {rate:,.0f} sentences/s at batch 64 (torch, one thread)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
