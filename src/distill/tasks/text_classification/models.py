"""The models of text classification: Hugging Face classifiers (teacher, layer students, hf students), the
static token-table student and users' own modules, behind one call ``model(**batch) -> (B, C) logits``;
tokenisation into padded batches; loading teachers. The students' builders are in students.py, saving and
loading a folder in folders.py.

Builders are plain functions (docs/design.md): configuration never enters a model class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import RecipeError, TeacherError

KIND_FILE = "distill_text_classifier.json"  # beside the weights of a static or factory student


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "Some weights were newly initialized": expected for a new head
    hf_logging.disable_progress_bar()


# ------------------------------------------------------------------ models
class HFClassifier(nn.Module):
    """A transformers ``*ForSequenceClassification`` model called as ``(input_ids, attention_mask[, token_type_ids])
    -> logits``; with ``hidden`` or ``attentions`` it returns ``(logits, hidden_states, attentions)`` (hidden states:
    the embeddings, then each layer; attention maps (B, heads, T, T) of each layer; None where not asked)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                hidden: bool = False, attentions: bool = False) -> Any:  # fmt: skip
        kw: dict[str, Any] = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        config = self.net.config
        kernel = config._attn_implementation
        if attentions:
            config._attn_implementation = "eager"  # attention maps need the eager kernel: for this call only
            kw["output_attentions"] = True
        try:
            out = self.net(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden, **kw)
        finally:
            config._attn_implementation = kernel
        if not (hidden or attentions):
            return out.logits
        return out.logits, out.hidden_states if hidden else None, out.attentions if attentions else None


class StaticClassifier(nn.Module):
    """A token table (and, with ``ngram_buckets``, a table of hashed token bigrams), the mean of a text's rows, a
    linear head: ``(B, T) ids -> (B, C)`` logits. The tables have sparse gradients (a step touches only the rows
    of its batch); the bigram hash is computed from the ids inside the model, so an exported file reads the
    tokenizer's ids alone. Trained, the tables are kept as ``tables`` says (:meth:`store_tables`): int8 rows with
    a scale each, float16, or float32. In eval mode the mean is one ``embedding_bag`` call per table (no (B, T, D)
    tensor); training and ONNX export gather the rows, the same sums."""

    HASH = 1_000_003  # bigram (a, b) -> (a * HASH + b) mod buckets

    def __init__(self, table: Tensor, num_labels: int, pad_token_id: int, ngram_buckets: int = 0) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(table.clone(), freeze=False, padding_idx=pad_token_id, sparse=True)
        self.ngram_buckets = int(ngram_buckets)
        self.bigrams = nn.Embedding(ngram_buckets, table.shape[1], sparse=True) if ngram_buckets else None
        if self.bigrams is not None:
            nn.init.zeros_(self.bigrams.weight)
        self.head = nn.Linear(table.shape[1], num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.tables = "float32"
        self.scales: dict[str, Tensor] = {}  # int8 tables: each row's scale, as store_tables rounded it

    def tables_of(self) -> dict[str, nn.Embedding]:
        return {"table": self.table} | ({"bigrams": self.bigrams} if self.bigrams is not None else {})

    @torch.no_grad()
    def store_tables(self, dtype: str) -> None:
        """Round the trained tables to what ``dtype`` keeps (in place, still float32 tensors), so that what is
        measured in the run is what the saved folder and the ONNX file hold: 'int8' (per row: ``q * scale``, q in
        -127..127, scale = the row's largest |value| / 127), 'float16', or 'float32' (unchanged)."""
        if dtype not in TABLE_DTYPES:
            raise ValueError(f"tables must be one of {TABLE_DTYPES}, not {dtype!r}")
        for name, emb in self.tables_of().items():
            w = emb.weight
            if dtype == "float16":
                w.copy_(w.half().float())
            elif dtype == "int8":
                q, self.scales[name] = int8_rows(w)
                w.copy_(q.float() * self.scales[name])
        self.tables = dtype

    def int8_table(self, name: str) -> tuple[Tensor, Tensor]:
        """``(q, scale)`` of an int8 table with ``q * scale`` exactly its weights (the scales store_tables used
        while they still give the weights back; else found again)."""
        w = self.tables_of()[name].weight.detach()
        scale = self.scales.get(name)
        if scale is not None:
            q = torch.round(w / scale).clamp(-127, 127)
            if torch.equal(q * scale, w):
                return q.to(torch.int8), scale
        return int8_rows(w)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        if not self.training and not torch.onnx.is_in_onnx_export():
            return self._bagged(input_ids, attention_mask)
        m = attention_mask.unsqueeze(-1).to(self.table.weight.dtype)
        total, count = (self.table(input_ids) * m).sum(1), m.sum(1)
        if self.bigrams is not None:
            pair = m[:, :-1] * m[:, 1:]
            ids = torch.remainder(input_ids[:, :-1] * self.HASH + input_ids[:, 1:], self.ngram_buckets)
            total = total + (self.bigrams(ids) * pair).sum(1)
            count = count + pair.sum(1)
        return self.head(total / count.clamp(min=1.0))

    def _bagged(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        import torch.nn.functional as F

        w = attention_mask.to(self.table.weight.dtype)
        total = F.embedding_bag(input_ids, self.table.weight, mode="sum", per_sample_weights=w)
        count = w.sum(1)
        if self.bigrams is not None:
            pair = w[:, :-1] * w[:, 1:]
            ids = torch.remainder(input_ids[:, :-1] * self.HASH + input_ids[:, 1:], self.ngram_buckets)
            total = total + F.embedding_bag(ids, self.bigrams.weight, mode="sum", per_sample_weights=pair)
            count = count + pair.sum(1)
        return self.head(total / count.clamp(min=1.0).unsqueeze(1))


TABLE_DTYPES = ("int8", "float16", "float32")


def int8_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row symmetric int8: ``(q (N, D) int8, scale (N, 1) float32)`` with ``w ≈ q * scale`` (zero rows: scale 1)."""
    top = w.abs().amax(1, keepdim=True)
    scale = torch.where(top > 0, top / 127, torch.ones_like(top)).float()
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


class FactoryClassifier(nn.Module):
    """A user's module called as ``net(input_ids, attention_mask)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        return self.net(input_ids, attention_mask)


@dataclass
class TextModel:
    """A classifier and the tokenizer its inputs come from."""

    module: nn.Module  # HFClassifier | StaticClassifier | FactoryClassifier
    tokenizer: Any
    kind: str  # teacher | layers | static | factory | hf

    @property
    def uses_token_types(self) -> bool:
        return isinstance(self.module, HFClassifier) and "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())


# ------------------------------------------------------------- tokenising
@dataclass
class Encoded:
    ids: list[list[int]]
    types: list[list[int]] | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: Sequence[int], token_types: bool) -> dict[str, Tensor]:
        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long) if token_types else None
        for j, (i, r) in enumerate(zip(idx, rows, strict=True)):
            ids[j, : len(r)] = torch.as_tensor(r)
            mask[j, : len(r)] = 1
            if types is not None and self.types is not None:
                types[j, : len(r)] = torch.as_tensor(self.types[i])
        out = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            out["token_type_ids"] = types
        return out

    def lengths(self) -> list[int]:
        return [len(r) for r in self.ids]


