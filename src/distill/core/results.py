"""The one layout of a run's results, for every task.

``metrics.json``: ``task``, ``name``, the environment (``torch``, ``threads``, ``platform``, ``processor``,
``command``), ``models``: a list with one entry per model, each with its ``role`` (``teacher``, ``student``,
``baseline``; embedding students are all ``student`` and differ by ``name``), and the task's own keys
(``summary``, ``history``, ...). :func:`by_role` reads it back.
"""

from __future__ import annotations

from typing import Any


def by_role(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{role: entry}`` of a metrics.json / comparison.json mapping (for embedding runs: ``{name: entry}``,
    since every student has the role student)."""
    models = results.get("models") or []
    if isinstance(models, dict):  # run directories written before the one layout
        return models
    roles = [m.get("role") for m in models]
    key = "role" if len(set(roles)) == len(roles) else "name"
    return {m[key]: m for m in models}
