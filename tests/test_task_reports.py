"""The reports of the embedding and causal-LM tasks: a real tiny run of each through the real CLI, then
report.html (and the LM student's model card) checked against the run's own numbers."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.cli import main
from distill.errors import RunDirError, UnsupportedError
from distill.tasks.embedding.report import write_embedding_report
from distill.tasks.causal_lm.report import write_lm_report
from tests.embed_helpers import SENTENCES, WORDS, make_tiny_sentence_model

LM_WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "small", "red", "blue", "house",
            "tree", "under", "over", "quickly", "slowly"]  # fmt: skip
PNG = "data:image/png;base64,"


def _run(raw: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--no-progress"]) == 0


def _no_classification_words(html: str) -> None:
    low = html.lower()
    assert "confusion" not in low and "image-classification" not in low


# ------------------------------------------------------------------ embedding
@pytest.fixture(scope="module")
def embed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished embedding run: a tiny BERT teacher, a layer student (trained 2 epochs) and a static one."""
    root = tmp_path_factory.mktemp("embed-report")
    teacher = make_tiny_sentence_model(root / "teacher")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(120)]
    (root / "corpus.txt").write_text("\n".join(lines))
    (root / "other.txt").write_text("\n".join(SENTENCES * 3))
    raw = {
        "task": "embedding", "name": "emb-report",
        "data": {"corpus": str(root / "corpus.txt"), "held_out": 60, "extra_eval": [str(root / "other.txt")],
                 "extra_eval_max": 40},
        "teacher": {"path": str(teacher), "license": "apache-2.0"},
        "students": [{"name": "l1", "kind": "layers", "layers": [1]},
                     {"name": "static", "kind": "static", "dim": 8, "pair_min_count": 2}],
        "train": {"epochs": 2, "batch_size": 16, "relational": 0.5},
        "eval": {"pairs": 200, "queries": 10, "speed_sentences": 32, "latency_sentences": 4},
        "export": {"onnx": False, "int8": False},
        "output": {"dir": str(root / "run"), "cache_dir": str(root / "cache")},  # report: on (the run writes it)
    }  # fmt: skip
    _run(raw, root / "recipe.yaml")
    return root / "run"


def _similarities_by_hand(run_dir: Path) -> dict[str, Any]:
    """similarities.json of the contract, from the saved teacher and students encoding the held-out text."""
    from distill.tasks.embedding.students import load_student, student_encoder
    from distill.tasks.embedding.texts import load_texts
    from distill.models.sentence import load_sentence_encoder
    from distill.core.recipes import validate_recipe
    from distill.tasks.embedding.metrics import pair_similarities

    recipe = validate_recipe(yaml.safe_load((run_dir / "recipe.yaml").read_text()), "recipe.yaml")
    held = load_texts(recipe).held
    teacher = load_sentence_encoder(recipe.teacher.path).encode(held, batch_size=64)
    models = {}
    for spec in recipe.students:
        folder = run_dir / "students" / spec.name
        encode = student_encoder(spec, load_student(spec, folder), folder)
        models[spec.name] = [round(float(v), 5) for v in pair_similarities(encode(held), n_pairs=150, seed=1)]
    pairs = [round(float(v), 5) for v in pair_similarities(teacher, n_pairs=150, seed=1)]
    return {"pairs": len(pairs), "teacher": pairs, "models": models}


