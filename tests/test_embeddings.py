"""Sentence-embedding distillation on a tiny random BERT (offline, seconds): corpora, students, metrics,
the run through the real CLI, ONNX export, errors."""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distill.cli import main
from distill.data.corpus import dedupe, read_corpus, read_sts, split_corpus
from distill.errors import DataError, ModelError, RecipeError
from distill.models.sentence import (
    layer_selected_student,
    load_sentence_encoder,
    narrow_student,
    save_sentence_encoder,
)
from distill.core.recipes import load_recipe, validate_recipe
from distill.losses.embedding import attention_loss, cosine_loss, hidden_loss, relational_loss
from distill.tasks.embedding.metrics import (
    mean_cosine,
    quality,
    retrieval_agreement,
    similarity_spearman,
    spearman,
    sts_spearman,
)
from tests.embed_helpers import SENTENCES, WORDS, make_tiny_sentence_model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sentence_model(tmp_path_factory.mktemp("st") / "teacher")


def corpus_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


# ----------------------------------------------------------------- metrics
def test_identical_models_score_one() -> None:
    e = np.random.default_rng(0).normal(size=(120, 8))
    q = quality(e, e.copy(), n_pairs=300, n_queries=30, k=5)
    assert q["cosine"] == pytest.approx(1.0) and q["spearman"] == pytest.approx(1.0) and q["top5"] == 1.0


def test_metrics_on_hand_made_cases() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(size=(200, 16))
    # a rotation keeps every cosine between sentences: perfect agreement, but cosine to the teacher is not 1
    rot, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert similarity_spearman(t @ rot, t) == pytest.approx(1.0)
    assert retrieval_agreement(t @ rot, t, n_queries=50, k=10) == 1.0
    assert mean_cosine(t @ rot, t) < 0.5
    assert mean_cosine(t[:, :8], t) is None  # other dimension: undefined, not a wrong number
    noise = rng.normal(size=(200, 16))
    assert abs(similarity_spearman(noise, t)) < 0.1 and retrieval_agreement(noise, t, n_queries=50, k=10) < 0.2
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 2.0]), np.array([1, 1, 2.0])) == pytest.approx(1.0)  # ties averaged
    gold = (t[:50] * t[50:100]).sum(1) / np.linalg.norm(t[:50], axis=1) / np.linalg.norm(t[50:100], axis=1)
    assert sts_spearman(t[:50], t[50:100], gold) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least"):
        retrieval_agreement(t[:5], t[:5], n_queries=10, k=10)


def test_losses_are_zero_on_identical_inputs_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6) and cosine_loss(a, b).item() > 0
    rot, _ = torch.linalg.qr(torch.randn(8, 8))
    assert relational_loss(a @ rot, a).item() == pytest.approx(0.0, abs=1e-6)  # only relations count
    assert relational_loss(b, a).item() > 0
    h, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert hidden_loss(h, h, mask).item() == pytest.approx(0.0)
    h2 = h.clone()
    h2[0, 4] += 100  # a padding position: ignored
    assert hidden_loss(h2, h, mask).item() == pytest.approx(0.0)
    att = torch.softmax(torch.randn(2, 2, 5, 5), -1)
    assert attention_loss(att, att, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss(torch.softmax(torch.randn(2, 3, 5, 5), -1), att, mask).item() > 0  # other head count


# ------------------------------------------------------------------ corpus
def test_corpus_formats_dedupe_and_split(tmp_path: Path) -> None:
    lines = ["a cat", "a dog", "  a cat ", "", "the sun"]
    (tmp_path / "c.txt").write_text("\n".join(lines))
    assert read_corpus(tmp_path / "c.txt") == ["a cat", "a dog", "the sun"]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in lines))
    assert read_corpus(tmp_path / "c.jsonl", column="body") == ["a cat", "a dog", "the sun"]
    import pandas as pd

    pd.DataFrame({"text": lines}).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"text": lines}).to_parquet(tmp_path / "c.parquet")
    assert read_corpus(tmp_path / "c.csv") == read_corpus(tmp_path / "c.parquet") == ["a cat", "a dog", "the sun"]
    import datasets

    datasets.Dataset.from_dict({"text": lines}).save_to_disk(str(tmp_path / "ds"))
    assert read_corpus(tmp_path / "ds") == ["a cat", "a dog", "the sun"]
    train, held = split_corpus([f"s{i}" for i in range(100)], 20, seed=3)
    assert len(held) == 20 and not set(train) & set(held) and split_corpus([f"s{i}" for i in range(100)], 20, seed=3)[1] == held
    assert len(split_corpus([f"s{i}" for i in range(100)], 0.1, seed=0)[1]) == 10
    assert dedupe(["x  y", "x y", "z"]) == ["x y", "z"]


