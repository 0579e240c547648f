"""Bad input to classification runs: each is refused with what, why and a fix, exit code 2, no traceback,
and nothing written (no runs/NAME left by a refused run); or, for a real but poor result, said loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main

from .conftest import tiny_recipe


def _table(path: Path, labels: list[str], *, header: str = "a,b,c,label", first: str | None = None) -> Path:
    """A small learnable CSV: the label decides the sign of column a."""
    rng = np.random.default_rng(0)
    lines = [header]
    for i, lab in enumerate(labels):
        a = (1.0 if lab.strip().lower() == "pos" else -1.0) + 0.3 * rng.standard_normal()
        row = f"{a:.4f},{rng.standard_normal():.4f},{rng.standard_normal():.4f},{lab}"
        lines.append(f"{i if first is None else first}," + row if header.startswith(("id,", ",", "idx,")) else row)
    path.write_text("\n".join(lines) + "\n")
    return path


def _table_recipe(path: Path, **data: object) -> dict:
    return tiny_recipe(data={"source": "table", "path": str(path), "label_column": "label", **data})


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


def test_a_duplicated_header_is_refused(write_recipe, tmp_path: Path, capsys) -> None:
    p = write_recipe(_table_recipe(_table(tmp_path / "dup.csv", ["pos", "neg"] * 20, header="a,a,c,label")))
    _refused(capsys, ["run", str(p), "--no-progress"], "more than one column named 'a'")