def test_embedding_report_has_the_runs_numbers_plots_and_scatter(embed_run: Path, tmp_path: Path) -> None:
    html = (embed_run / "report.html").read_text()  # written by the run itself (output.report)
    assert "similarity scatter needs" not in html and "teacher cosine similarity against student" in html
    run = tmp_path / "run"
    shutil.copytree(embed_run, run)
    (run / "similarities.json").unlink()
    assert write_embedding_report(run) == [run / "report.html"]
    html = (run / "report.html").read_text()
    rows = json.loads((run / "comparison.json").read_text())["models"]
    assert [r["name"] for r in rows] == ["teacher (teacher)", "l1", "static"]
    for r in rows:
        assert f"<td>{r['name']}</td>" in html
        extra = next(v for k, v in r.items() if k.startswith("extra:"))  # the other.txt columns
        for cell in (f"{r['params']:,}", f"{r['speed_b64']:,.0f}", f"{r['speed_b1']:,.0f}", f"{r['speedup_b64']:.1f}×",
                     f"{r['cosine']:.3f}", f"{r['spearman']:.3f}", f"{r['topk']:.3f}", f"{extra['spearman']:.3f}"):  # fmt: skip
            assert f"<td>{cell}</td>" in html, (r["name"], cell)
    assert "Spearman (other.txt)" in html and "top-10" in html
    assert html.count(PNG) == 3  # quality vs speed, quality vs size, the training curves of l1
    assert "training loss per epoch of l1" in html and "static (static): no per-epoch history" in html
    assert "needs similarities.json" in html  # one sentence instead of the scatter
    assert "apache-2.0" in html and "is permissive" in html and "kind: layers" in html  # licence, exact recipe
    _no_classification_words(html)

    sim = _similarities_by_hand(run)
    (run / "similarities.json").write_text(json.dumps(sim))
    write_embedding_report(run)
    html = (run / "report.html").read_text()
    assert html.count(PNG) == 4 and "needs similarities.json" not in html
    assert "teacher cosine similarity against student cosine similarity of 150 held-out sentence pairs" in html
    # a student missing from the contract's lengths is named, not fatal
    sim["models"]["static"] = sim["models"]["static"][:10]
    (run / "similarities.json").write_text(json.dumps(sim))
    write_embedding_report(run)
    assert "Left out (not 150 finite values like the teacher): static." in (run / "report.html").read_text()


