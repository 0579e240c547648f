"""Language-model distillation end to end: every mode through the real CLI, resume, the offline
cache reused across runs, the vocabulary-mismatch error, recipe validation."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from distill.cli import main
from distill.tasks.causal_lm.text import train_tokenizer
from distill.errors import RecipeError
from distill.tasks.causal_lm.models import build_causal_lm
from distill.core.recipes import load_recipe

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "small", "red", "blue", "house", "tree", "under", "over", "quickly", "slowly"]


def write_corpus(path: Path, n: int = 160, seed: int = 0) -> Path:
    r = random.Random(seed)
    docs = [" ".join(r.choice(WORDS) for _ in range(r.randint(5, 20))).capitalize() + "." for _ in range(n)]
    path.write_text("\n%\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A corpus, and a tiny random GPT-2 teacher folder with its tokenizer (vocab ≤ 512)."""
    root = tmp_path_factory.mktemp("lm")
    corpus = write_corpus(root / "corpus.txt")
    docs = corpus.read_text().split("\n%\n")
    tok = train_tokenizer(docs, 300)
    teacher = build_causal_lm(vocab_size=len(tok), layers=2, width=16, heads=2, context=32,
                              eos_token_id=tok.eos_token_id, seed=0)  # fmt: skip
    teacher.save_pretrained(str(root / "teacher"))
    tok.save_pretrained(str(root / "teacher"))
    other = train_tokenizer(docs, 280)
    other.save_pretrained(str(root / "other_tok"))
    pairs = root / "api.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": d[:12], "completion": d[12:]}) + "\n" for d in docs[:40]))
    return {"corpus": corpus, "teacher": root / "teacher", "other_tok": root / "other_tok", "api": pairs}


