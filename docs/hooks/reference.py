"""MkDocs hook: the recipe reference, one page per task, generated at build time from the schema.

Each page is ``distill.core.task.get_task(task).fields_markdown()`` (what ``distill recipe --fields --task TASK``
prints) under a short header, served as ``reference/<task>.md``; nothing is written into docs/. The
schema is imported from this checkout's ``src/`` first, so the pages always describe the code beside
them. Registered under ``hooks:`` in mkdocs.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

TASKS = {
    "classification": ("Classification", "classification.md"),
    "embedding": ("Sentence embeddings", "embeddings.md"),
    "causal_lm": ("Language models", "language-models.md"),
    "text_classification": ("Text classification", "text-classification.md"),
}


def _fields_markdown(root: Path, task: str) -> str:
    src = str(root / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from distill.core.task import get_task

    return get_task(task).fields_markdown()


def html_safe(markdown: str) -> str:
    """``<`` and ``>`` outside code spans as entities (``runs/<name>`` in a description is text, not a tag);
    the rendered page reads exactly as the CLI's Markdown."""
    lines = []
    for line in markdown.split("\n"):
        parts = line.split("`")
        parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
        lines.append("`".join(parts))
    return "\n".join(lines)


def page(root: Path, task: str) -> str:
    title, guide = TASKS[task]
    return (
        f"# Recipe reference: {title.lower()} (`task: {task}`)\n\n"
        f"Every field of a `task: {task}` recipe, its default and what it means, generated from the schema "
        f"when the site is built. `distill recipe --fields --task {task}` prints the same table, and "
        f"`distill recipe --example --task {task}` a complete recipe with each field's documentation as a "
        f"comment. How recipes work: [Recipes](../recipe.md); the guide: [{title}](../{guide}).\n\n"
        + html_safe(_fields_markdown(root, task))
    )


def on_files(files, config):  # the MkDocs hook signature: (Files, MkDocsConfig) -> Files
    root = Path(config["config_file_path"]).resolve().parent
    for task in TASKS:
        files.append(File.generated(config, f"reference/{task}.md", content=page(root, task)))
    return files