def test_builtin_python_docs_corpus_is_real_english() -> None:
    texts = read_corpus("builtin:python-docs")
    assert len(texts) > 5000 and all(t[0].isupper() for t in texts[:100])


def test_wordnet_corpus_reads_definitions_and_examples(tmp_path: Path) -> None:
    """WordNet's data files (licence lines start with spaces; a synset's gloss follows '|')."""
    head = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    (tmp_path / "data.verb").write_text(
        head + "00001740 29 v 04 breathe 0 take_a_breath 0 021 * 00005041 v 0000 | draw air into, and expel out of, "
        'the lungs; "I can breathe better when the air is clean"; "The patient is respiring"  \n'
        "00002325 29 v 01 respire 1 005 $ 00001740 v 0000 | undergo respiration  \n"
    )
    for pos in ("noun", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(head + f"00000001 00 {pos[0]} 01 word 0 000 | a {pos} gloss; " + '"The patient is respiring"\n')
    from distill.data.corpus import wordnet_sentences

    assert wordnet_sentences(tmp_path) == [
        "The patient is respiring", "I can breathe better when the air is clean",  # examples first, files in order
        "a noun gloss", "draw air into, and expel out of, the lungs", "undergo respiration", "a adj gloss", "a adv gloss",
    ]  # fmt: skip
    (tmp_path / "data.adv").unlink()
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        wordnet_sentences(tmp_path)


def test_extra_train_corpora_join_training_but_never_the_held_out_text(tmp_path: Path) -> None:
    from distill.tasks.embedding.texts import load_texts
    from distill.tasks.embedding.recipe import EmbeddingRecipe

    main_lines = [f"main sentence {i}" for i in range(50)]
    (tmp_path / "main.txt").write_text("\n".join(main_lines))
    (tmp_path / "other.txt").write_text("\n".join(f"other sentence {i}" for i in range(30)))
    # the extra corpus repeats every main sentence and every 'other' one: the held-out ones must be dropped
    (tmp_path / "more.txt").write_text("\n".join([f"more sentence {i}" for i in range(40)] + main_lines
                                                 + [f"other sentence {i}" for i in range(30)]))  # fmt: skip
    data = {"corpus": str(tmp_path / "main.txt"), "held_out": 10, "extra_eval": [str(tmp_path / "other.txt")],
            "extra_eval_max": 5, "extra_train": [str(tmp_path / "more.txt")]}  # fmt: skip
    rec = EmbeddingRecipe.model_validate({"task": "embedding", "data": data, "students": [{"name": "s", "kind": "static", "dim": 4}]})
    t = load_texts(rec)
    unseen = set(t.held) | set(t.extra[str(tmp_path / "other.txt")])
    assert len(t.held) == 10 and not unseen & set(t.train) and len(t.train) == len(set(t.train))
    assert sum(x.startswith("more") for x in t.train) == 40 and sum(x.startswith("main") for x in t.train) == 40
    rec = EmbeddingRecipe.model_validate(
        {"task": "embedding", "data": {**data, "extra_train_max": 7}, "students": [{"name": "s", "kind": "static", "dim": 4}]}
    )
    assert len(load_texts(rec).train) == 40 + 7


def test_augmented_variants_are_seeded_new_and_never_the_held_out_text(tmp_path: Path) -> None:
    from distill.data.augment import augment_texts
    from distill.tasks.embedding.texts import load_texts
    from distill.tasks.embedding.recipe import EmbeddingRecipe

    texts = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(40)]
    drops = augment_texts(texts, 1, 0, kinds=["drop"])
    assert drops == augment_texts(texts, 1, 0, kinds=["drop"]) and drops != augment_texts(texts, 1, 1, kinds=["drop"])

    def subsequence(short: list[str], full: list[str]) -> bool:
        it = iter(full)
        return all(w in it for w in short)

    assert drops and all(any(subsequence(v.split(), t.split()) for t in texts) and len(v.split()) < 11 for v in drops)
    for v in augment_texts(texts, 2, 0, kinds=["crop"]):  # a contiguous span of at least half the words
        assert len(v.split()) >= 6 and any(v in t for t in texts)
    concat = augment_texts(texts, 1, 0, kinds=["concat"])
    assert concat and all(len(v.split()) == 22 for v in concat)
    both = augment_texts(texts, 3, 0)
    assert len(both) == len(set(both)) and not set(both) & set(texts) and len(both) > 60
    assert not set(augment_texts(texts, 1, 0, kinds=["concat"], exclude=concat[:5])) & set(concat[:5])
    with pytest.raises(DataError, match="unknown augmentation"):
        augment_texts(texts, 1, 0, kinds=["shuffle"])
    # through the recipe: variants of the training text only, none equal to a held-out sentence
    (tmp_path / "c.txt").write_text("\n".join(texts))
    data = {"corpus": str(tmp_path / "c.txt"), "held_out": 10, "augment": 2, "augment_kinds": ["drop", "crop"]}
    t = load_texts(EmbeddingRecipe.model_validate({"task": "embedding", "data": data,
                                                   "students": [{"name": "s", "kind": "static", "dim": 4}]}))  # fmt: skip
    assert len(t.augmented) > 30 and not set(t.augmented) & (set(t.held) | set(t.train))
    assert all(any(subsequence(v.split(), x.split()) for x in t.train) for v in t.augmented)  # never from held-out text
    with pytest.raises(RecipeError, match="augment_kinds"):
        validate_recipe({"task": "embedding", "data": {"augment_kinds": ["shuffle"]}})


