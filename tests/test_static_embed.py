"""Static sentence-embedding students: build from a tiny random teacher, fine-tune, save in the light
format, reload with torch and with the numpy-only loader."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.errors import DataError, ModelError, TrainingError
from distill.models.sentence import SentenceEncoder, load_sentence_encoder
from distill.tasks.embedding.static_training import finetune_static
from distill.tasks.embedding.static_build import build_static
from distill.tasks.embedding.static_embed import StaticEmbedder, load_static, save_static
from distill.tasks.embedding.static_model import FILES as LIGHT_FILES
from distill.tasks.embedding.static_model import StaticModel
from tests.embed_helpers import SENTENCES, WORDS, make_tiny_sentence_model

ODD = ["", "日本語", "   ", "the cat 日本"]  # empty, only [UNK], only spaces, mixed


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return load_sentence_encoder(make_tiny_sentence_model(tmp_path_factory.mktemp("teacher") / "tiny"))


@pytest.fixture(scope="module")
def targets(teacher: SentenceEncoder) -> torch.Tensor:
    return torch.from_numpy(teacher.encode(SENTENCES))


def _single_token_words(model: StaticEmbedder) -> list[str]:
    return [w for w in WORDS if len(model.tokenizer.encode(w, add_special_tokens=False).ids) == 1]


@pytest.mark.parametrize("anchor", [True, False])
def test_build_finetune_save_reload_identical(
    teacher: SentenceEncoder, targets: torch.Tensor, tmp_path: Path, anchor: bool
) -> None:
    model = build_static(teacher, dim=8, corpus=SENTENCES, progress=False, anchor=anchor)
    vocab = teacher.tokenizer.backend_tokenizer.get_vocab_size(True)
    assert (model.vocab_size, model.dim, model.output_dim, model.anchor) == (vocab + anchor, 8, 16, anchor)
    anchor_before = (model.embedding.weight[-1].detach().clone(), float(model.weights.detach()[-1]))
    stats = finetune_static(model, SENTENCES, targets, epochs=8, batch_size=5, lr=1e-2, progress=False)
    assert stats["epochs"] == 8 and stats["steps"] == 32 and stats["texts_used"] == len(SENTENCES)
    assert stats["epoch_losses"][-1] < 0.5 * stats["epoch_losses"][0]
    assert (model.weights.detach()[:5] == 0).all()  # special tokens stay ignored through training
    if anchor:  # the anchor's row and weight train like a token's
        assert not torch.equal(model.embedding.weight[-1], anchor_before[0]) and float(model.weights.detach()[-1]) != anchor_before[1]

    texts = SENTENCES + ODD
    before = model.encode(texts)
    folder = save_static(model, None, tmp_path / "static")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*LIGHT_FILES, "static_model.py"])
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "distill-static" and config["output_dim"] == 16
    assert (config["version"], config["anchor"]) == ((2, True) if anchor else (1, False))  # v1 loaders still read it
    assert config["teacher"]["dim"] == 16
    torch_side = load_static(folder).encode(texts)
    numpy_side = StaticModel.from_dir(folder).encode(texts, batch_size=7)
    np.testing.assert_allclose(torch_side, before, atol=1e-6)
    np.testing.assert_allclose(numpy_side, before, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(numpy_side[: len(SENTENCES)], axis=1), 1.0, atol=1e-5)

    half = save_static(model, None, tmp_path / "half", dtype="float16")
    assert (half / "embeddings.npy").stat().st_size < (folder / "embeddings.npy").stat().st_size
    np.testing.assert_allclose(StaticModel.from_dir(half).encode(texts), load_static(half).encode(texts), atol=1e-6)
    np.testing.assert_allclose(StaticModel.from_dir(half).encode(texts), before, atol=5e-3)


def test_loader_runs_without_torch_or_distill(teacher: SentenceEncoder, tmp_path: Path) -> None:
    model = build_static(teacher, dim=6, corpus=SENTENCES, progress=False)
    folder = save_static(model, teacher.tokenizer, tmp_path / "light")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import static_model; "
        "m = static_model.StaticModel.from_dir(sys.argv[1]); e = m.encode(json.loads(sys.argv[2])); "
        "bad = sorted(k for k in sys.modules if k == 'torch' or k.startswith(('torch.', 'distill'))); "
        "assert not bad, bad; print(json.dumps(e.tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), json.dumps(SENTENCES[:4])],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(np.array(json.loads(out.stdout)), model.encode(SENTENCES[:4]), atol=1e-6)


@pytest.mark.parametrize("weighting", ["sif", "none"])
def test_pca_init_with_full_dim_reproduces_teacher_tokens(teacher: SentenceEncoder, weighting: str) -> None:
    model = build_static(teacher, dim=teacher.dim, weighting=weighting, corpus=SENTENCES, progress=False, anchor=False)
    words = _single_token_words(model)
    assert len(words) > 50
    np.testing.assert_allclose(model.encode(words), teacher.encode(words), atol=1e-5)
    # a smaller dim is a lossy projection: close, not equal
    small = build_static(teacher, dim=4, weighting=weighting, corpus=SENTENCES, progress=False, anchor=False)
    assert np.abs(small.encode(words) - teacher.encode(words)).max() > 1e-3


def test_sif_weights_decrease_with_frequency(teacher: SentenceEncoder) -> None:
    model = build_static(teacher, dim=4, weighting="sif", corpus=SENTENCES, progress=False, anchor=False)
    tok = model.tokenizer
    counts = Counter(i for e in tok.encode_batch(SENTENCES, add_special_tokens=False) for i in e.ids)
    w = model.weights.detach().numpy()
    seen = sorted(counts, key=counts.get)
    for rare, common in itertools.pairwise(seen):
        if counts[common] > counts[rare]:
            assert w[common] < w[rare]
    assert counts[tok.token_to_id("the")] == max(counts.values()) and w[tok.token_to_id("the")] == w[seen].min()
    unseen = [i for i in range(5, model.vocab_size) if i not in counts]
    assert unseen and np.allclose(w[unseen], w[seen].max())  # never seen: the smallest probability
    assert (w[:5] == 0).all() and (w[5:] > 0).all()  # [PAD] [UNK] [CLS] [SEP] [MASK] are ignored

    zipf = build_static(teacher, dim=4, weighting="zipf", progress=False, anchor=False).weights.detach().numpy()[5:]
    assert (np.diff(zipf) > 0).all()  # later ids = rarer under Zipf's assumption
    no_corpus = build_static(teacher, dim=4, weighting="sif", progress=False, anchor=False).weights.detach().numpy()[5:]
    np.testing.assert_array_equal(no_corpus, zipf)
    ones = build_static(teacher, dim=4, weighting="none", progress=False, anchor=False).weights.detach().numpy()[5:]
    assert (ones == 1).all()


def test_extend_vocab_adds_tokens_the_saved_tokenizer_uses(teacher: SentenceEncoder, tmp_path: Path) -> None:
    corpus = SENTENCES + ["the bird sings slowly", "slowly the river runs", "garden music", "a garden"]
    base = build_static(teacher, dim=teacher.dim, corpus=corpus, progress=False, anchor=False)
    assert base.tokenizer.encode("slowly garden", add_special_tokens=False).tokens[0] == "slow"
    model = build_static(teacher, dim=teacher.dim, corpus=corpus, extend_vocab=3, progress=False, anchor=False)
    v = base.vocab_size
    assert model.vocab_size == v + 3 and model.meta["added_words"] == 3
    folder = save_static(model, None, tmp_path / "ext")
    light = StaticModel.from_dir(folder)
    enc = light.tokenizer.encode("Slowly, the garden sings", add_special_tokens=False)
    assert enc.tokens[:3] == ["slowly", ",", "the"] and "garden" in enc.tokens
    assert {enc.ids[0], enc.ids[enc.tokens.index("garden")]} <= set(range(v, v + 3))
    # not inside other words: "gardens" still splits
    assert "garden" not in light.tokenizer.encode("gardens", add_special_tokens=False).tokens
    # the new rows are the teacher's embedding of the word itself (dim == D: exact)
    np.testing.assert_allclose(light.encode(["slowly", "garden"]), teacher.encode(["slowly", "garden"]), atol=1e-5)
    np.testing.assert_allclose(load_static(folder).encode(corpus), light.encode(corpus), atol=1e-6)


def test_the_saved_folder_searches_a_text_file_on_its_own(teacher: SentenceEncoder, tmp_path: Path) -> None:
    model = build_static(teacher, dim=8, corpus=SENTENCES, progress=False)
    folder = save_static(model, None, tmp_path / "s")
    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join(SENTENCES[:12]) + "\n\n")
    light = StaticModel.from_dir(folder)
    docs = light.encode(SENTENCES[:12])
    top, scores = light.search(SENTENCES[3:5], docs, k=3)
    assert top.shape == scores.shape == (2, 3) and list(top[:, 0]) == [3, 4]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    np.testing.assert_allclose(scores, np.take_along_axis(light.encode(SENTENCES[3:5]) @ docs.T, top, axis=1), atol=1e-6)
    assert light.search(["x"], docs, k=50)[0].shape == (1, 12)
    # from a shell, with the copy of the loader inside the folder (no distill, no torch)
    run = [sys.executable, str(folder / "static_model.py")]
    out = subprocess.run([*run, "--corpus", str(corpus), "-k", "2", SENTENCES[5]], capture_output=True, text=True,
                         cwd=tmp_path, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == SENTENCES[5] and lines[1] == f"  1.000  {SENTENCES[5]}" and len(lines) == 3
    for bad, why in [(["--corpus", str(tmp_path / "missing.txt"), "q"], "missing.txt"),
                     (["--corpus", str(corpus), "-k", "0", "q"], "-k must be >= 1")]:  # fmt: skip
        out = subprocess.run([*run, *bad], capture_output=True, text=True, cwd=tmp_path, check=False)
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr


def test_anchor_joins_every_mean_and_makes_length_count(teacher: SentenceEncoder, tmp_path: Path) -> None:
    corpus = SENTENCES + ["the bird sings slowly", "slowly the river runs", "garden music", "a garden"]
    plain = build_static(teacher, dim=teacher.dim, weighting="none", corpus=corpus, progress=False, anchor=False)
    model = build_static(teacher, dim=teacher.dim, weighting="none", corpus=corpus, extend_vocab=2, progress=False)
    v = plain.vocab_size
    assert model.vocab_size == v + 3 and model.anchor  # the added words, then the anchor row
    # the anchor is no token: it never comes out of the tokenizer, and it starts as the teacher's empty text
    ids, _ = model.tokenize(corpus + ["[CLS] [SEP] [MASK]"])
    assert int(ids.max()) < model.vocab_size - 1
    w = model.weights.detach().numpy()
    assert w[-1] == w[:-1].max() == 1.0
    empty = teacher.encode([""])[0]
    np.testing.assert_allclose(model.proj(model.embedding.weight[-1:]).detach().numpy()[0], empty, atol=1e-5)
    # one word: the mean of its row and the anchor's (dim == D: the teacher's own vectors)
    words = [x for x in _single_token_words(plain) if x in {"cat", "dog", "the", "river"}]
    assert words
    for word in words:
        want = (teacher.encode([word])[0] + empty) / 2
        np.testing.assert_allclose(model.encode([word])[0], want / np.linalg.norm(want), atol=1e-5)
    # a plain mean cannot tell "cat" from "cat cat cat"; with the anchor, the longer text leans less on it
    same = plain.encode(["cat", "cat cat cat"])
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    one, three = model.encode(["cat", "cat cat cat"])
    cat = plain.encode(["cat"])[0]
    assert float(three @ cat) > float(one @ cat) + 1e-3
    # both loaders agree, the empty text is still the zero vector, and a folder without the anchor row fails
    folder = save_static(model, None, tmp_path / "anchored")
    light = StaticModel.from_dir(folder)
    texts = ["", *corpus, "cat cat cat"]
    np.testing.assert_allclose(light.encode(texts), model.encode(texts), atol=1e-6)
    np.testing.assert_allclose(light.encode(texts, batch_size=1), model.encode(texts), atol=1e-6)
    assert (light.encode([""]) == 0).all()
    np.save(folder / "embeddings.npy", np.load(folder / "embeddings.npy")[:-3])
    np.save(folder / "weights.npy", np.load(folder / "weights.npy")[:-3])
    with pytest.raises(ValueError, match="the last one the anchor"):
        StaticModel.from_dir(folder)


def test_empty_and_unknown_texts_give_zero_vectors(teacher: SentenceEncoder, tmp_path: Path) -> None:
    model = build_static(teacher, dim=8, corpus=SENTENCES, progress=False)
    light = StaticModel.from_dir(save_static(model, None, tmp_path / "s"))
    texts = ["", SENTENCES[0], "日本語", SENTENCES[1], "   ", "the cat 日本", ""]
    for emb in (model.encode(texts), light.encode(texts), light.encode(texts, batch_size=1)):
        assert np.isfinite(emb).all()
        assert (emb[[0, 2, 4, 6]] == 0).all()
        np.testing.assert_allclose(emb[[1, 3]], light.encode(SENTENCES[:2]), atol=1e-6)
        np.testing.assert_allclose(emb[5], light.encode(["the cat"])[0], atol=1e-6)  # [UNK] is ignored
    assert light.encode([]).shape == (0, 16) and light.encode("one text").shape == (1, 16)
    with pytest.raises(TypeError, match="not a str"):
        light.encode(["ok", 3])


def test_finetune_is_deterministic_and_respects_budget(teacher: SentenceEncoder, targets: torch.Tensor) -> None:
    runs = []
    for _ in range(2):
        m = build_static(teacher, dim=8, corpus=SENTENCES, progress=False)
        finetune_static(m, SENTENCES, targets, epochs=2, batch_size=3, seed=3, progress=False)
        runs.append(m.state_dict())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    # the learning rates fall linearly to 0 over the steps (the last of 4 steps runs at 1/4), unless decay=False
    m = build_static(teacher, dim=8, corpus=SENTENCES, progress=False)
    assert finetune_static(m, SENTENCES, targets, epochs=2, batch_size=10, progress=False)["last_lr_factor"] == 0.25
    still = finetune_static(m, SENTENCES, targets, epochs=2, batch_size=10, decay=False, progress=False)
    assert still["last_lr_factor"] == 1.0 and still["steps"] == 4
    m = build_static(teacher, dim=8, corpus=SENTENCES, progress=False)
    stats = finetune_static(m, SENTENCES, targets, epochs=1000, batch_size=2, time_budget_s=0.05, progress=False)
    assert stats["stopped_by_budget"] and stats["epochs"] < 1000 and np.isfinite(stats["final_loss"])
    # table_lr=0 freezes the table; the weights and the projection still learn
    m = build_static(teacher, dim=8, corpus=SENTENCES, keep_mean=False, progress=False)
    assert (m.proj.bias.detach() == 0).all()
    table, proj = m.embedding.weight.detach().clone(), m.proj.weight.detach().clone()
    finetune_static(m, SENTENCES, targets, epochs=2, batch_size=4, table_lr=0.0, progress=False)
    assert torch.equal(m.embedding.weight.detach(), table) and not torch.equal(m.proj.weight.detach(), proj)


def test_bad_input_raises_clear_errors(teacher: SentenceEncoder, targets: torch.Tensor, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"dim must be an integer in 1\.\.16"):
        build_static(teacher, dim=0, progress=False)
    with pytest.raises(ModelError, match="cannot give more components"):
        build_static(teacher, dim=17, progress=False)
    with pytest.raises(ModelError, match="weighting must be one of"):
        build_static(teacher, dim=4, weighting="tfidf", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="extend_vocab needs a corpus"):
        build_static(teacher, dim=4, extend_vocab=5, progress=False)
    with pytest.raises(DataError, match="corpus is empty"):
        build_static(teacher, dim=4, corpus=[], progress=False)
    model = build_static(teacher, dim=4, progress=False)
    with pytest.raises(DataError, match=r"targets must be \(N, D\)"):
        finetune_static(model, SENTENCES[:3], targets, progress=False)
    with pytest.raises(TrainingError, match="lr must be a positive number"):
        finetune_static(model, SENTENCES, targets, lr=0.0, progress=False)
    with pytest.raises(ModelError, match="missing"):
        load_static(tmp_path / "nowhere")
    folder = save_static(model, None, tmp_path / "s")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ModelError, match="format version 99"):
        load_static(folder)
    with pytest.raises(ModelError, match="dtype must be"):
        save_static(model, None, tmp_path / "s2", dtype="int8")  # type: ignore[arg-type]


def _pairs_of(model: StaticEmbedder, texts: list[str], min_count: int) -> set[tuple[int, int]]:
    """Neighbouring token pairs seen at least ``min_count`` times, counted here text by text; a text's
    first token also pairs with [CLS] and its last with [SEP] (the model's ``pair_bounds``)."""
    counts: Counter[tuple[int, int]] = Counter()
    cls, sep = model.pair_bounds
    for text in texts:
        ids = model.tokenizer.encode(text, add_special_tokens=False).ids
        counts.update(zip([cls, *ids], [*ids, sep]) if ids else [])
    return {p for p, c in counts.items() if c >= min_count}


def test_pair_rows_join_the_mean_within_a_text_only(teacher: SentenceEncoder, tmp_path: Path) -> None:
    corpus = SENTENCES + ["the cat sat", "the cat ran", "a dog sat", "a dog ran", "the cat and a dog"]
    plain = build_static(teacher, dim=8, corpus=corpus, progress=False)
    model = build_static(teacher, dim=8, corpus=corpus, pair_min_count=2, progress=False)
    v = model.vocab_size
    cls, sep = model.pair_bounds
    assert model.pair_bounds == (teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id)
    keys = model.pair_keys.numpy()
    assert {(int(k) // v, int(k) % v) for k in keys} == _pairs_of(model, corpus, 2) and model.num_pairs == len(keys) > 3
    texts = corpus + ODD + ["cat the dog a"]
    np.testing.assert_allclose(model.encode(texts), plain.encode(texts), atol=1e-6)  # the pair rows start at zero
    with torch.no_grad():
        model.pairs.weight.copy_(torch.randn(model.num_pairs, 8, generator=torch.Generator().manual_seed(0)))
    # by hand: "the cat and a dog" has the known pairs ([CLS], the), (the, cat), (a, dog) and the unknown
    # (cat, and), (and, a), (dog, [SEP]): [CLS] and [SEP] are no tokens of the text (no row, no weight)
    tok = [model.tokenizer.token_to_id(w) for w in ("the", "cat", "and", "a", "dog")]
    known = _pairs_of(model, corpus, 2)
    assert {(cls, tok[0]), (tok[0], tok[1]), (tok[3], tok[4])} <= known
    assert not {(tok[2], tok[3]), (tok[4], sep)} & known
    w, table = model.weights.detach().numpy(), model.embedding.weight.detach().numpy()
    bounded = [cls, *tok, sep]
    rows = [int(np.searchsorted(keys, a * v + b)) for a, b in zip(bounded, bounded[1:]) if a * v + b in set(keys.tolist())]
    assert len(rows) == 3
    pair_rows = model.pairs.weight.detach().numpy()[rows].sum(0)  # in the sum, not in the sum of weights
    mean = (w[tok] @ table[tok] + w[-1] * table[-1] + pair_rows) / (w[tok].sum() + w[-1])
    want = model.proj(torch.from_numpy(mean).float()).detach().numpy()
    np.testing.assert_allclose(model.encode(["the cat and a dog"])[0], want / np.linalg.norm(want), atol=1e-5)
    # a pair never spans two texts: "the" then "cat" in one batch is not "the cat"
    both = model.encode(["the", "cat", "the cat"])
    np.testing.assert_allclose(both[:2], np.concatenate([model.encode(["the"]), model.encode(["cat"])]), atol=1e-6)
    assert float(np.abs(both[2] - plain.encode(["the cat"])[0]).max()) > 1e-3  # but within one text it counts
    # saved as version 4 (boundary pairs); both loaders agree at any batch size, in fp16 too
    folder = save_static(model, None, tmp_path / "pairs")
    config = json.loads((folder / "config.json").read_text())
    assert (config["version"], config["pairs"], config["pair_bounds"]) == (4, model.num_pairs, [cls, sep])
    assert (folder / "pair_keys.npy").is_file() and (folder / "pair_embeddings.npy").is_file()
    light = StaticModel.from_dir(folder)
    before = model.encode(texts)
    for got in (light.encode(texts), light.encode(texts, batch_size=1), light.encode(texts, batch_size=7),
                load_static(folder).encode(texts)):  # fmt: skip
        np.testing.assert_allclose(got, before, atol=1e-6)
    half = save_static(model, None, tmp_path / "half", dtype="float16")
    assert np.load(half / "pair_embeddings.npy").dtype == np.float16
    np.testing.assert_allclose(StaticModel.from_dir(half).encode(texts), load_static(half).encode(texts), atol=1e-6)
    # saving a model without pairs over it removes the pair files; a folder missing one fails clearly
    save_static(plain, None, folder)
    assert not (folder / "pair_keys.npy").exists() and json.loads((folder / "config.json").read_text())["version"] == 2
    (half / "pair_keys.npy").unlink()
    with pytest.raises(FileNotFoundError, match="pair_keys.npy is missing"):
        StaticModel.from_dir(half)
    np.save(half / "pair_keys.npy", keys[::-1].copy())  # not sorted
    with pytest.raises(ValueError, match="pair arrays do not fit"):
        StaticModel.from_dir(half)


def test_pair_rows_train_and_pair_lr_zero_freezes_them(teacher: SentenceEncoder, targets: torch.Tensor) -> None:
    model = build_static(teacher, dim=8, corpus=SENTENCES, pair_min_count=1, progress=False)
    assert model.num_pairs == len(_pairs_of(model, SENTENCES, 1))
    stats = finetune_static(model, SENTENCES, targets, epochs=4, batch_size=4, pair_lr=1e-2, progress=False)
    assert stats["epoch_losses"][-1] < stats["epoch_losses"][0]
    assert float(model.pairs.weight.detach().abs().max()) > 0  # they learned from zero
    frozen = build_static(teacher, dim=8, corpus=SENTENCES, pair_min_count=1, progress=False)
    finetune_static(frozen, SENTENCES, targets, epochs=2, batch_size=4, pair_lr=0.0, progress=False)
    assert float(frozen.pairs.weight.detach().abs().max()) == 0
    # a batch without any known pair (one-word texts) trains the rest and leaves the pairs alone
    words = _single_token_words(model)[:4]
    finetune_static(model, words, torch.from_numpy(teacher.encode(words)), epochs=1, batch_size=2, progress=False)
    with pytest.raises(ModelError, match="pair_min_count needs a corpus"):
        build_static(teacher, dim=4, pair_min_count=2, progress=False)
    with pytest.raises(TrainingError, match="pair_lr must be a number >= 0"):
        finetune_static(model, SENTENCES, targets, pair_lr=-1.0, progress=False)


def test_pair_arrays_that_do_not_fit_fail_in_both_models(teacher: SentenceEncoder) -> None:
    model = build_static(teacher, dim=8, corpus=SENTENCES, pair_min_count=1, progress=False)
    parts = (model.tokenizer, model.embedding.weight.detach(), model.weights.detach(), model.proj.weight.detach(),
             model.proj.bias.detach())  # fmt: skip
    keys, rows = model.pair_keys.clone(), model.pairs.weight.detach().clone()
    v = model.vocab_size
    for bad_keys, bad_rows in [(keys.flip(0), rows), (keys.int(), rows), (keys, rows[:, :4]), (keys + v * v, rows)]:
        with pytest.raises(ModelError, match="pair arrays do not fit"):
            StaticEmbedder(*parts, anchor=True, pair_keys=bad_keys, pair_table=bad_rows)
        with pytest.raises(ValueError, match="pair arrays do not fit"):
            StaticModel(parts[0], parts[1].numpy(), parts[2].numpy(), parts[3].numpy().T, parts[4].numpy(), anchor=True,
                        pair_keys=bad_keys.numpy(), pair_embeddings=bad_rows.numpy())  # fmt: skip
    with pytest.raises(ModelError, match="come together"):
        StaticEmbedder(*parts, anchor=True, pair_keys=keys)
    for bounds, why in [((0, v), "two token ids"), ((1,), "two token ids"), ("ab", "two token ids")]:
        with pytest.raises(ModelError, match=why):
            StaticEmbedder(*parts, anchor=True, pair_keys=keys, pair_table=rows, pair_bounds=bounds)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="no pair rows"):
        StaticEmbedder(*parts, anchor=True, pair_bounds=(0, 1))
    with pytest.raises(ValueError, match="no pair rows"):
        StaticModel(parts[0], parts[1].numpy(), parts[2].numpy(), parts[3].numpy().T, parts[4].numpy(), anchor=True,
                    pair_bounds=[0, 1])  # fmt: skip


def test_boundary_pairs_count_and_a_version_3_folder_still_loads(teacher: SentenceEncoder, tmp_path: Path) -> None:
    # a word at the start or the end of a text gets a row there: "cat" ends 3 texts here, so (cat, [SEP]) has one
    corpus = ["the cat", "a black cat", "my cat", "cat food"]
    model = build_static(teacher, dim=8, corpus=corpus, pair_min_count=2, progress=False)
    cls, sep = model.pair_bounds
    v, cat = model.vocab_size, model.tokenizer.token_to_id("cat")
    keys = set(model.pair_keys.tolist())
    assert cat * v + sep in keys and cls * v + cat not in keys  # "cat" starts one text only
    with torch.no_grad():
        model.pairs.weight.copy_(torch.randn(model.num_pairs, 8, generator=torch.Generator().manual_seed(1)))
    with_bounds = model.encode(["cat", "the cat", ""])
    # the same rows without their boundaries is a version-3 folder, read as such by both loaders
    plain = copy.deepcopy(model)
    plain.pair_bounds = None
    folder = save_static(plain, None, tmp_path / "v3")
    config = json.loads((folder / "config.json").read_text())
    assert (config["version"], config["pair_bounds"]) == (3, None)
    without = load_static(folder).encode(["cat", "the cat", ""])
    np.testing.assert_allclose(StaticModel.from_dir(folder).encode(["cat", "the cat", ""]), without, atol=1e-6)
    assert float(np.abs(with_bounds[:2] - without[:2]).max()) > 1e-3  # the boundary rows count
    assert not with_bounds[2].any() and not without[2].any()  # an empty text has no boundaries: still zero
    # a hand-edited config with boundaries out of range fails clearly
    (folder / "config.json").write_text(json.dumps({**config, "version": 4, "pair_bounds": [cls, v + 5]}))
    with pytest.raises(ModelError, match="pair_bounds must be two token ids"):
        load_static(folder)
