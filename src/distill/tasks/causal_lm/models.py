"""Causal language-model builders (plain functions returning Hugging Face models).

- :func:`load_causal_lm`: ``AutoModelForCausalLM`` from a local folder (never the hub).
- :func:`build_causal_lm`: a GPT-2 or Llama style model from a few numbers.
- :func:`copy_layers_student`: a shallower student made of chosen teacher blocks, with the teacher's
  embeddings, final norm and head (DistilBERT-style initialisation).
- :func:`check_same_vocab`: token-level distillation needs one vocabulary; say so clearly when not.
- :func:`macs_per_token`: multiply-accumulates per token of a forward pass (head included).
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import ModelError
from distill.models.hf_load import check_loading_info


_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")  # the endings of transformers' next-token architectures


def _causal_architectures(d: Path) -> None:
    """Refuse a folder whose config says it is another kind of model (a classifier, an encoder): transformers
    would load its body under a new, randomly initialised next-token head."""
    import json

    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {d / 'config.json'} ({exc}). Fix: repair the file, or save the model again.") from None
    archs = [str(a) for a in (cfg.get("architectures") or [])] if isinstance(cfg, dict) else []
    if archs and not any(a.endswith(_CAUSAL_HEADS) for a in archs):
        raise ModelError(
            f"the model in {d} is not a causal language model ({', '.join(archs)}): a language-model teacher must "
            "predict the next token (an ...ForCausalLM or ...LMHeadModel head), and loading this one as such would put "
            "an untrained head on it. Fix: point teacher.dir at a causal LM folder (what save_pretrained of a GPT-2 or "
            "Llama model writes), or leave teacher.dir unset to train a teacher here."
        )


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """transformers' load report and progress bars off while loading (we check what they would say), then back."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_causal_lm(directory: str | Path, *, trust_remote_code: bool = False) -> Any:
    """A causal LM from a local folder (save_pretrained format; safetensors preferred). A folder of another kind
    of model, or weights that leave part of the model at its random initialisation, are refused."""
    from transformers import AutoModelForCausalLM

    d = Path(directory)
    if not (d / "config.json").exists():
        raise ModelError(
            f"no model in {d}: config.json is missing. A model folder is what save_pretrained writes (config.json "
            "and model.safetensors). Fix: point teacher.dir at such a folder (downloads are off: local files only)."
        )
    _causal_architectures(d)
    try:
        with _transformers_quiet():
            model, info = AutoModelForCausalLM.from_pretrained(
                str(d), local_files_only=True, trust_remote_code=trust_remote_code, use_safetensors=None,
                output_loading_info=True,
            )  # fmt: skip
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"the model in {d} needs its own code to run (trust_remote_code). Fix: set teacher.trust_remote_code: "
                "true, only if you trust that folder."
            ) from None
        raise ModelError(f"cannot load the model in {d}: {exc}. Fix: check the folder's files.") from None
    except Exception as exc:
        raise ModelError(f"cannot load the model in {d} ({type(exc).__name__}: {exc}). Fix: check the folder's files.") from None
    check_loading_info(d, model, info, fix="point teacher.dir at the complete folder save_pretrained wrote for this "
                       "model (its config.json and all of its weights).")
    model.eval()
    return model


def build_causal_lm(
    *,
    vocab_size: int,
    layers: int,
    width: int,
    heads: int,
    context: int,
    arch: str = "gpt2",
    dropout: float = 0.0,
    eos_token_id: int = 0,
    seed: int | None = None,
) -> Any:
    """A randomly initialised GPT-2 (learned positions, LayerNorm, GELU MLP 4×) or Llama (RoPE, RMSNorm,
    SwiGLU MLP ~2.7×) style model with tied input/output embeddings. ``seed`` makes the init deterministic
    without touching torch's global generator."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if width % heads:
        raise ModelError(f"heads ({heads}) must divide width ({width}). Fix: change heads or width.")
    if arch == "gpt2":
        cfg: Any = GPT2Config(
            vocab_size=vocab_size, n_positions=context, n_embd=width, n_layer=layers, n_head=heads,
            resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
            bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id, tie_word_embeddings=True,
        )  # fmt: skip
        cls: Any = GPT2LMHeadModel
    elif arch == "llama":
        inter = int(8 * width / 3 + 7) // 8 * 8
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=inter, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=context,
            attention_dropout=dropout, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
            pad_token_id=eos_token_id, tie_word_embeddings=True,
        )  # fmt: skip
        cls = LlamaForCausalLM
    else:
        raise ModelError(f"unknown arch {arch!r}. Fix: use 'gpt2' or 'llama'.")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = cls(cfg)
    return model


def _blocks_name(model: nn.Module) -> str:
    """Module path of the ModuleList of transformer blocks (``transformer.h``, ``model.layers``...)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and name:
            return name
    raise ModelError(f"cannot find the transformer blocks of {type(model).__name__}. Fix: build the student from a config.")


