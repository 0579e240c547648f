"""The offline top-k teacher cache (distill.tasks.causal_lm.topk_cache) on a tiny random GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.errors import CacheError
from distill.losses.token import dense_sample, dense_topk, token_loss
from distill.tasks.causal_lm.topk_build import build_topk_cache
from distill.tasks.causal_lm.topk_cache import TopKCache

N, L, V = 10, 16, 97


def tiny_lm(vocab: int = V, seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=vocab, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


def tiny_blocks(n: int = N, vocab: int = V, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return tiny_lm()


@pytest.fixture(scope="module")
def blocks() -> torch.Tensor:
    return tiny_blocks()


def build(teacher, blocks, directory, **kw):
    kw = {
        "k": 8,
        "temperature": 2.0,
        "batch_size": 2,
        "shard_blocks": 4,
        "fingerprint": "fp-1",
        "progress": False,
        **kw,
    }
    return build_topk_cache(teacher, blocks, directory, **kw)


def test_round_trip_equals_dense_topk_of_the_teacher(tmp_path: Path, teacher, blocks):
    cache = build(teacher, blocks, tmp_path / "c")
    assert (cache.k, cache.temperature, cache.num_blocks, cache.block_len, cache.vocab_size, cache.fingerprint) == (
        8,
        2.0,
        N,
        L,
        V,
        "fp-1",
    )
    assert len(cache) == N
    with torch.inference_mode():
        logits = teacher(input_ids=blocks).logits
    ref = dense_topk(logits, 8, 2.0)
    rows = [7, 0, 3, 3, 9]
    got = cache.get(rows)
    assert got.indices.dtype == torch.int64 and got.logprobs.dtype == torch.float32 and got.tail.dtype == torch.float32
    assert got.indices.shape == (5, L, 8) and got.tail.shape == (5, L) and got.temperature == 2.0
    # ids equal except where two log-probs tie within fp16 precision
    same = got.indices == ref.indices[rows]
    assert float(same.float().mean()) > 0.99
    torch.testing.assert_close(got.logprobs, ref.logprobs[rows], atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(got.tail, ref.tail[rows], atol=2e-3, rtol=1e-3)
    # the whole cache, as a tensor of rows
    full = cache.get(torch.arange(N))
    torch.testing.assert_close(full.logprobs, ref.logprobs, atol=2e-3, rtol=1e-3)

    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["complete"] and index["index_dtype"] == "uint16" and len(index["shards"]) == 3
    assert [(s["start"], s["stop"]) for s in index["shards"]] == [(0, 4), (4, 8), (8, 10)]
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]


def test_loss_from_the_cache_matches_the_loss_from_dense_topk(tmp_path: Path, teacher, blocks):
    cache = build(teacher, blocks, tmp_path / "c")
    with torch.inference_mode():
        logits = teacher(input_ids=blocks).logits
    student = torch.randn(N, L, V, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(N, L, dtype=torch.bool)
    mask[:, :3] = False
    for name in ("fkl", "rkl", "jsd", "tvd"):
        a = token_loss(name, student, cache.get(range(N)), mask, temperature=2.0)
        b = token_loss(name, student, dense_topk(logits, 8, 2.0), mask, temperature=2.0)
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-3)


def test_resume_recomputes_only_the_missing_shard(tmp_path: Path, teacher, blocks):
    folder = tmp_path / "c"
    build(teacher, blocks, folder)
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")}
    (folder / "shard-00001.safetensors").unlink()
    with pytest.raises(CacheError, match="shard-00001.*missing"):
        TopKCache(folder)
    calls = []
    handle = teacher.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        cache = build(teacher, blocks, folder)
        assert len(calls) == 2  # shard 1 = rows 4..8 at batch size 2
        calls.clear()
        build(teacher, blocks, folder)  # complete: nothing to do
        assert calls == []
    finally:
        handle.remove()
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")}
    assert after["shard-00000.safetensors"] == kept["shard-00000.safetensors"]
    assert after["shard-00002.safetensors"] == kept["shard-00002.safetensors"]
    assert "shard-00001.safetensors" in after
    cache.verify()


def test_interrupted_build_resumes(tmp_path: Path, teacher, blocks):
    folder = tmp_path / "c"

    class Boom(RuntimeError):
        pass

    calls = []

    def hook(m, a, o):
        calls.append(1)
        if len(calls) == 3:  # during the second shard
            raise Boom

    handle = teacher.register_forward_hook(hook)
    try:
        with pytest.raises(Boom):
            build(teacher, blocks, folder)
    finally:
        handle.remove()
    assert teacher.training is False
    index = json.loads((folder / "index.json").read_text())
    assert index["complete"] is False and len(index["shards"]) == 1
    with pytest.raises(CacheError, match="incomplete.*1 of 3"):
        TopKCache(folder)
    calls.clear()
    handle = teacher.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        cache = build(teacher, blocks, folder)
    finally:
        handle.remove()
    assert len(calls) == 3  # shards 1 and 2: 2 + 1 batches
    assert cache.get([9]).indices.shape == (1, L, 8)


def test_corrupted_shard_raises_cache_error_naming_it(tmp_path: Path, teacher, blocks):
    folder = tmp_path / "c"
    build(teacher, blocks, folder)
    path = folder / "shard-00002.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # same size, flipped bits
    path.write_bytes(bytes(raw))
    cache = TopKCache(folder)
    cache.get([0])  # other shards still load
    with pytest.raises(CacheError, match=r"shard-00002\.safetensors fails its sha256.*delete"):
        cache.get([9])
    # truncated: caught when opening
    path.write_bytes(bytes(raw[:100]))
    with pytest.raises(CacheError, match=r"shard-00002\.safetensors has 100 bytes.*truncated"):
        TopKCache(folder)


def test_mismatched_settings_raise_unless_overwrite(tmp_path: Path, teacher, blocks):
    folder = tmp_path / "c"
    build(teacher, blocks, folder)
    with pytest.raises(CacheError, match="fingerprint 'fp-1' there, 'fp-2' asked.*overwrite=True"):
        build(teacher, blocks, folder, fingerprint="fp-2")
    with pytest.raises(CacheError, match="k 8 there, 4 asked"):
        build(teacher, blocks, folder, k=4)
    with pytest.raises(CacheError, match="temperature"):
        build(teacher, blocks, folder, temperature=1.0)
    with pytest.raises(CacheError, match="num_blocks"):
        build(teacher, blocks[:6], folder)
    cache = build(teacher, blocks[:6], folder, k=4, fingerprint="fp-2", overwrite=True)
    assert (cache.k, cache.num_blocks, cache.fingerprint) == (4, 6, "fp-2")
    assert sorted(p.name for p in folder.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]


def test_missing_or_foreign_folder_is_a_cache_error(tmp_path: Path):
    with pytest.raises(CacheError, match="index.json is missing"):
        TopKCache(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "index.json").write_text('{"format": "other"}')
    with pytest.raises(CacheError, match="not a distill top-k teacher cache"):
        TopKCache(tmp_path / "x")


def test_bad_arguments(tmp_path: Path, teacher, blocks):
    with pytest.raises(ValueError, match="integer tensor"):
        build(teacher, blocks.float(), tmp_path / "c")
    with pytest.raises(ValueError, match="exceeds the teacher's vocabulary"):
        build(teacher, blocks, tmp_path / "c", k=V + 1)
    with pytest.raises(ValueError, match="fingerprint"):
        build(teacher, blocks, tmp_path / "c", fingerprint="")


def test_sizes_and_the_k32_ratio_at_vocab_8192(tmp_path: Path, teacher, blocks):
    small = build(teacher, blocks, tmp_path / "small")
    assert small.nbytes < small.dense_fp16_nbytes()
    assert small.nbytes == sum(p.stat().st_size for p in (tmp_path / "small").glob("shard-*"))
    assert small.dense_fp16_nbytes() == N * L * V * 2

    vocab = 8192
    lm = tiny_lm(vocab=vocab)
    cache = build_topk_cache(
        lm,
        tiny_blocks(32, vocab),
        tmp_path / "big",
        k=32,
        batch_size=8,
        shard_blocks=16,
        fingerprint="v8k",
        progress=False,
    )
    ratio = cache.nbytes / cache.dense_fp16_nbytes()
    # 32·(2+2)+2 = 130 B per position vs 2·8192 = 16 384 B: 0.79 % plus the shard headers
    assert 130 / (2 * vocab) <= ratio < 0.0082
    assert ratio <= 0.01
    assert json.loads((tmp_path / "big" / "index.json").read_text())["index_dtype"] == "uint16"


def test_int32_ids_above_65536_tokens(tmp_path: Path):
    vocab = 70_000
    lm = tiny_lm(vocab=vocab)
    blocks = tiny_blocks(2, vocab)
    cache = build_topk_cache(lm, blocks, tmp_path / "c", k=4, fingerprint="big-vocab", progress=True)
    assert json.loads((tmp_path / "c" / "index.json").read_text())["index_dtype"] == "int32"
    with torch.inference_mode():
        ref = dense_topk(lm(input_ids=blocks).logits, 4, 1.0)
    got = cache.get([0, 1])
    assert float((got.indices == ref.indices).float().mean()) > 0.99
    assert int(got.indices.max()) < vocab


def test_sample_mode_stores_seeded_draws_and_resumes_to_the_same_draws(tmp_path: Path, teacher, blocks):
    cache = build(teacher, blocks, tmp_path / "s", mode="sample", seed=3, temperature=1.0)
    assert cache.mode == "sample" and "mode=sample" in repr(cache)
    got = cache.get(torch.arange(N))
    p = got.logprobs.exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(N, L), atol=2e-3, rtol=0)  # fp16 storage
    assert bool(torch.isneginf(got.logprobs).any())
    # shard 0 (rows 0..4, teacher batches of 2) holds dense_sample's draws with generator seed 3 + 0
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        parts = [dense_sample(teacher(input_ids=blocks[i : i + 2]).logits, 8, 1.0, generator=gen) for i in (0, 2)]
    assert torch.equal(got.indices[:4], torch.cat([x.indices for x in parts]))
    torch.testing.assert_close(got.logprobs[:4], torch.cat([x.logprobs for x in parts]).half().float())
    # a killed build that resumes writes the same draws (shard i is drawn with seed + i)
    from safetensors.torch import load_file

    shard1 = tmp_path / "s" / "shard-00001.safetensors"
    first = load_file(str(shard1))
    shard1.unlink()
    build(teacher, blocks, tmp_path / "s", mode="sample", seed=3, temperature=1.0)
    again = load_file(str(shard1))
    assert all(torch.equal(first[key], again[key]) for key in ("indices", "logprobs", "tail"))
    # another mode or seed is another cache
    with pytest.raises(CacheError, match="mode 'sample' there, 'topk' asked"):
        build(teacher, blocks, tmp_path / "s", temperature=1.0)
    with pytest.raises(CacheError, match="seed 3 there, 4 asked"):
        build(teacher, blocks, tmp_path / "s", mode="sample", seed=4, temperature=1.0)


def test_systematic_sample_mode_is_another_cache_with_the_same_layout(tmp_path: Path, teacher, blocks):
    cache = build(teacher, blocks, tmp_path / "s", mode="sample", seed=3, temperature=1.0, draws="systematic")
    got = cache.get(torch.arange(N))
    torch.testing.assert_close(got.logprobs.exp().sum(-1), torch.ones(N, L), atol=2e-3, rtol=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ref = dense_sample(teacher(input_ids=blocks[:2]).logits, 8, 1.0, generator=gen, draws="systematic")
    assert torch.equal(got.indices[:2], ref.indices)
    assert json.loads((tmp_path / "s" / "index.json").read_text())["draws"] == "systematic"
    with pytest.raises(CacheError, match="draws 'systematic' there, 'multinomial' asked"):
        build(teacher, blocks, tmp_path / "s", mode="sample", seed=3, temperature=1.0)
    with pytest.raises(ValueError, match="draws must be one of"):
        build(teacher, blocks, tmp_path / "t", mode="sample", temperature=1.0, draws="stratified")
    # a sampled cache written before `draws` was recorded drew independently: it is reused as multinomial
    build(teacher, blocks, tmp_path / "m", mode="sample", seed=3, temperature=1.0)
    index = json.loads((tmp_path / "m" / "index.json").read_text())
    del index["draws"]
    (tmp_path / "m" / "index.json").write_text(json.dumps(index))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "m").glob("shard-*")}
    build(teacher, blocks, tmp_path / "m", mode="sample", seed=3, temperature=1.0)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "m").glob("shard-*")} == before
    with pytest.raises(ValueError, match="mode must be one of"):
        build(teacher, blocks, tmp_path / "x", mode="dense")


def test_an_index_written_before_modes_existed_reads_as_topk(tmp_path: Path, teacher, blocks):
    build(teacher, blocks, tmp_path / "c")
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    del index["mode"], index["seed"]
    (tmp_path / "c" / "index.json").write_text(json.dumps(index))
    assert TopKCache(tmp_path / "c").mode == "topk"
    build(teacher, blocks, tmp_path / "c")  # same settings: resumes, no mismatch
