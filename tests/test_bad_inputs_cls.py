"""Bad input to classification runs: each is refused with what, why and a fix, exit code 2, no traceback,
and nothing written (no runs/NAME left by a refused run); or, for a real but poor result, said loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main

from .conftest import tiny_recipe


def _refused(capsys, args: list[str], *needles: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Fix:" in err, err
    for needle in needles:
        assert needle in err, err
    assert not Path("runs").exists() or not any(Path("runs").iterdir()), list(Path("runs").iterdir())
    return err


def test_an_empty_recipe_file_or_a_folder_is_not_a_recipe(tmp_path: Path, capsys) -> None:
    from distill.core.recipes import load_recipe

    assert load_recipe(raw={}).data.source == "digits"  # a mapping in Python keeps its defaults
    for text in ("", "# only a comment\n\n"):
        (tmp_path / "empty.yaml").write_text(text)
        _refused(capsys, ["run", str(tmp_path / "empty.yaml"), "--no-progress"], "the recipe file is empty")
    _refused(capsys, ["recipe", "--check", str(tmp_path)], f"{tmp_path} is a folder, not a recipe file")
    run = tmp_path / "runs_elsewhere" / "r"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: r\n")
    _refused(capsys, ["layers", str(run)], "is a folder (a run directory)", f"{run / 'recipe.yaml'}")