def copy_layers_student(teacher: Any, layers: list[int]) -> Any:
    """A student with ``len(layers)`` blocks, block j a copy of teacher block ``layers[j]``; embeddings,
    final norm and head copied too. The teacher is not changed."""
    n = teacher.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ModelError(
            f"student.copy_layers names blocks {bad}, but the teacher has {n} blocks (0..{n - 1}). "
            "Fix: pick indices in that range."
        )
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(layers)
    if hasattr(cfg, "n_layer"):
        cfg.n_layer = len(layers)
    student = type(teacher)(cfg)
    prefix = _blocks_name(teacher)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    src = teacher.state_dict()
    out = {}
    for key in student.state_dict():
        m = pattern.match(key)
        out[key] = src[f"{prefix}.{layers[int(m.group(1))]}.{m.group(2)}" if m else key].clone()
    student.load_state_dict(out)
    return student


def vocab_size_of(model: Any) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def check_same_vocab(teacher: Any, student: Any, tokenizer: Any = None) -> None:
    """Raise :class:`ModelError` unless teacher and student predict over the same token ids (and the
    tokenizer's ids fit both)."""
    tv, sv = vocab_size_of(teacher), vocab_size_of(student)
    problems = []
    if tv != sv:
        problems.append(f"the teacher predicts over {tv} token ids, the student over {sv}")
    if tokenizer is not None:
        n = len(tokenizer)
        for who, v in (("teacher", tv), ("student", sv)):
            if n > v:
                problems.append(f"the tokenizer has {n} tokens but the {who}'s vocabulary only {v} (ids ≥ {v} break it)")
        for who, m in (("teacher", teacher), ("student", student)):
            eos = getattr(m.config, "eos_token_id", None)
            if isinstance(eos, int) and tokenizer.eos_token_id is not None and eos != tokenizer.eos_token_id:
                problems.append(f"the {who}'s EOS id is {eos}, the tokenizer's {tokenizer.eos_token_id}")
    if problems:
        raise ModelError(
            "the vocabularies differ: " + "; ".join(problems) + ". Token-level distillation compares the two "
            "models' probabilities token id by token id, so id i must mean the same token in both. Fix: build the "
            "student with the teacher's tokenizer (student vocabulary = the teacher's; leave data.tokenizer.dir unset to "
            "use the teacher folder's), or use sequence-level distillation from text (distill.mode: sequence with "
            "distill.completions: a JSONL of prompt/completion text the teacher wrote), which needs no shared vocabulary."
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def macs_per_token(model: Any, context: int) -> int:
    """Forward multiply-accumulates per token: every Linear/Conv1D weight (head included, embedding lookups
    excluded) plus attention scores and mixing averaged over a causal context of ``context`` tokens."""
    total = 0
    head = model.get_output_embeddings()
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod is not head:
            total += mod.in_features * mod.out_features
        elif type(mod).__name__ == "Conv1D":  # GPT-2's linear layers
            total += mod.weight.shape[0] * mod.weight.shape[1]
    total += head.weight.shape[0] * head.weight.shape[1]
    width = int(getattr(model.config, "hidden_size", 0))
    layers = int(model.config.num_hidden_layers)
    total += layers * 2 * width * (context + 1) // 2  # QK^T and AV over on average (context+1)/2 positions
    return int(total)
