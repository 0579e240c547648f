"""`distill.check(recipe)` / `distill recipe --check`: every check a run makes before it writes anything, for
every task, with nothing written and nothing trained."""

from __future__ import annotations

from pathlib import Path

import pytest

import distill
from distill.errors import DistillError
from tests.test_task_matrix import RAW


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("task", list(RAW))
def test_check_passes_a_good_recipe_of_every_task_and_writes_nothing(tmp_path: Path, task: str) -> None:
    raw = RAW[task](tmp_path)
    before = _files(tmp_path)
    distill.check(distill.load_recipe(raw=raw), console=False)
    assert _files(tmp_path) == before
    assert not Path(raw["output"]["dir"]).exists()


def _bad(task: str, root: Path) -> tuple[dict, str]:
    raw = RAW[task](root)
    if task == "classification":
        raw["distill"] = [{"loss": "hint", "weight": 1.0, "student_layer": "net.9", "teacher_layer": "net.1"}]
        return raw, "net.9"
    if task == "embedding":
        raw["data"]["corpus"] = str(root / "no-such-corpus.txt")
        return raw, "no-such-corpus.txt"
    if task == "text_classification":
        raw["students"][0]["layers"] = [5]
        return raw, "[5] are not layers of the teacher"
    raw["teacher"]["dir"] = str(root / "no-such-teacher")
    return raw, "no-such-teacher"


@pytest.mark.parametrize("task", list(RAW))
def test_check_finds_what_the_run_would_find_first(tmp_path: Path, task: str) -> None:
    raw, named = _bad(task, tmp_path)
    before = _files(tmp_path)
    recipe = distill.load_recipe(raw=raw)
    with pytest.raises(DistillError) as err:
        distill.check(recipe, console=False)
    assert named in str(err.value)
    with pytest.raises(type(err.value)) as again:  # the run stops on the same problem, before writing
        distill.run(recipe, progress=False, console=False)
    assert str(again.value) == str(err.value)
    assert _files(tmp_path) == before


def test_recipe_check_on_the_cli_runs_the_preflight(tmp_path: Path, monkeypatch, capsys) -> None:
    import yaml

    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    raw, named = _bad("classification", tmp_path)
    Path("bad.yaml").write_text(yaml.safe_dump(raw))
    assert main(["recipe", "--check", "bad.yaml", "--schema-only"]) == 0  # the file alone is valid
    capsys.readouterr()
    assert main(["recipe", "--check", "bad.yaml"]) == 2  # but the run would stop on it
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    Path("good.yaml").write_text(yaml.safe_dump(RAW["classification"](tmp_path)))
    before = _files(tmp_path)
    assert main(["recipe", "--check", "good.yaml", "-q"]) == 0
    out, err = capsys.readouterr()
    assert "every check a run makes first" in err and out == ""  # -q: the verdict only, not the resolved recipe
    assert main(["recipe", "--check", "good.yaml"]) == 0
    assert "task: classification" in capsys.readouterr().out  # without -q: the resolved recipe
    assert _files(tmp_path) == before


@pytest.mark.parametrize("task", ["embedding", "causal_lm"])
def test_independent_problems_are_reported_at_once(tmp_path: Path, task: str) -> None:
    """The text and the teacher are checked independently: both problems in one error, nothing written."""
    from distill.errors import PreflightError

    raw = RAW[task](tmp_path)
    if task == "embedding":
        raw["data"]["corpus"] = str(tmp_path / "no-such-corpus.txt")
        raw["teacher"]["path"] = str(tmp_path / "no-such-teacher")
    else:
        raw["data"]["path"] = str(tmp_path / "no-such-text.txt")
        raw["teacher"]["dir"] = str(tmp_path / "no-such-teacher")
    before = _files(tmp_path)
    with pytest.raises(PreflightError) as err:
        distill.check(distill.load_recipe(raw=raw), console=False)
    message = str(err.value)
    assert "2 problems" in message and "no-such-teacher" in message and "no-such-" in message.replace("no-such-teacher", "")
    assert _files(tmp_path) == before
