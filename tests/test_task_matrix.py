"""One product: every task through the same API and CLI.

A finished tiny run of each task (made with ``distill.run``), then every post-run command on each through
the real CLI: it works, or it exits 2 with the reason, never a traceback, and no file the run wrote is
replaced by a wrong one. Also: the task table drives the recipe loader and the CLI, ``--nproc`` on a task
that runs in one process is refused before anything is written, and a folder that is not a run is named so.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import distill
from distill.cli import main
from distill.core.task import COMMANDS, TASKS
from tests.conftest import tiny_recipe
from tests.embed_helpers import make_tiny_sentence_model

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "small", "red", "blue", "house",
         "tree", "under", "over", "quickly", "slowly"]  # fmt: skip


def _text(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(4, 14))) for _ in range(n)]


def classification_raw(root: Path) -> dict[str, Any]:
    # two threads where the tests run torch on one (conftest): the commands must give the caller's count back
    return tiny_recipe(output={"report": False, "dir": str(root / "cls"), "cache_dir": str(root / "cache")},
                       train={"num_threads": 2})


def embedding_raw(root: Path) -> dict[str, Any]:
    corpus = root / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("\n".join(_text(220, 0)) + "\n")
        make_tiny_sentence_model(root / "st-teacher")
    return {
        "task": "embedding", "name": "emb",
        "data": {"corpus": str(corpus), "held_out": 60},
        "teacher": {"path": str(root / "st-teacher"), "license": "apache-2.0"},
        "students": [{"name": "l1", "kind": "layers", "layers": [1]}, {"name": "static", "kind": "static", "dim": 8}],
        "train": {"epochs": 1, "batch_size": 16},
        "eval": {"pairs": 200, "queries": 10, "speed_sentences": 32, "latency_sentences": 4},
        "export": {"onnx": False},
        "output": {"report": False, "dir": str(root / "emb"), "cache_dir": str(root / "cache")},
    }  # fmt: skip


def lm_raw(root: Path) -> dict[str, Any]:
    corpus = root / "lm.txt"
    if not corpus.exists():
        from distill.tasks.causal_lm.text import train_tokenizer
        from distill.tasks.causal_lm.models import build_causal_lm

        docs = [d.capitalize() + "." for d in _text(160, 1)]
        corpus.write_text("\n%\n".join(docs) + "\n")
        tok = train_tokenizer(docs, 300)
        teacher = build_causal_lm(vocab_size=len(tok), layers=2, width=16, heads=2, context=32,
                                  eos_token_id=tok.eos_token_id, seed=0)  # fmt: skip
        teacher.save_pretrained(str(root / "lm-teacher"))
        tok.save_pretrained(str(root / "lm-teacher"))
    return {
        "task": "causal_lm", "name": "lm",
        "data": {"path": str(corpus), "separator": "%", "block_len": 32, "val_fraction": 0.1},
        "teacher": {"dir": str(root / "lm-teacher")},
        "student": {"model": {"layers": 1, "width": 16, "heads": 2}},
        "distill": {"mode": "online", "loss": "fkl"},
        "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "log_every": 2},
        "eval": {"max_blocks": 4, "samples": 1, "sample_len": 4, "speed_batches": 1, "batch_size": 4},
        "output": {"report": False, "dir": str(root / "lm"), "cache_dir": str(root / "cache")},
    }  # fmt: skip


def text_raw(root: Path) -> dict[str, Any]:
    from tests.text_helpers import labelled_rows, write_csv

    data = root / "texts.csv"
    if not data.exists():
        write_csv(data, labelled_rows(240))
        make_tiny_sentence_model(root / "text-encoder", hidden=32)
    return {
        "task": "text_classification", "name": "txt",
        "data": {"source": str(data), "max_length": 32},
        "teacher": {"kind": "finetune", "path": str(root / "text-encoder"), "epochs": 30, "lr": 1e-3, "batch_size": 16,
                    "license": "apache-2.0"},
        "students": [{"name": "l1", "kind": "layers", "layers": [1]}, {"name": "static", "kind": "static", "dim": 8}],
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3},
        "eval": {"speed_texts": 32, "latency_texts": 4},
        "output": {"report": False, "dir": str(root / "txt"), "cache_dir": str(root / "cache")},
    }  # fmt: skip


RAW = {"classification": classification_raw, "embedding": embedding_raw, "causal_lm": lm_raw,
       "text_classification": text_raw}  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished run of every task, each made through the Python API (``distill.run``)."""
    root = tmp_path_factory.mktemp("matrix")
    out = {}
    for task, make in RAW.items():
        raw = make(root)
        result = distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
        assert result.run_dir == Path(raw["output"]["dir"]) and result.table_markdown
        assert json.loads((result.run_dir / "metrics.json").read_text())["task"] == task
        assert json.loads((result.run_dir / "status.json").read_text())["state"] == "done"
        (root / f"{task}.yaml").write_text(yaml.safe_dump(raw))
        out[task] = result.run_dir
    out["root"] = root
    return out


