"""The Task protocol and the one task table.

A task is a recipe schema, a pipeline (``run(recipe, *, resume, overwrite, progress, console)``
returning a result with ``run_dir`` and ``table_markdown``) and the post-run commands it supports.
Each entry names its functions as ``"module:attribute"`` strings, imported when used, so reading
the table costs nothing and a task's dependencies (transformers, ...) load only when it runs.

A command a task does not support has a reason instead of a function: ``distill eval`` on such a
run prints that reason and exits 2 (:class:`~distill.errors.UnsupportedError`), it never guesses.

The post-run commands and the signature each function has::

    eval      fn(run_dir, *, console) -> result with .table_markdown
    compress  fn(run_dir, overrides, *, progress) -> {"stages": {name: {...}}}
    export    fn(run_dir, formats, overrides) -> {"files": {kind: path}}
    bench     fn(run_dir, *, memory, threads) -> dict (rendered by bench_render)
    report    fn(run_dir) -> list of files written
    layers    fn(recipe) -> {"teacher": [(name, type, shape)], "student": [...]}

Adding a task is one package under ``distill/tasks/`` and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.rundir import read_status, stored_recipe
from distill.errors import RecipeError, RunDirError, UnsupportedError

COMMANDS = ("eval", "compress", "export", "bench", "report", "layers")


def resolve(ref: str) -> Any:
    """The object ``"package.module:attribute"`` names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Task:
    """One task: where its recipe, pipeline and commands live, and what it cannot do (with why)."""

    name: str
    summary: str
    schema: str  # "module:Class" of the recipe
    example: str  # "module:function" returning the documented example recipe (a mapping)
    pipeline: str  # "module:function", the whole run
    preflight: str  # "module:function": every check that can be made before anything is written (raises)
    commands: dict[str, str] = field(default_factory=dict)  # command -> "module:function"
    refusals: dict[str, str] = field(default_factory=dict)  # command -> why this task has none
    nproc: str | None = None  # None: --nproc N works; else why this task runs in one process

    def recipe_class(self) -> Any:
        return resolve(self.schema)

    def example_recipe(self) -> dict[str, Any]:
        return resolve(self.example)()

    def run_function(self) -> Any:
        return resolve(self.pipeline)

    def preflight_function(self) -> Any:
        return resolve(self.preflight)

    def fields_markdown(self) -> str:
        """Every field of this task's recipe as a Markdown table (``distill recipe --fields``, the docs' reference)."""
        from distill.recipe.docs import fields_markdown

        return fields_markdown(self.recipe_class())

    def example_yaml(self) -> str:
        """This task's example recipe as commented YAML (``distill recipe --example``)."""
        from distill.recipe.docs import example_yaml

        return example_yaml(self.recipe_class(), self.example_recipe())

    def supports(self, command: str) -> bool:
        return command in self.commands

    def command(self, command: str, where: str | Path | None = None) -> Any:
        """The function of ``command`` for this task, or an :class:`UnsupportedError` that says why not."""
        if command in self.commands:
            return resolve(self.commands[command])
        article = "an" if self.name[0] in "aeiou" else "a"
        what = f"{where} is {article} {self.name} run" if where is not None else f"this is {article} {self.name} recipe"
        why = self.refusals.get(command, f"it is not implemented for {self.name} runs")
        others = ", ".join(c for c in COMMANDS if c in self.commands) or "none"
        raise UnsupportedError(
            f"distill {command} does not apply here: {what}, and {why}. "
            f"Commands for {self.name} runs: {others}."
        )