def recipe(world: dict[str, Path], **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "task": "causal_lm",
        "name": "t",
        "data": {"path": str(world["corpus"]), "separator": "%", "block_len": 32, "val_fraction": 0.1},
        "teacher": {"dir": str(world["teacher"])},
        "student": {"model": {"layers": 1, "width": 16, "heads": 2}},
        "distill": {"mode": "offline", "loss": "fkl", "prompt_len": 8, "gen_len": 8, "num_prompts": 16},
        "train": {"steps": 4, "batch_size": 4, "grad_accum": 2, "checkpoint_every": 2, "log_every": 2},
        "eval": {"max_blocks": 4, "samples": 1, "sample_len": 4, "speed_batches": 1, "batch_size": 4},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return raw


def run_cli(raw: dict[str, Any], *extra: str) -> int:
    Path("r.yaml").write_text(yaml.safe_dump(raw))
    return main(["run", "r.yaml", "--no-progress", *extra])


@pytest.mark.parametrize(
    "mode, loss, params",
    [
        ("online", "jsd", {"beta": 0.3}),
        ("offline", "skew_rkl", {"alpha": 0.2}),
        ("offline-unigram", "fkl", {}),
        ("offline-sample", "fkl", {}),
        ("sequence", "fkl", {}),
        ("on_policy", "tvd", {}),
    ],
)
def test_every_mode_through_the_cli(world: dict[str, Path], mode: str, loss: str, params: dict) -> None:
    mode, _, variant = mode.partition("-")
    raw = recipe(world, distill__mode=mode, distill__loss=loss, distill__params=params, distill__ce_weight=0.5,
                 distill__on_policy_fraction=1.0, distill__tail="unigram" if variant == "unigram" else "bucket",
                 distill__cache="sample" if variant == "sample" else "topk")  # fmt: skip
    assert run_cli(raw) == 0
    run = Path("runs/t")
    metrics = json.loads((run / "metrics.json").read_text())
    names = [r["model"] for r in metrics["comparison"]]
    assert names == ["teacher", "student"]
    for r in metrics["comparison"]:
        assert r["perplexity"] > 1 and 0 <= r["top1"] <= r["top3"] <= 1 and r["tokens_per_s"] > 0
    assert (run / "student" / "model.safetensors").exists() and (run / "student" / "tokenizer.json").exists()
    assert (run / "comparison.md").read_text().count("|") > 20 and (run / "samples.md").exists()
    hist = metrics["history"]["student"]
    assert [h["step"] for h in hist] == [2, 4]
    if mode != "sequence":
        assert all(h["true_kl"] >= 0 for h in hist)
    if mode == "offline":
        sig = metrics["signal"]
        assert sig["cache_bytes"] < sig["dense_fp16_bytes"] and Path(sig["cache_dir"], "index.json").exists()
        assert sig["cache"] == (variant if variant == "sample" else "topk")
        index = json.loads(Path(sig["cache_dir"], "index.json").read_text())
        assert index["mode"] == sig["cache"]
        assert index["draws"] == ("systematic" if variant == "sample" else None)  # the default draws


def test_sequence_from_api_completions(world: dict[str, Path]) -> None:
    raw = recipe(world, distill__mode="sequence", distill__completions=str(world["api"]))
    assert run_cli(raw) == 0
    metrics = json.loads(Path("runs/t/metrics.json").read_text())
    assert metrics["signal"]["examples"] == 40 and metrics["signal"]["source"] == str(world["api"])


def test_teacher_trained_here_copy_layers_student_and_baseline(world: dict[str, Path]) -> None:
    from distill.tasks.causal_lm.pipeline import run_lm

    raw = recipe(
        world,
        teacher={"model": {"layers": 3, "width": 16, "heads": 2}, "train": {"steps": 3, "batch_size": 4}},
        student={"copy_layers": [0, 2]},
        data__tokenizer={"vocab_size": 300},
        eval__baseline=True,
    )
    result = run_lm(load_recipe(raw=raw), progress=False, console=False)
    run = result.run_dir
    assert (run / "teacher" / "model.safetensors").exists() and (run / "tokenizer" / "tokenizer.json").exists()
    assert [r["model"] for r in result.metrics["comparison"]] == ["teacher", "student", "baseline"]
    assert "| baseline |" in result.table_markdown
    student = result.metrics["comparison"][1]
    assert student["params"] < result.metrics["comparison"][0]["params"]


def test_resume_gives_the_uninterrupted_result(world: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    from distill.tasks.causal_lm.pipeline import run_lm

    raw = recipe(world, train__steps=6)
    full = run_lm(load_recipe(raw=raw), progress=False, console=False)
    raw["output"] = {"dir": "runs/interrupted"}
    with pytest.raises(KeyboardInterrupt):
        run_lm(load_recipe(raw=raw), progress=False, console=False, stop_after_steps=3)
    assert not Path("runs/interrupted/student").exists()
    assert run_cli(raw, "--resume") == 0
    a = load_file(str(full.run_dir / "student" / "model.safetensors"))
    b = load_file("runs/interrupted/student/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = Path("runs/interrupted/run.log").read_text()
    assert "resumed after step 2 of 6" in log
    # the cache was built once and reused by the second run (same teacher, data, k, T)
    assert json.loads(Path("runs/interrupted/metrics.json").read_text())["signal"]["cache_dir"] == \
        full.metrics["signal"]["cache_dir"]  # fmt: skip


def test_existing_run_dir_needs_resume_or_overwrite(world: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    raw = recipe(world, train__steps=1)
    assert run_cli(raw) == 0
    assert run_cli(raw) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_cli(raw, "--overwrite") == 0


def test_vocab_mismatch_exits_2_with_a_clear_message(world: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    raw = recipe(world, data__tokenizer={"dir": str(world["other_tok"])})
    assert run_cli(raw) == 2
    err = capsys.readouterr().err
    assert "vocabularies differ" in err and "teacher's tokenizer" in err and "sequence" in err


def test_data_errors_exit_2(world: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    raw = recipe(world, data__path="missing.txt")
    assert run_cli(raw) == 2
    assert "text file not found" in capsys.readouterr().err
    Path("bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    raw = recipe(world, data__path="bad.jsonl")
    raw["data"].pop("separator")
    assert run_cli(raw, "--overwrite") == 2
    assert "line 2 is not valid JSON" in capsys.readouterr().err


def test_recipe_validation_messages(world: dict[str, Path]) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(raw=recipe(world, distill__loss="kll"))
    text = str(err.value)
    assert "unknown loss 'kll'" in text and "fkl" in text and "tvd" in text
    with pytest.raises(RecipeError, match="exactly one"):
        load_recipe(raw=recipe(world, teacher={"dir": "x", "model": {"layers": 1}}))
    with pytest.raises(RecipeError, match=r"params.alpha must be in \[0.0, 1.0\]"):
        load_recipe(raw=recipe(world, distill__loss="skew_fkl", distill__params={"alpha": 2}))
    with pytest.raises(RecipeError, match="exceed data.block_len"):
        load_recipe(raw=recipe(world, distill__mode="sequence", distill__gen_len=40))
    for loss in ("rkl", "jsd", "tvd"):
        with pytest.raises(RecipeError, match=f"loss '{loss}' on a sampled cache: only fkl.*Fix"):
            load_recipe(raw=recipe(world, distill__cache="sample", distill__loss=loss))
    with pytest.raises(RecipeError, match="a sampled cache has none"):
        load_recipe(raw=recipe(world, distill__cache="sample", distill__tail="unigram"))
    with pytest.raises(RecipeError, match="draws applies to the sampled offline cache only.*Fix"):
        load_recipe(raw=recipe(world, distill__draws="multinomial"))
    assert load_recipe(raw=recipe(world, distill__cache="sample", distill__draws="multinomial")).distill.draws == "multinomial"
    with pytest.raises(RecipeError, match="data.path"):
        load_recipe(raw={"task": "causal_lm", "data": {}, "teacher": {"dir": "x"}, "student": {"copy_layers": [0]}})


def test_example_and_shipped_recipes(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipe", "--example", "--task", "causal_lm"]) == 0
    assert "task: causal_lm" in capsys.readouterr().out
    shipped = sorted(p for p in resources.files("distill").joinpath("recipes").iterdir() if p.name.startswith("lm_"))
    assert len(shipped) == 4
    for p in shipped:
        r = load_recipe(Path(str(p)))
        assert r.task == "causal_lm" and p.name == f"lm_fortunes_{r.distill.mode}.yaml"