def test_corpus_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no text"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        read_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "c.csv").write_text("body\nhello\n")
    with pytest.raises(DataError, match="no column 'text'.*body"):
        read_corpus(tmp_path / "c.csv")
    with pytest.raises(DataError, match="unknown built-in"):
        read_corpus("builtin:nope")
    with pytest.raises(DataError, match="cannot hold out"):
        split_corpus(["a", "b"], 5, seed=0)
    (tmp_path / "sts.csv").write_text("sentence1,sentence2\na,b\n")
    with pytest.raises(DataError, match="score"):
        read_sts(tmp_path / "sts.csv")


# ---------------------------------------------------------------- students
def test_teacher_matches_sentence_transformers(teacher_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ours = load_sentence_encoder(teacher_dir).encode(SENTENCES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = SentenceTransformer(str(teacher_dir), device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # Normalize module honoured
    # a bare str is one text (not one per character), as sentence-transformers takes it; a non-str is refused
    encoder = load_sentence_encoder(teacher_dir)
    np.testing.assert_allclose(encoder.encode(SENTENCES[0]), ours[:1], atol=1e-6)
    with pytest.raises(TypeError, match=r"texts\[1\] is a NoneType"):
        encoder.encode([SENTENCES[0], None])


def test_layer_selection_keeps_teacher_weights(teacher_dir: Path) -> None:
    teacher = load_sentence_encoder(teacher_dir)
    student = layer_selected_student(teacher, [1])
    assert student.num_layers == 1 and teacher.num_layers == 2
    t_block = teacher.backbone.encoder.layer[1].state_dict()
    for k, v in student.backbone.encoder.layer[0].state_dict().items():
        assert torch.equal(v, t_block[k])
    with pytest.raises(ModelError, match=r"layers 0\.\.1"):
        layer_selected_student(teacher, [0, 7])


def test_narrow_student_embeddings_come_from_pca(teacher_dir: Path) -> None:
    teacher = load_sentence_encoder(teacher_dir)
    student = narrow_student(teacher, layers=1, hidden=8, heads=2)
    assert student.hidden_size == 8 and student.dim == teacher.dim
    t_emb = teacher.backbone.get_input_embeddings().weight.detach()
    s_emb = student.backbone.get_input_embeddings().weight.detach()
    # PCA scores: centred, and their first component holds the most variance of any direction
    assert torch.allclose(s_emb.mean(0), torch.zeros(8), atol=1e-5)
    assert s_emb.var(0)[0] >= s_emb.var(0)[-1] and s_emb.var(0).sum() <= t_emb.var(0).sum() + 1e-5
    with pytest.raises(ModelError, match="multiple of heads"):
        narrow_student(teacher, layers=1, hidden=9, heads=2)


@pytest.mark.parametrize("kind", ["layers", "narrow"])
def test_transformer_student_saves_and_reloads_identically(teacher_dir: Path, tmp_path: Path, kind: str) -> None:
    from sentence_transformers import SentenceTransformer

    teacher = load_sentence_encoder(teacher_dir)
    student = layer_selected_student(teacher, [0]) if kind == "layers" else narrow_student(teacher, layers=1, hidden=8, heads=2)
    out = save_sentence_encoder(student, tmp_path / "s")
    again = load_sentence_encoder(out).encode(SENTENCES)
    np.testing.assert_array_equal(student.encode(SENTENCES), again)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        np.testing.assert_allclose(SentenceTransformer(str(out), device="cpu").encode(SENTENCES), again, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fit_encoder_lowers_the_loss_with_every_term(teacher_dir: Path, tmp_path: Path, precision: str) -> None:
    from distill.tasks.embedding.training import fit_encoder
    from distill.tasks.embedding.recipe import EmbedTrainConfig

    teacher = load_sentence_encoder(teacher_dir)
    texts = corpus_lines(64)
    targets = teacher.encode(texts)
    student = narrow_student(teacher, layers=1, hidden=8, heads=2)
    cfg = EmbedTrainConfig(epochs=4, batch_size=16, lr=3e-3, mse=1.0, relational=1.0, hidden=0.5, attention=0.5,
                           precision=precision)  # fmt: skip
    fit = fit_encoder(student, texts, targets, cfg, kind="narrow", teacher=teacher, checkpoint=tmp_path / "ck.pt", progress=False)
    assert fit.epochs_done == 4 and fit.history[-1]["loss"] < fit.history[0]["loss"]
    assert (tmp_path / "ck.pt").exists()
    # bf16 is the arithmetic of the steps only: the student stays float32
    assert all(p.dtype == torch.float32 for p in student.parameters()) and student.encode(texts).dtype == np.float32


def test_throughput_takes_the_median_of_repeated_passes() -> None:
    import time as _time

    from distill.bench.rates import sentences_per_second

    calls: list[int] = []

    def fast(xs: list[str]) -> None:  # ~1 ms a call: many passes fit in the budget
        calls.append(len(xs))
        _time.sleep(0.001)

    texts = [f"s{i}" for i in range(40)]
    rate = sentences_per_second(fast, texts, 10, min_seconds=0.1)
    passes = (len(calls) - 1) // 4  # the warm-up is one call of 20
    assert passes >= 5 and 40 / 0.004 / 3 < rate < 40 / 0.004 * 1.05

    slow_calls: list[int] = []

    def slow(xs: list[str]) -> None:  # one pass is longer than the budget: timed once
        slow_calls.append(len(xs))
        _time.sleep(0.06)

    sentences_per_second(slow, texts, 20, min_seconds=0.1)
    assert len(slow_calls) == 1 + 2  # warm-up, then one pass of two calls


def test_side_by_side_rates_interleave_the_models_round_by_round() -> None:
    import time as _time

    from distill.bench.rates import side_by_side_rates

    log: list[str] = []

    def model(name: str, seconds: float) -> Callable[[list[str]], None]:
        def encode(xs: list[str]) -> None:
            log.append(name)
            _time.sleep(seconds)

        return encode

    texts = [f"s{i}" for i in range(8)]
    rates = side_by_side_rates({"slow": model("slow", 0.02), "fast": model("fast", 0.005)}, texts, 8, rounds=3,
                               min_seconds=0.03)  # fmt: skip
    assert log[:2] == ["slow", "fast"]  # a warm-up call each
    runs = [name for i, name in enumerate(log[2:]) if i == 0 or log[2:][i - 1] != name]
    assert runs == ["slow", "fast"] * 3  # each round times every model in turn
    assert log.count("slow") - 1 >= 3 and log.count("fast") - 1 > log.count("slow") - 1  # fast: more passes a round
    assert 2.0 < rates["fast"] / rates["slow"] < 5.0  # 4x by construction, within sleep's jitter


def test_lr_schedule_warms_up_then_anneals_by_steps_or_by_the_time_budget() -> None:
    from distill.core.optim import warmup_linear_decay as lr_factor

    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5) and lr_factor(100, 100, 10) == 0.0
    # a time cap that will end the run at step ~50 of 100: the rate follows the clock down to 0 there
    assert lr_factor(20, 100, 10, spent=0.55) == pytest.approx(0.5)
    assert lr_factor(20, 100, 10, spent=1.0) == 0.0
    assert lr_factor(80, 100, 10, spent=0.1) == lr_factor(80, 100, 10)  # steps further along: they decide


def test_fit_encoder_resume_is_exact(teacher_dir: Path, tmp_path: Path) -> None:
    from distill.tasks.embedding.training import fit_encoder
    from distill.tasks.embedding.recipe import EmbedTrainConfig

    teacher = load_sentence_encoder(teacher_dir)
    texts = corpus_lines(48, seed=2)
    targets = teacher.encode(texts)
    full = layer_selected_student(teacher, [1])
    fit_encoder(full, texts, targets, EmbedTrainConfig(epochs=2, batch_size=16), kind="layers", progress=False)
    part = layer_selected_student(teacher, [1])
    ck = tmp_path / "ck.pt"
    calls = []

    def kill(*_: object) -> None:  # interrupt in the middle of epoch 2 (3 batches an epoch)
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt

    part.backbone.register_forward_hook(kill)
    with pytest.raises(KeyboardInterrupt):
        fit_encoder(part, texts, targets, EmbedTrainConfig(epochs=2, batch_size=16), kind="layers", checkpoint=ck, progress=False)
    resumed = layer_selected_student(teacher, [1])
    fit_encoder(resumed, texts, targets, EmbedTrainConfig(epochs=2, batch_size=16), kind="layers", checkpoint=ck,
                resume=True, progress=False)  # fmt: skip
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


# ------------------------------------------------------------- end to end
def _recipe(teacher_dir: Path, corpus: Path, **over: object) -> dict:
    raw = {
        "task": "embedding", "name": "emb",
        "data": {"corpus": str(corpus), "held_out": 60, "extra_eval": [str(corpus.parent / "other.txt")], "extra_eval_max": 40},
        "teacher": {"path": str(teacher_dir), "license": "apache-2.0"},
        "students": [
            {"name": "l1", "kind": "layers", "layers": [1]},
            {"name": "narrow", "kind": "narrow", "num_layers": 1, "hidden": 8, "heads": 2,
             "train": {"epochs": 1, "batch_size": 16, "relational": 0.5, "precision": "bf16", "num_threads": 1}},
            {"name": "static", "kind": "static", "dim": 8, "pair_min_count": 2},
            {"name": "static-ctx", "kind": "static", "dim": 8, "init": "context", "finetune": False, "anchor": False,
             "save_dtype": "float16"},
        ],
        "train": {"epochs": 1, "batch_size": 16, "relational": 0.5},
        "eval": {"pairs": 200, "queries": 10, "speed_sentences": 32, "latency_sentences": 4},
    }  # fmt: skip
    raw.update(over)
    return raw


def test_transformer_students_train_on_augmented_variants_and_static_ones_do_not(teacher_dir: Path, tmp_path: Path) -> None:
    import math

    from distill.tasks.embedding.pipeline import run_embedding
    from distill.tasks.embedding.texts import load_texts
    from distill.tasks.embedding.recipe import EmbeddingRecipe

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(120)))
    (tmp_path / "other.txt").write_text("\n".join(SENTENCES * 3 + corpus_lines(60, seed=9)))
    raw = _recipe(teacher_dir, corpus, output={"dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")},
                  export={"onnx": False, "int8": False})  # fmt: skip
    raw["data"]["augment"] = 1
    raw["students"] = [raw["students"][0], raw["students"][2]]  # l1 (layers) and static
    rec = EmbeddingRecipe.model_validate(raw)
    texts = load_texts(rec)
    assert texts.augmented
    run_embedding(rec, progress=False, console=False)
    steps = json.loads((tmp_path / "run/students/l1.train.json").read_text())["steps"]
    assert steps == math.ceil((len(texts.train) + len(texts.augmented)) / 16)
    assert "teacher embeddings of the augmented text" in (tmp_path / "run/run.log").read_text()
    # a recipe whose only students are static ones never pays the teacher for the variants
    raw["students"] = [raw["students"][1]]
    raw["output"] = {"dir": str(tmp_path / "run2"), "cache_dir": str(tmp_path / "cache2")}
    run_embedding(EmbeddingRecipe.model_validate(raw), progress=False, console=False)
    assert "augmented text" not in (tmp_path / "run2/run.log").read_text()