def encode(tokenizer: Any, inputs: Sequence[Any], max_length: int) -> Encoded:
    """Token ids of every text (or ``(text, pair)``), truncated to ``max_length``; deterministic."""
    texts = [x[0] if isinstance(x, tuple) else x for x in inputs]
    pairs = [x[1] for x in inputs] if inputs and isinstance(inputs[0], tuple) else None
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for s in range(0, len(texts), 4096):
        enc = tokenizer(texts[s : s + 4096], pairs[s : s + 4096] if pairs is not None else None, truncation=True,
                        max_length=max_length, return_token_type_ids=True)  # fmt: skip
        ids += enc["input_ids"]
        types += enc.get("token_type_ids") or [[0] * len(r) for r in enc["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(ids, types, int(pad))


@torch.no_grad()
def predict_logits(model: TextModel, enc: Encoded, batch_size: int = 64, *, progress: bool = False,
                   desc: str = "logits") -> np.ndarray:  # fmt: skip
    """``(N, C)`` logits of ``model`` on every encoded text, in order (batched by length, eval mode)."""
    order = np.argsort(enc.lengths(), kind="stable")
    out: list[np.ndarray] = []
    was = model.module.training
    model.module.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc=desc, unit="text", leave=False, dynamic_ncols=True)
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size].tolist()
            out.append(model.module(**enc.batch(idx, model.uses_token_types)).float().numpy())
            if bar is not None:
                bar.update(len(idx))
    finally:
        model.module.train(was)
        if bar is not None:
            bar.close()
    logits = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    result = np.empty_like(logits)
    result[order] = logits
    return result


