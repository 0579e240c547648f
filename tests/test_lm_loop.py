"""The LM loop: loss normalised over the whole accumulation window, seeded batches, NaN → TrainingError."""

from __future__ import annotations

import pytest
import torch

from distill.tasks.causal_lm.loop import BlockSampler, Objective, block_batches, fit_lm, on_policy_batches
from distill.errors import TrainingError
from distill.losses.token import dense_topk
from distill.tasks.causal_lm.models import build_causal_lm
from distill.tasks.causal_lm.recipe import LMTrainConfig
from distill.tasks.causal_lm.signal import lm_logits

V = 61


def tiny(layers: int = 1, seed: int = 0):
    return build_causal_lm(vocab_size=V, layers=layers, width=16, heads=2, context=16, seed=seed)


def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


BLOCKS = torch.randint(0, V, (8, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["ce", "dense", "topk"])
def test_window_loss_does_not_depend_on_the_split(kind: str) -> None:
    teacher = tiny(layers=2, seed=5)
    with torch.no_grad():
        dense = lm_logits(teacher, BLOCKS)
    source = {
        "ce": None,
        "dense": lambda b: dense.index_select(0, b.rows),
        "topk": lambda b: dense_topk(dense.index_select(0, b.rows), 8),
    }[kind]
    losses = []
    for bs, accum in ((4, 1), (2, 2), (1, 4)):
        cfg = LMTrainConfig(steps=1, batch_size=bs, grad_accum=accum, log_every=1)
        obj = Objective(loss="jsd", params={"beta": 0.3}, ce_weight=0.5, teacher=source)
        hist = fit_lm(tiny(), cfg, role="s", make_batch=block_batches(BLOCKS, bs, 0), objective=obj,
                      accelerator=accelerator(), progress=False)  # fmt: skip
        losses.append((hist[0]["loss"], hist[0].get("true_kl")))
    for loss, kl in losses[1:]:
        assert loss == pytest.approx(losses[0][0], rel=1e-5)
        if kl is not None:
            assert kl == pytest.approx(losses[0][1], rel=1e-5)


def test_batches_are_a_function_of_seed_and_index() -> None:
    a, b = BlockSampler(10, 3, seed=1), BlockSampler(10, 3, seed=1)
    assert all(torch.equal(a.rows(g), b.rows(g)) for g in (5, 0, 7, 2))
    first_pass = torch.cat([a.rows(g) for g in range(3)])
    assert len(set(first_pass.tolist())) == 9  # one pass: no repeats
    student = tiny()
    make = on_policy_batches(BLOCKS, 2, 0, student, fraction=0.5, prompt_len=4, gen_len=3)
    kinds = [make(g).data for g in range(12)]
    assert True in kinds and False in kinds
    assert all(make(g).data == kinds[g] for g in range(12))
    gen = [make(g) for g in range(12) if not kinds[g]][0]
    assert gen.ids.shape == (2, 7) and int(gen.mask.sum()) == 6 and gen.rows is None


def test_non_finite_loss_is_a_training_error() -> None:
    cfg = LMTrainConfig(steps=2, batch_size=2)
    model = tiny()
    with torch.no_grad():
        model.get_output_embeddings().weight[3, 0] = float("inf")  # diverged weights: logits inf/NaN
    with pytest.raises(TrainingError, match="lower train.optimizer.lr"):
        fit_lm(model, cfg, role="s", make_batch=block_batches(BLOCKS, 2, 0), objective=Objective(),
               accelerator=accelerator(), progress=False)  # fmt: skip


@pytest.mark.parametrize("loss", ["fkl", "jsd"])
def test_fused_head_and_teacher_hidden_states_train_as_the_plain_loss(loss: str, monkeypatch) -> None:
    """The student's head fused into the chunked loss, the teacher given as hidden states + head: the same
    losses, true KL and weights as the plain path that makes both models' logits in full."""
    import distill.tasks.causal_lm.loop as loop
    from distill.tasks.causal_lm.signal import fused_head, teacher_outputs

    teacher = tiny(layers=2, seed=5)
    assert fused_head(tiny(), BLOCKS) is not None and fused_head(teacher, BLOCKS) is not None
    outputs = teacher_outputs(teacher)
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(loop, "fused_head", lambda model, ids: None)
        source = (lambda b: outputs(b.ids)) if fused else (lambda b: lm_logits(teacher, b.ids).detach())
        cfg = LMTrainConfig(steps=4, batch_size=4, grad_accum=2, log_every=2)
        obj = Objective(loss=loss, ce_weight=0.5, temperature=2.0, teacher=source)
        student = tiny()
        hist = fit_lm(student, cfg, role="s", make_batch=block_batches(BLOCKS, 4, 0), objective=obj,
                      accelerator=accelerator(), progress=False)  # fmt: skip
        runs.append((hist, {k: v.detach().clone() for k, v in student.state_dict().items()}))
    (h1, w1), (h2, w2) = runs
    for a, b in zip(h1, h2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["true_kl"] == pytest.approx(b["true_kl"], rel=1e-5) and a["true_kl"] > 0
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5