def test_training_precision_is_checked_where_it_applies() -> None:
    from distill.tasks.embedding.recipe import EmbedStudentConfig, EmbedTrainConfig

    with pytest.raises(ValueError, match="precision"):
        EmbedTrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="transformer students"):  # not silently ignored
        EmbedStudentConfig(name="s", kind="static", train=EmbedTrainConfig(precision="bf16"))


def test_distill_run_embedding_end_to_end(teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(260)))
    (tmp_path / "other.txt").write_text("\n".join(SENTENCES * 3 + corpus_lines(60, seed=9)))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_recipe(teacher_dir, corpus)))
    threads = torch.get_num_threads()
    assert main(["run", str(tmp_path / "r.yaml"), "--no-progress", "-q"]) == 0
    assert torch.get_num_threads() == threads  # a student's train.num_threads is undone after it trains
    out = capsys.readouterr().out
    assert "| l1 | layers |" in out and "| static | static |" in out and "Spearman (" in out
    run = Path("runs/emb")
    rows = json.loads((run / "comparison.json").read_text())["models"]
    assert [r["name"] for r in rows][1:] == ["l1", "narrow", "static", "static-ctx"]
    assert all(0 <= r["topk"] <= 1 and -1 <= r["spearman"] <= 1 and r["speed_b64"] > 0 for r in rows)
    assert rows[0]["spearman"] == pytest.approx(1.0)
    l1 = rows[1]
    assert l1["onnx"]["max_abs_diff"] < 1e-4 and l1["onnx"]["int8"]["cosine"] >= 0.98
    assert (run / "students/l1/onnx/model.onnx").exists()
    # sizes as finally written: the model's folder, and with its ONNX files; train time counts the build too
    assert l1["size_bytes_with_onnx"] > l1["size_bytes"] > 0
    assert "| with ONNX |" in (run / "comparison.md").read_text()
    ctx = rows[4]  # static-ctx: no fine-tuning, its time is the table's build
    assert ctx["fit_seconds"] == 0.0 and ctx["train_seconds"] == ctx["build_seconds"] > 0
    assert "The teacher's pass over the training text, done once and shared by every student" in out
    card = (run / "students/l1/README.md").read_text()
    assert "teacher **teacher**" in card and "apache-2.0" in card and "may breach its terms" in card
    assert "- kind: layers (layers=[1], ffn_keep=1.0, heads_keep=1.0)" in card
    assert re.search(r"cosine \d\.\d{3}, Spearman agreement -?\d\.\d{3}, top-10 retrieval agreement \d\.\d{3}\n", card)
    static_card = (run / "students/static/README.md").read_text()
    assert "- kind: static (dim=8, weighting=sif, init=token, extend_vocab=0, anchor=True, pair_min_count=2, save_dtype=float32, finetune=True)" in static_card
    # a static student has the anchor row unless its recipe turns it off; pair rows only when it asks
    configs = [json.loads((run / f"students/{n}/config.json").read_text()) for n in ("static", "static-ctx")]
    assert [c["anchor"] for c in configs] == [True, False]
    assert configs[0]["pairs"] > 0 and configs[1]["pairs"] == 0 and configs[0]["version"] == 4 and configs[0]["pair_bounds"]
    assert [c["embedding_dtype"] for c in configs] == ["float32", "float16"]  # save_dtype reaches the folder
    # the students reload to the embeddings the run measured
    again = load_sentence_encoder(run / "students/l1").encode(SENTENCES)
    assert again.shape == (len(SENTENCES), 16)
    # resume: nothing left to do, the same table
    assert main(["run", str(tmp_path / "r.yaml"), "--no-progress", "-q", "--resume"]) == 0
    # an existing run directory is not overwritten silently
    assert main(["run", str(tmp_path / "r.yaml"), "--no-progress", "-q"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_head_pruned_layers_student_trains_exports_and_reloads(teacher_dir: Path, tmp_path: Path) -> None:
    from distill.compress import head_counts

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(200)))
    (tmp_path / "other.txt").write_text("\n".join(SENTENCES * 3))
    raw = _recipe(teacher_dir, corpus, name="emb-heads",
                  students=[{"name": "l1h", "kind": "layers", "layers": [1], "heads_keep": 0.5}])  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "r.yaml"), "--no-progress", "-q"]) == 0
    run = Path("runs/emb-heads")
    row = json.loads((run / "comparison.json").read_text())["models"][1]
    assert row["onnx"]["max_abs_diff"] < 1e-4
    student = load_sentence_encoder(run / "students/l1h")
    teacher = load_sentence_encoder(teacher_dir)
    assert list(head_counts(student).values()) == [max(1, next(iter(head_counts(teacher).values())) // 2)]
    assert "load_sentence_encoder" in (run / "students/l1h/README.md").read_text()


def test_embedding_recipe_errors_are_collected(teacher_dir: Path, tmp_path: Path) -> None:
    raw = _recipe(teacher_dir, tmp_path / "c.txt", students=[
        {"name": "a", "kind": "layers"}, {"name": "a", "kind": "narrow", "hidden": 9, "heads": 2, "num_layers": 1},
        {"name": "b", "kind": "static", "dims": 3},
    ])  # fmt: skip
    with pytest.raises(RecipeError) as err:
        load_recipe(raw=raw)
    text = str(err.value)
    assert "needs `layers`" in text and "multiple of heads" in text and "dims" in text and "did you mean 'dim'" in text
    with pytest.raises(RecipeError, match="task must be one of"):
        load_recipe(raw={"task": "regression"})


def test_recipe_example_and_fields_for_embedding(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipe", "--example", "--task", "embedding"]) == 0
    text = capsys.readouterr().out
    assert load_recipe(raw=yaml.safe_load(text)).task == "embedding"
    assert main(["recipe", "--fields", "--task", "embedding"]) == 0
    assert "`students`" in capsys.readouterr().out


def test_missing_teacher_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(corpus_lines(100)))
    (tmp_path / "other.txt").write_text("\n".join(corpus_lines(50, seed=4)))
    raw = _recipe(tmp_path / "nope", corpus)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "r.yaml"), "--no-progress"]) == 2
    assert "sentence encoder folder not found" in capsys.readouterr().err
    assert not Path("runs/emb").exists()  # nothing to clean up before running again