def _snapshot(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}  # fmt: skip


# What a run wrote that no later command may change: its measurements, its recipe and its models.
def _protected(name: str) -> bool:
    return name in {"metrics.json", "comparison.json", "comparison.md", "recipe.yaml", "status.json"} or name.endswith(
        (".safetensors", "model.safetensors", "tokenizer.json"))


ARGS = {"eval": ["-q"], "compress": ["--set", "compress.quantize.kind=dynamic", "--no-progress"], "export": [],
        "bench": ["--no-memory"], "report": []}  # fmt: skip


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "layers"])
@pytest.mark.parametrize("task", list(TASKS))
def test_every_command_on_every_task_works_or_exits_2(finished: dict[str, Path], task: str, command: str,
                                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    run_dir = finished[task]
    before = _snapshot(run_dir)
    threads, generator = torch.get_num_threads(), torch.random.get_rng_state()
    code = main([command, str(run_dir), *ARGS[command]])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    # nothing global changed: the process's thread count and torch's generator are the caller's again
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), generator)
    after = _snapshot(run_dir)
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    if TASKS[task].supports(command):
        assert code == 0, err
        assert not [k for k in changed if _protected(Path(k).name)], changed
    else:
        assert code == 2, (out, err)
        article = "an" if task == "embedding" else "a"
        assert err.startswith(f"error: distill {command} does not apply here: {run_dir} is {article} {task} run")
        assert "Commands for" in err
        assert after == before  # a refusal writes nothing
    if command == "report" and code == 0:
        html = (run_dir / "report.html").read_text()
        if task != "classification":
            assert "confusion" not in html.lower() and "image-classification" not in html
            assert not (run_dir / "README.md").exists() or "image-classification" not in (run_dir / "README.md").read_text()


def test_eval_measures_every_task_again(finished: dict[str, Path]) -> None:
    for task in TASKS:
        result = distill.evaluate(finished[task], console=False)
        assert result.table_markdown.count("\n") >= 3, task
        assert (finished[task] / "eval.json").exists()
    emb = json.loads((finished["embedding"] / "eval.json").read_text())["models"]
    ran = json.loads((finished["embedding"] / "comparison.json").read_text())["models"]
    # same saved students, same held-out text: the agreement measures are the run's own
    for again, first in zip(emb, ran, strict=True):
        assert again["spearman"] == pytest.approx(first["spearman"], abs=1e-6), first["name"]


@pytest.mark.parametrize("task", list(TASKS))
def test_layers_lists_modules_or_says_why_not(finished: dict[str, Path], task: str, capsys: pytest.CaptureFixture) -> None:
    code = main(["layers", str(finished["root"] / f"{task}.yaml")])
    out, err = capsys.readouterr()
    if TASKS[task].supports("layers"):
        assert code == 0 and "teacher:" in out and "student:" in out
    else:
        assert code == 2 and "does not apply here" in err and "by index" in err


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "layers"])
def test_a_folder_that_is_not_a_run_is_named_so(tmp_path: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("x")
    assert main([command, str(tmp_path / "photos")]) == 2
    assert "is not a distill run directory: it has no recipe.yaml" in capsys.readouterr().err
    (tmp_path / "file.txt").write_text("x")
    assert main([command, str(tmp_path / "file.txt")]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "photos"]


def test_the_task_table_is_the_one_the_loader_and_cli_read(capsys: pytest.CaptureFixture) -> None:
    from distill.core.task import get_task

    for name, task in TASKS.items():
        assert get_task(name) is task
        resolved = distill.validate_recipe(task.example_recipe())
        assert resolved.task == name
        # a run directory stores the resolved recipe (every field written out): it must load back the same
        assert distill.validate_recipe(yaml.safe_load(resolved.to_yaml())).to_dict() == resolved.to_dict()
        assert main(["recipe", "--example", "--task", name]) == 0
        assert f"task: {name}" in capsys.readouterr().out or name == "classification"
    with pytest.raises(distill.RecipeError, match="task must be one of classification, embedding, text_classification, causal_lm"):
        distill.validate_recipe({"task": "detection"})


def test_losses_of_every_task_are_exported() -> None:
    import torch

    from distill import losses

    s, t = torch.randn(4, 6), torch.randn(4, 6)
    assert float(losses.kd_loss(t, t, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.cosine_loss(s, s)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 5, 11)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert float(losses.token_loss("fkl", logits, logits, mask)) == pytest.approx(0.0, abs=1e-6)
    for name in losses.__all__:
        assert hasattr(losses, name), name