TASKS: dict[str, Task] = {
    "classification": Task(
        name="classification",
        summary="image and table classification: a teacher's soft labels into a small student",
        schema="distill.tasks.classification.recipe:Recipe",
        example="distill.tasks.classification.recipe:example_recipe",
        pipeline="distill.tasks.classification.pipeline:run",
        preflight="distill.tasks.classification.preflight:preflight",
        commands={
            "eval": "distill.tasks.classification.evaluate:evaluate",
            "compress": "distill.tasks.classification.stages:compress_run",
            "export": "distill.tasks.classification.stages:export_run",
            "bench": "distill.tasks.classification.bench:bench_run",
            "report": "distill.tasks.classification.report:write_classification_report",
            "layers": "distill.tasks.classification.builders:list_layers",
        },
    ),
    "embedding": Task(
        name="embedding",
        summary="sentence embeddings: a sentence-transformers teacher into transformer and static students",
        schema="distill.tasks.embedding.recipe:EmbeddingRecipe",
        example="distill.tasks.embedding.recipe:example_recipe",
        pipeline="distill.tasks.embedding.pipeline:run_embedding",
        preflight="distill.tasks.embedding.pipeline:preflight",
        commands={
            "eval": "distill.tasks.embedding.commands:evaluate_embedding_run",
            "export": "distill.tasks.embedding.commands:export_embedding_run",
            "report": "distill.tasks.embedding.report:write_embedding_report",
        },
        refusals={
            "compress": "an embedding run compresses its students in the recipe: students[].layers, ffn_keep and "
            "heads_keep prune the transformer, export.int8 writes the int8 ONNX file, and a static student is the "
            "smallest form",
            "bench": "its comparison.md already times every model side by side (sentences/s at batch 64 and 1, "
            "tokenisation included); `distill eval RUN` measures them again",
            "layers": "embedding students pick teacher layers by index (students[].layers: [0, 5]), not by module "
            "path",
        },
        nproc=None,  # --nproc N: each process trains its share of every global batch (core/distributed.py)
    ),
    "text_classification": Task(
        name="text_classification",
        summary="text classification: a Hugging Face classifier (given or fine-tuned in the run) into layer, static "
        "and custom students",
        schema="distill.tasks.text_classification.recipe:TextClassificationRecipe",
        example="distill.tasks.text_classification.recipe:example_recipe",
        pipeline="distill.tasks.text_classification.pipeline:run",
        preflight="distill.tasks.text_classification.pipeline:preflight",
        commands={
            "eval": "distill.tasks.text_classification.commands:evaluate_text_run",
            "export": "distill.tasks.text_classification.commands:export_text_run",
            "report": "distill.tasks.text_classification.report:write_text_report",
        },
        refusals={
            "compress": "pruning and int8 quantization are implemented for image and table classification students; a "
            "text student is made small by its recipe (students[].layers, a static token table)",
            "bench": "its comparison.md already times every model side by side (texts/s at batch 32 and 1, raw text in "
            "and labels out); `distill eval RUN` measures them again",
            "layers": "text students pick teacher layers by index (students[].layers: [0, 5]), not by module path",
        },
        nproc=None,  # --nproc N: each process trains its share of every global batch (text_classification/train.py)
    ),
    "causal_lm": Task(
        name="causal_lm",
        summary="causal language models: next-token distillation, online, from a top-k cache, or on sequences",
        schema="distill.tasks.causal_lm.recipe:LMRecipe",
        example="distill.tasks.causal_lm.recipe:example_recipe",
        pipeline="distill.tasks.causal_lm.pipeline:run_lm",
        preflight="distill.tasks.causal_lm.pipeline:preflight",
        commands={
            "eval": "distill.tasks.causal_lm.commands:evaluate_lm_run",
            "report": "distill.tasks.causal_lm.report:write_lm_report",
        },
        refusals={
            "compress": "pruning and int8 quantization are implemented for classification students only",
            "export": "the student is already saved in Hugging Face format (RUN/student, with its tokenizer), "
            "which `AutoModelForCausalLM.from_pretrained` loads; ONNX export of language models is not implemented",
            "bench": "its comparison.md already times teacher and student side by side (tokens/s, MACs per token); "
            "`distill eval RUN` measures them again",
            "layers": "language-model students copy teacher blocks by index (student.copy_layers: [0, 3]), not by "
            "module path",
        },
        nproc=None,  # --nproc N: each process trains on its share of every global batch (tasks/causal_lm/loop.py)
    ),
}


def get_task(name: Any, source: str | None = None) -> Task:
    """The task called ``name``, or a :class:`RecipeError` listing the known ones."""
    if not isinstance(name, str) or name not in TASKS:
        raise RecipeError([f"task must be one of {', '.join(TASKS)} (got {name!r}). Fix: use one of those."], source)
    return TASKS[name]


def task_of_recipe(recipe: Any) -> Task:
    return get_task(getattr(recipe, "task", "classification"))


def task_of_run(run_dir: str | Path, *, finished: bool = True) -> Task:
    """The task of the run in ``run_dir``, read from its ``recipe.yaml``; refuses what is not a run.

    With ``finished``, a run that has not written its ``metrics.json`` (still running, failed, or
    interrupted) is refused with how to finish it.
    """
    run_dir = Path(run_dir)
    task = get_task(stored_recipe(run_dir).get("task", "classification"), str(run_dir / "recipe.yaml"))
    if finished and not (run_dir / "metrics.json").is_file():
        status = read_status(run_dir) or {}
        state = status.get("state", "no status recorded")
        reason = f": {status['reason'].splitlines()[0]}" if status.get("reason") else ""
        raise RunDirError(
            f"the run in {run_dir} did not finish ({state}{reason}): it has no metrics.json yet. Fix: finish it with "
            f"`distill run RECIPE --resume --set output.dir={run_dir}` (after correcting its input if it failed)."
        )
    return task