def test_contextual_token_vectors_are_the_teacher_pass(teacher_dir: Path) -> None:
    from distill.tasks.embedding.static_build import build_static, contextual_token_vectors

    teacher = load_sentence_encoder(teacher_dir)
    texts = corpus_lines(40, seed=3)
    emb, sums, counts = contextual_token_vectors(teacher, texts, batch_size=16, progress=False)
    np.testing.assert_allclose(emb, teacher.encode(texts), atol=1e-5)
    n_tokens = sum(len(x) for x in teacher.tokenizer(texts)["input_ids"])  # specials included, as the teacher pools
    assert counts.sum() == n_tokens and sums.shape == (teacher.tokenizer.vocab_size, teacher.hidden_size)
    static = build_static(teacher, dim=8, weighting="none", corpus=texts, progress=False, context=(sums, counts))
    untrained = build_static(teacher, dim=8, weighting="none", corpus=texts, progress=False)
    # starting from the teacher's tokens in context is closer to the teacher than one token at a time
    assert quality(static.encode(texts), emb, n_pairs=300, n_queries=5)["cosine"] > quality(
        untrained.encode(texts), emb, n_pairs=300, n_queries=5)["cosine"]


def test_teacher_caches_compute_once_and_recompute_when_stale(teacher_dir: Path, tmp_path: Path) -> None:
    from distill.tasks.embedding.cache import cached_context, cached_embeddings, teacher_fingerprint

    teacher = load_sentence_encoder(teacher_dir)
    fp = teacher_fingerprint(teacher_dir, teacher)
    calls: list[int] = []

    def encode(xs: list[str]) -> np.ndarray:
        calls.append(len(xs))
        return teacher.encode(xs)

    first = cached_embeddings(encode, SENTENCES, tmp_path, fp, "test")
    again = cached_embeddings(encode, SENTENCES, tmp_path, fp, "test")
    assert calls == [len(SENTENCES)] and np.array_equal(first, again)
    (path,) = (tmp_path / "embeddings").glob("*.npy")
    np.save(path, first[:1])  # a stale file of the wrong length is recomputed, not trusted
    assert np.array_equal(cached_embeddings(encode, SENTENCES, tmp_path, fp, "test"), first) and len(calls) == 2
    ctx = cached_context(teacher, SENTENCES, tmp_path, fp, batch_size=4, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(ctx, cached_context(teacher, SENTENCES, tmp_path, fp, batch_size=4,
                                                                         progress=False), strict=True))  # fmt: skip
    assert ctx[0].shape[0] == len(SENTENCES) and len(list((tmp_path / "embeddings").glob("*.context.npz"))) == 1