# --------------------------------------------------------------- teachers
def load_tokenizer(path: Path, trust: bool) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_hf_classifier(path: str | Path, *, trust_remote_code: bool = False, what: str = "teacher.path") -> TextModel:
    """A fine-tuned ``AutoModelForSequenceClassification`` folder, offline, in eval mode."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    p = Path(path)
    _check_folder(p, what)
    from distill.models.hf_load import check_loading_info, not_single_label

    try:
        config = AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code)
        wrong = not_single_label(config)
        if wrong:
            raise TeacherError(f"{what} {p}: {wrong}. Fix: use a single-label classifier folder, or teacher.kind: "
                               "finetune to fine-tune one on your labels.")  # fmt: skip
        net, info = AutoModelForSequenceClassification.from_pretrained(
            str(p), config=config, trust_remote_code=trust_remote_code, output_loading_info=True)  # fmt: skip
        tok = load_tokenizer(p, trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise TeacherError(f"{what} {p} does not load as a Hugging Face sequence classifier: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0]}. Fix: point it at a folder saved with save_pretrained (config.json, "
                           "weights, tokenizer), or set trust_remote_code if it needs its own code.") from None  # fmt: skip
    check_loading_info(p, net, info, what="teacher (a base model without its trained classification head?)",
                       fix="give the folder of a fine-tuned classifier, or teacher.kind: finetune to fine-tune this "
                       "encoder in the run.", error=TeacherError)  # fmt: skip
    if getattr(net.config, "pad_token_id", None) is None:
        net.config.pad_token_id = tok.pad_token_id
    net.eval()
    return TextModel(HFClassifier(net), tok, "teacher")


def _check_folder(p: Path, what: str) -> None:
    if not p.is_dir():
        raise TeacherError(f"{what} {p} is not a folder. Fix: give the folder of a Hugging Face model (config.json, "
                           "weights, tokenizer files).")  # fmt: skip
    if not (p / "config.json").is_file():
        raise TeacherError(f"{what} {p} has no config.json, so it is not a Hugging Face model folder. Fix: point it at "
                           "the folder that save_pretrained wrote.")  # fmt: skip


def check_label_names(model: TextModel, names: list[str], where: str) -> list[int]:
    """For each data label (in order), the model's output index; a mismatch names both lists."""
    id2label = getattr(model.module.net.config, "id2label", None) or {}
    theirs = [str(id2label[i]) for i in sorted(id2label)] if id2label else []
    if sorted(theirs) == sorted(names):
        return [theirs.index(n) for n in names]
    default = all(t == f"LABEL_{i}" for i, t in enumerate(theirs))
    hint = (" Its config.json has the default names LABEL_0..: write its id2label (index -> label name) into it."
            if default else "")  # fmt: skip
    raise TeacherError(
        f"the labels of {where} ({len(theirs)}: {', '.join(theirs[:12])}{'...' if len(theirs) > 12 else ''}) are not "
        f"the data's labels ({len(names)}: {', '.join(names[:12])}{'...' if len(names) > 12 else ''}).{hint} Fix: use a "
        "teacher fine-tuned on these classes, or teacher.kind: finetune to fine-tune one in the run."
    )


def with_head(path: str | Path, names: list[str], *, trust_remote_code: bool, what: str, kind: str) -> TextModel:
    """``AutoModelForSequenceClassification`` from a local folder with a head for ``names`` (new when the folder's
    labels differ, or it has none: a pretrained encoder)."""
    quiet_transformers()
    from transformers import AutoModelForSequenceClassification

    p = Path(path)
    _check_folder(p, what)
    try:
        net = AutoModelForSequenceClassification.from_pretrained(
            str(p), num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True, trust_remote_code=trust_remote_code,
        )  # fmt: skip
        tok = load_tokenizer(p, trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        error = TeacherError if kind == "teacher" else RecipeError
        message = (f"{what} {p} does not load as a Hugging Face model with a classification head: "
                   f"{type(exc).__name__}: {str(exc).splitlines()[0]}. Fix: point it at a folder saved with "
                   "save_pretrained (an encoder such as all-MiniLM-L6-v2, or a classifier).")  # fmt: skip
        raise (error(message) if error is TeacherError else error([message])) from None
    if getattr(net.config, "pad_token_id", None) is None:
        net.config.pad_token_id = tok.pad_token_id  # decoder-style models (GPT-2) classify padded batches by it
    net.train()
    return TextModel(HFClassifier(net), tok, kind)


def init_finetune_teacher(path: str | Path, names: list[str], *, trust_remote_code: bool = False) -> TextModel:
    """A pretrained encoder folder with a new classification head for ``names`` (to be fine-tuned)."""
    return with_head(path, names, trust_remote_code=trust_remote_code, what="teacher.path", kind="teacher")


def reorder_head(model: TextModel, order: list[int], names: list[str]) -> None:
    """Permute a loaded classifier's output rows so output i is data label i (when its id2label was in another order)."""
    if order == list(range(len(order))):
        return
    head = _classifier_head(model.module.net)
    with torch.no_grad():
        head.weight.copy_(head.weight[order].clone())
        if head.bias is not None:
            head.bias.copy_(head.bias[order].clone())
    model.module.net.config.id2label = dict(enumerate(names))
    model.module.net.config.label2id = {n: i for i, n in enumerate(names)}


def _classifier_head(net: nn.Module) -> nn.Linear:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == net.config.num_labels]
    if not linears:
        raise TeacherError(f"cannot find the classification head of {type(net).__name__}. Fix: give a teacher whose "
                           "id2label lists the labels in the data's order.")  # fmt: skip
    return linears[-1]
