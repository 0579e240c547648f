"""Causal-LM builders, copied-layer students, the vocabulary check, metrics and generation."""

from __future__ import annotations

import math

import pytest
import torch

from distill.errors import ModelError
from distill.tasks.causal_lm.models import (
    build_causal_lm,
    check_same_vocab,
    copy_layers_student,
    count_parameters,
    macs_per_token,
)
from distill.tasks.causal_lm.signal import (
    evaluate_lm,
    generate,
    lm_logits,
    on_policy_sequences,
    teacher_sequences,
    tokens_per_second,
)

V = 97


def tiny(arch: str = "gpt2", layers: int = 2, vocab: int = V, seed: int = 0):
    return build_causal_lm(vocab_size=vocab, layers=layers, width=16, heads=2, context=32, arch=arch, seed=seed)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_build_is_seeded_and_runs(arch: str) -> None:
    a, b = tiny(arch), tiny(arch)
    x = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(0))
    assert torch.equal(lm_logits(a, x), lm_logits(b, x))
    assert lm_logits(a, x).shape == (2, 10, V)
    assert not torch.equal(lm_logits(tiny(arch, seed=1), x), lm_logits(a, x))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_copy_layers_student_equals_teacher_layers(arch: str) -> None:
    teacher = tiny(arch, layers=3)
    student = copy_layers_student(teacher, [0, 2])
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    blocks = "transformer.h" if arch == "gpt2" else "model.layers"
    for key, value in s_sd.items():
        if key.startswith(blocks + "."):
            j, rest = key[len(blocks) + 1 :].split(".", 1)
            src = f"{blocks}.{[0, 2][int(j)]}.{rest}"
        else:
            src = key
        assert torch.equal(value, t_sd[src]), key
    assert student.config.num_hidden_layers == 2
    with pytest.raises(ModelError, match="0..2"):
        copy_layers_student(teacher, [3])


def test_full_copy_gives_the_teachers_numbers_exactly() -> None:
    teacher = tiny(layers=2)
    copy = copy_layers_student(teacher, [0, 1])
    x = torch.randint(0, V, (4, 16), generator=torch.Generator().manual_seed(1))
    assert evaluate_lm(copy, x, batch_size=2) == evaluate_lm(teacher, x, batch_size=2)


def test_uniform_logits_have_perplexity_vocab_size() -> None:
    model = tiny()
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # logits all 0: uniform over V
    x = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(2))
    m = evaluate_lm(model, x)
    assert m["perplexity"] == pytest.approx(V, rel=1e-5)
    assert m["tokens"] == 3 * 11
    assert m["top1"] == pytest.approx(float((x[:, 1:] == 0).float().mean()))  # ties: argmax picks id 0


def test_masked_positions_are_not_scored() -> None:
    model = tiny()
    x = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, 4:7] = True
    assert evaluate_lm(model, x, mask)["tokens"] == 6


def test_vocab_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ModelError) as err:
        check_same_vocab(tiny(vocab=V), tiny(vocab=V + 3))
    text = str(err.value)
    assert "97" in text and "100" in text and "token id by token id" in text and "sequence" in text
    check_same_vocab(tiny(), tiny(layers=1))


def test_macs_count_the_head() -> None:
    teacher, student = tiny(layers=2), tiny(layers=1)
    assert macs_per_token(teacher, 32) > macs_per_token(student, 32) > V * 16
    assert count_parameters(teacher) == sum(p.numel() for p in set(teacher.parameters()))


def test_generation_is_seeded_and_fixed_length() -> None:
    model = tiny()
    prompt = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(4))
    a = generate(model, prompt, 7, sample=True, generator=torch.Generator().manual_seed(9))
    b = generate(model, prompt, 7, sample=True, generator=torch.Generator().manual_seed(9))
    assert a.shape == (2, 12) and torch.equal(a, b) and torch.equal(a[:, :5], prompt)
    greedy = generate(model, prompt, 4, sample=False)
    # greedy with the KV cache equals argmax of a full forward pass
    assert torch.equal(lm_logits(model, greedy[:, :-1]).argmax(-1)[:, 4:], greedy[:, 5:])


def test_sequence_and_on_policy_batches() -> None:
    teacher, student = tiny(layers=2), tiny(layers=1)
    blocks = torch.randint(1, V, (3, 20), generator=torch.Generator().manual_seed(5))
    ids, mask = teacher_sequences(teacher, blocks[:, :4], 6, 16, 0, sample=False, seed=0)
    assert ids.shape == (3, 16) and mask[:, 3:9].all() and int(mask.sum()) == 18
    assert (ids[:, 10:] == 0).all()
    seq, m = on_policy_sequences(student, blocks, 4, 5, torch.Generator().manual_seed(0))
    assert seq.shape == (3, 9) and int(m.sum()) == 15 and torch.equal(seq[:, :4], blocks[:, :4])
    speed = tokens_per_second({"t": teacher, "s": student}, blocks, batch_size=2, batches=2)
    assert set(speed) == {"t", "s"} and all(v > 0 and math.isfinite(v) for v in speed.values())


def test_expand_topk_keeps_the_top_k_and_spreads_the_tail_by_the_prior() -> None:
    from distill.losses.token import dense_topk
    from distill.tasks.causal_lm.signal import expand_topk, unigram_logprobs

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, V, generator=g) * 2
    prior = unigram_logprobs(torch.randint(0, V, (10, 20), generator=g), V)
    assert prior.exp().sum() == pytest.approx(1.0, abs=1e-5)
    for t in (1.0, 2.0):
        full = expand_topk(dense_topk(logits, V, t), prior, t)  # k = V: the teacher itself
        assert torch.allclose(torch.log_softmax(full / t, -1), torch.log_softmax(logits / t, -1), atol=1e-5)
        top = dense_topk(logits, 5, t)
        logp = torch.log_softmax(expand_topk(top, prior, t) / t, -1)
        assert torch.allclose(logp.gather(-1, top.indices), top.logprobs, atol=1e-5)
        outside = torch.ones_like(logp, dtype=torch.bool).scatter(-1, top.indices, False)
        ratio = (logp - prior)[outside].view(2, 3, V - 5)  # tail ∝ prior: constant ratio per position
        assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4)
