"""The recipe schema of causal language-model distillation (``task: causal_lm``).

Every field is documented once in its ``Field(description=...)``; ``distill recipe --example --task
causal_lm`` prints :func:`example_recipe` with those descriptions as comments.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.recipe.base import OptimizerConfig, OutputConfig, ScheduleConfig
from distill.recipe.base import RecipeRoot as _RecipeRoot
from distill.recipe.base import Section as _Section

MODES = ("online", "offline", "sequence", "on_policy")


# --------------------------------------------------------------------- data
class TokenizerConfig(_Section):
    dir: str | None = Field(
        None,
        description="A tokenizer folder (save_pretrained format) to load. Default: the teacher's folder when "
        "teacher.dir is set, else a new byte-level BPE trained on the training documents.",
    )
    vocab_size: int = Field(2048, ge=300, description="Vocabulary size of a newly trained byte-level BPE tokenizer.")
    min_frequency: int = Field(2, ge=1, description="A new BPE merge needs at least this many occurrences.")


class LMDataConfig(_Section):
    path: str | None = Field(
        None, description="The text: a plain text, .jsonl or .parquet file, or a folder of text files (required)."
    )
    format: Literal["auto", "text", "jsonl", "parquet"] = Field(
        "auto", description="How to read `path` ('auto': by extension; anything but .jsonl/.parquet is text)."
    )
    separator: str | None = Field(
        None,
        description="text: a line holding only this string separates documents ('%' for fortune files); "
        "default: one document per line (then a short line without letters or digits, such as '%', that makes up "
        "more than 10% of the lines is named in a warning with this fix: it is read as a document of its own).",
    )
    text_field: str = Field(
        "text", description="jsonl/parquet: the field of the document text (or use `prompt`/`completion` fields)."
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="The tokenizer.")
    block_len: int = Field(128, ge=4, description="Tokens per training block (documents packed, EOS between).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of documents held out for evaluation (seeded).")
    dedup: bool = Field(True, description="Drop exact duplicate documents (after stripping) before splitting.")
    max_documents: int | None = Field(None, gt=0, description="Use only the first N documents (quick runs).")
    seed: int = Field(0, description="Seed of the train/validation split by document.")

    @model_validator(mode="after")
    def _needs_path(self) -> LMDataConfig:
        if not self.path:
            raise ValueError("path is required: the text file to learn from (text, .jsonl or .parquet). Fix: set data.path")
        return self


# ------------------------------------------------------------------- models
class LMModelConfig(_Section):
    arch: Literal["gpt2", "llama"] = Field("gpt2", description="Architecture built from scratch: 'gpt2' or 'llama'.")
    layers: int = Field(2, gt=0, description="Transformer blocks.")
    width: int = Field(64, gt=0, description="Hidden size (embedding width).")
    heads: int = Field(2, gt=0, description="Attention heads (must divide width).")
    context: int | None = Field(None, gt=0, description="Longest sequence (positions); default: data.block_len.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the blocks (0: off).")

    @model_validator(mode="after")
    def _heads_divide(self) -> LMModelConfig:
        if self.width % self.heads:
            raise ValueError(
                f"heads ({self.heads}) must divide width ({self.width}): each head gets width/heads dimensions. "
                "Fix: change heads or width"
            )
        return self


class LMTrainConfig(_Section):
    steps: int = Field(100, gt=0, description="Optimizer steps.")
    batch_size: int = Field(
        16, gt=0, description="Blocks per micro-batch, per process (with --nproc N, rank r trains on the r-th slice "
        "of each global micro-batch of N·batch_size blocks).",
    )
    grad_accum: int = Field(
        1, gt=0, description="Micro-batches per optimizer step (the loss is normalised by the real tokens of all)."
    )
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(lr=1e-3, weight_decay=0.01), description="Optimizer settings."
    )
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(name="cosine", warmup_fraction=0.05),
        description="Learning-rate schedule over all steps.",
    )
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this value (off when null).")
    seed: int = Field(0, description="Seed of initialisation, batch order and sampling.")
    checkpoint_every: int = Field(50, gt=0, description="Write a checkpoint every N steps (`--resume` continues).")
    log_every: int = Field(25, gt=0, description="Log loss and true KL every N steps.")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's own choice).")


class LMTeacherConfig(_Section):
    dir: str | None = Field(
        None, description="A local folder with a trained causal LM (AutoModelForCausalLM; no hub access)."
    )
    trust_remote_code: bool = Field(
        False, description="Allow the folder's own model code to run (only for folders you trust)."
    )
    model: LMModelConfig | None = Field(
        None, description="Without `dir`: the architecture of a teacher trained here from scratch (cross-entropy)."
    )
    train: LMTrainConfig | None = Field(
        None, description="Without `dir`: how that teacher is trained (default: the `train` section)."
    )
    name: str | None = Field(None, description="The teacher's name for the report and model card (default: its folder's name).")
    license: str | None = Field(
        None, description="The teacher's licence (SPDX id, e.g. apache-2.0), recorded in the model card: distilling "
        "another party's model or outputs may be bound by its terms.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> LMTeacherConfig:
        if (self.dir is None) == (self.model is None):
            raise ValueError(
                "give the teacher either `dir` (a trained model folder) or `model` (an architecture to train "
                "here), exactly one. Fix: set one of them and remove the other"
            )
        if self.dir is not None and self.train is not None:
            raise ValueError("teacher.train only applies to a teacher trained here (`model`). Fix: remove it")
        return self


class LMStudentConfig(_Section):
    model: LMModelConfig | None = Field(None, description="The student's architecture, built from scratch.")
    copy_layers: list[int] | None = Field(
        None,
        description="Instead of `model`: copy these teacher blocks (0-based), with the teacher's embeddings, "
        "final norm and head (DistilBERT-style initialisation).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> LMStudentConfig:
        if (self.model is None) == (self.copy_layers is None):
            raise ValueError(
                "give the student either `model` (an architecture) or `copy_layers` (teacher blocks to copy), "
                "exactly one. Fix: set one of them and remove the other"
            )
        if self.copy_layers is not None and (not self.copy_layers or min(self.copy_layers) < 0):
            raise ValueError(f"copy_layers must list block indices >= 0 (got {self.copy_layers})")
        return self


# ------------------------------------------------------------------ distill
class LMDistillConfig(_Section):
    mode: Literal["online", "offline", "sequence", "on_policy"] = Field(
        "offline",
        description="Where the teacher signal comes from: 'online' (teacher forward every step), 'offline' "
        "(teacher top-k log-probs or draws cached once, reused across runs), 'sequence' (cross-entropy on "
        "teacher-generated or API-provided completions), 'on_policy' (GKD: a share of batches generated by the "
        "student, scored by the teacher).",
    )
    loss: str = Field(
        "fkl",
        description="Token-level loss: fkl, rkl, jsd, skew_fkl, skew_rkl or tvd (`distill methods`). Mode "
        "'sequence' trains on cross-entropy of the completions instead (loss, params, temperature, ce_weight unused).",
    )
    params: dict[str, bool | float] = Field(
        default_factory=dict, description="Parameters of the loss: jsd {beta}, skew_fkl/skew_rkl {alpha}."
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of teacher and student (loss × T²).")
    ce_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of cross-entropy on the data's next tokens, added. Worth trying with the top-k cache, "
        "which says nothing about the shape of the teacher's tail; with the sampled cache or online, 0 measured "
        "best (benchmarks/results/lm.md).",
    )
    cache: Literal["topk", "sample"] = Field(
        "topk",
        description="offline: what the cache keeps per position in its top_k slots: 'topk' (the teacher's k most "
        "likely tokens and the remaining mass: a biased target, silent on the tail) or 'sample' (k draws from the "
        "teacher as an empirical distribution, random-sampling KD: an unbiased forward-KL target at the same size; "
        "loss fkl only).",
    )
    top_k: int = Field(
        32, gt=0, description="offline: slots per position: teacher log-probs kept (cache topk) or draws (cache sample)."
    )
    draws: Literal["systematic", "multinomial"] = Field(
        "systematic",
        description="offline, cache 'sample': how the k draws are taken: 'systematic' (one uniform offset, points "
        "1/k apart on the teacher's cumulative distribution: every token's count is within 1 of k·p, lower variance) "
        "or 'multinomial' (k independent draws). Both are unbiased.",
    )
    tail: Literal["bucket", "unigram"] = Field(
        "bucket",
        description="offline: how the teacher's mass outside its top-k is used: 'bucket' (the loss compares one "
        "'everything else' bucket: a lower bound of the full divergence, silent on the tail's shape) or 'unigram' "
        "(spread over the other tokens in proportion to their training-data frequency; a dense loss).",
    )
    on_policy_fraction: float = Field(
        0.5, ge=0, le=1, description="on_policy: probability λ that a batch's continuation is generated by the student."
    )
    prompt_len: int = Field(16, gt=0, description="sequence/on_policy: prompt tokens taken from each data block.")
    gen_len: int = Field(32, gt=0, description="sequence/on_policy: tokens generated after each prompt.")
    num_prompts: int | None = Field(
        None, gt=0, description="sequence: prompts the teacher completes (default: one per training block)."
    )
    completions: str | None = Field(
        None,
        description="sequence: a JSONL/Parquet file of `prompt`/`completion` pairs (e.g. from a black-box API) "
        "used instead of teacher generation.",
    )
    sample: bool = Field(True, description="sequence: teacher samples its completions (false: greedy).")

    @model_validator(mode="after")
    def _check_loss(self) -> LMDistillConfig:
        from distill.losses.token import TOKEN_LOSSES  # lazy: the registry is the source of truth

        if self.loss not in TOKEN_LOSSES:
            hint = difflib.get_close_matches(self.loss, list(TOKEN_LOSSES), n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(
                f"unknown loss {self.loss!r}{did}. Known: {', '.join(sorted(TOKEN_LOSSES))}. Fix: use one of those"
            )
        allowed = _loss_params(TOKEN_LOSSES[self.loss])
        if allowed is not None:
            unknown = sorted(set(self.params) - set(allowed))
            if unknown:
                raise ValueError(
                    f"loss {self.loss!r} has no parameter {', '.join(map(repr, unknown))}; its parameters: "
                    f"{', '.join(sorted(allowed)) or 'none'}. Fix: remove it"
                )
        spec_params = getattr(TOKEN_LOSSES[self.loss], "params", {}) or {}
        for key, value in self.params.items():
            p = spec_params.get(key)
            low, high = getattr(p, "low", None), getattr(p, "high", None)
            if isinstance(value, bool) or p is None:
                continue
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(
                    f"params.{key} must be in [{low}, {high}] (got {value}). Fix: pick a value in that range"
                )
        if self.mode == "offline" and self.cache == "sample" and self.loss != "fkl":
            raise ValueError(
                f"loss {self.loss!r} on a sampled cache: only fkl is linear in the teacher's distribution, so only its "
                "expected gradient on draws equals its gradient on the teacher (rkl is even infinite on them; measured "
                "in benchmarks/results/lm.md: jsd, skew and tvd students ended far worse than from scratch). Fix: use "
                "loss fkl with cache 'sample', or cache 'topk' for this loss"
            )
        # the default may stand anywhere (a resolved recipe, as a run directory stores it, writes every field)
        default_draws = type(self).model_fields["draws"].default
        if self.draws != default_draws and not (self.mode == "offline" and self.cache == "sample"):
            raise ValueError(
                f"draws applies to the sampled offline cache only (mode {self.mode!r}, cache {self.cache!r}). Fix: "
                "remove draws, or set mode 'offline' and cache 'sample'"
            )
        if self.cache == "sample" and self.tail == "unigram":
            raise ValueError(
                "tail 'unigram' spreads a top-k cache's remaining mass; a sampled cache has none (its draws carry all "
                "the mass). Fix: remove tail, or use cache 'topk'"
            )
        if self.completions is not None and self.mode != "sequence":
            raise ValueError(f"completions only applies to mode 'sequence' (mode is {self.mode!r}). Fix: remove it")
        return self


def _loss_params(spec: Any) -> list[str] | None:
    params = getattr(spec, "params", None)
    if params is None and isinstance(spec, dict):
        params = spec.get("params")
    if params is None:
        return None
    return list(params)


class LMEvalConfig(_Section):
    batch_size: int = Field(16, gt=0, description="Blocks per batch when computing perplexity and accuracy.")
    max_blocks: int | None = Field(None, gt=0, description="Evaluate on at most this many held-out blocks.")
    speed_batches: int = Field(5, gt=0, description="Timed forward batches per model for tokens/s (alternating).")
    samples: int = Field(3, ge=0, description="Generation samples (greedy and sampled) per model for the report.")
    sample_len: int = Field(32, gt=0, description="Tokens generated per sample.")
    baseline: bool = Field(
        False, description="Also train the same student from scratch on cross-entropy alone (same steps), to compare."
    )


class LMOutputConfig(OutputConfig):
    cache_dir: str = Field(".distill-cache", description="Folder of the teacher top-k cache, shared across runs.")


class LMRecipe(_RecipeRoot):
    task: Literal["causal_lm"] = Field(
        "causal_lm", description="What is distilled: 'causal_lm' (this schema: language models)."
    )
    name: str = Field("lm", min_length=1, description="Name of the run (default folder runs/<name>).")
    data: LMDataConfig = Field(description="The text.")
    teacher: LMTeacherConfig = Field(description="The large language model.")
    student: LMStudentConfig = Field(description="The small language model.")
    distill: LMDistillConfig = Field(default_factory=LMDistillConfig, description="How the student learns.")
    train: LMTrainConfig = Field(default_factory=LMTrainConfig, description="How the student is trained.")
    eval: LMEvalConfig = Field(default_factory=LMEvalConfig, description="Evaluation and measurement.")
    output: LMOutputConfig = Field(default_factory=LMOutputConfig, description="Where results go.")

    @model_validator(mode="after")
    def _check_lengths(self) -> LMRecipe:
        d = self.distill
        if d.mode in ("sequence", "on_policy") and d.completions is None:
            need = d.prompt_len + d.gen_len
            if need > self.data.block_len:
                raise ValueError(
                    f"distill.prompt_len + distill.gen_len ({need}) exceed data.block_len ({self.data.block_len}): "
                    "generated examples are padded to one block. Fix: shorten them or raise data.block_len"
                )
        for who, m in (("teacher", self.teacher.model), ("student", self.student.model)):
            if m is not None and m.context is not None and m.context < self.data.block_len:
                raise ValueError(
                    f"{who}.model.context ({m.context}) is shorter than data.block_len ({self.data.block_len}). "
                    "Fix: raise the context or shorten the blocks"
                )
        return self

    @property
    def teacher_train(self) -> LMTrainConfig:
        return self.teacher.train if self.teacher.train is not None else self.train


def example_recipe() -> dict[str, Any]:
    """A small valid example: a GPT-2 style teacher trained here on fortunes, distilled offline."""
    return {
        "task": "causal_lm",
        "name": "lm-fortunes",
        "data": {
            "path": "fortunes.txt",
            "separator": "%",
            "tokenizer": {"vocab_size": 2048},
            "block_len": 64,
            "val_fraction": 0.05,
            "seed": 0,
        },
        "teacher": {
            "model": {"arch": "gpt2", "layers": 4, "width": 128, "heads": 4},
            "train": {"steps": 600, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.002}},
        },
        "student": {"model": {"arch": "gpt2", "layers": 1, "width": 32, "heads": 2}},
        "distill": {"mode": "offline", "loss": "fkl", "temperature": 1.0, "cache": "sample", "top_k": 32,
                    "ce_weight": 0.0},
        "train": {"steps": 300, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.003}, "seed": 0},
        "eval": {"max_blocks": 200, "samples": 3, "baseline": True},
    }