def test_embedding_report_tolerates_an_older_run_directory(embed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "old"
    shutil.copytree(embed_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("rows", "models", "teacher", "sentences", "torch", "platform"):
        metrics.pop(key, None)
    (run / "metrics.json").write_text(json.dumps(metrics))
    train = json.loads((run / "students" / "l1.train.json").read_text())
    train.pop("history")
    (run / "students" / "l1.train.json").write_text(json.dumps(train))
    for name in ("similarities.json", "recipe.yaml"):
        (run / name).unlink()
    html = (run / write_embedding_report(run)[0]).read_text()
    assert "<td>static</td>" in html  # rows from comparison.json
    assert "No student recorded a per-epoch history." in html and "needs similarities.json" in html
    assert "The run directory has no recipe.yaml." in html and "licence is unknown" in html


# ------------------------------------------------------------------------ LM
@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished offline (top-k cache) LM run with a baseline: a tiny GPT-2 teacher, a 1-layer student."""
    from distill.tasks.causal_lm.text import train_tokenizer
    from distill.tasks.causal_lm.models import build_causal_lm

    root = tmp_path_factory.mktemp("lm-report")
    r = random.Random(0)
    docs = [" ".join(r.choice(LM_WORDS) for _ in range(r.randint(5, 20))).capitalize() + "." for _ in range(160)]
    (root / "corpus.txt").write_text("\n%\n".join(docs) + "\n")
    tok = train_tokenizer(docs, 300)
    teacher = build_causal_lm(vocab_size=len(tok), layers=2, width=16, heads=2, context=32,
                              eos_token_id=tok.eos_token_id, seed=0)  # fmt: skip
    teacher.save_pretrained(str(root / "teacher"))
    tok.save_pretrained(str(root / "teacher"))
    raw = {
        "task": "causal_lm", "name": "lm-report",
        "data": {"path": str(root / "corpus.txt"), "separator": "%", "block_len": 32, "val_fraction": 0.1},
        "teacher": {"dir": str(root / "teacher"), "name": "tiny-gpt2", "license": "mit"},
        "student": {"model": {"layers": 1, "width": 16, "heads": 2}},
        "distill": {"mode": "offline", "loss": "fkl", "temperature": 2.0},
        "train": {"steps": 4, "batch_size": 4, "grad_accum": 2, "checkpoint_every": 2, "log_every": 2},
        "eval": {"max_blocks": 4, "samples": 1, "sample_len": 4, "speed_batches": 1, "batch_size": 4, "baseline": True},
        "output": {"dir": str(root / "run"), "cache_dir": str(root / "cache"), "report": False},
    }  # fmt: skip
    _run(raw, root / "recipe.yaml")
    return root / "run"


def test_lm_report_and_student_card(lm_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    assert write_lm_report(run) == [run / "report.html", run / "student" / "README.md"]
    html = (run / "report.html").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    rows = json.loads((run / "comparison.json").read_text())["models"]
    assert [r["model"] for r in rows] == ["teacher", "student", "baseline"]
    for r in rows:
        for cell in (f"{r['params']:,}", f"{r['perplexity']:.2f}", f"{100 * r['top1']:.2f}%", f"{100 * r['top3']:.2f}%",
                     f"{100 * r['top1_retention']:.1f}%", f"{100 * r['compute_share']:.1f}%", f"{r['tokens_per_s']:,.0f}"):  # fmt: skip
            assert f"<td>{cell}</td>" in html, (r["model"], cell)
    assert f"<td>{metrics['val_true_kl']['student']:.4f}</td>" in html
    assert html.count(PNG) == 2  # the perplexity/top-1 bars, the training curves
    assert "for student, baseline" in html and "The teacher was loaded, not trained here" in html
    sig = metrics["signal"]
    assert f"{sig['cache_bytes'] / 1e6:.2f} MB" in html and "topk-32" in html and "temperature 2" in html
    prompt = metrics["samples"][0]["prompt"]
    assert "Prompt 1:" in html and prompt.split()[0] in html and "student (greedy)" in html
    assert "tiny-gpt2" in html and "mit" in html and "mode: offline" in html
    _no_classification_words(html)

    card = (run / "student" / "README.md").read_text()
    m = re.match(r"---\n(.*?)\n---\n", card, re.DOTALL)
    assert m, card[:200]
    front = yaml.safe_load(m.group(1))
    assert front["pipeline_tag"] == "text-generation" and front["library_name"] == "transformers"
    assert front["license"] == "mit" and "distillation" in front["tags"]
    assert "tiny-gpt2" in card and "AutoModelForCausalLM.from_pretrained(folder)" in card
    assert f"{rows[1]['perplexity']:.2f}" in card and f"{metrics['data']['train_blocks']:,} training blocks" in card
    assert "temperature: 2" in card and "token loss: fkl" in card
    _no_classification_words(card)

    # the CLI's `distill report` reaches the same function for this task
    assert main(["report", str(run)]) == 0


def test_lm_report_tolerates_an_older_run_directory(lm_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "old"
    shutil.copytree(lm_run, run, ignore=shutil.ignore_patterns("history", "checkpoints"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("task", "history", "samples", "signal", "val_true_kl", "train_seconds", "data", "teacher"):
        metrics.pop(key)
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "recipe.yaml").unlink()
    report, card = write_lm_report(run)
    html = report.read_text()
    assert "No training history was recorded" in html and "The run recorded no samples" in html
    assert html.count(PNG) == 1 and "licence is unknown" in html
    front = yaml.safe_load(re.match(r"---\n(.*?)\n---\n", card.read_text(), re.DOTALL).group(1))
    assert front["pipeline_tag"] == "text-generation" and "license" not in front


# --------------------------------------------------------------------- errors
def test_reports_refuse_a_folder_without_metrics_or_of_another_task(lm_run: Path, embed_run: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    empty = tmp_path / "unfinished"
    empty.mkdir()
    for write in (write_embedding_report, write_lm_report):
        with pytest.raises(RunDirError, match=r"has no metrics\.json.*Fix: finish it with `distill run RECIPE --resume"):
            write(empty)
    with pytest.raises(RunDirError, match="run directory not found"):
        write_lm_report(tmp_path / "nowhere")
    with pytest.raises(UnsupportedError, match="is a causal_lm run.*`distill report RUN_DIR`"):
        write_embedding_report(lm_run)
    with pytest.raises(UnsupportedError, match="is an embedding run"):
        write_lm_report(embed_run)
