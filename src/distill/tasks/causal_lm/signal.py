"""What is particular to causal language models: logits, metrics, generation, and the data of
sequence-level and on-policy distillation.

Conventions: ``ids`` are ``(B, L)`` int64 token ids; a position mask ``(B, L)`` bool marks the
positions whose *next-token* distribution is trained or scored (``mask[b, t]`` ⇔ the logits at ``t``,
which predict ``ids[b, t + 1]``, count). Perplexity, top-1 and top-3 are computed over the
positions ``t < L − 1`` where the mask is True.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.tasks.causal_lm.text import encode_pairs, pad_examples


def lm_logits(model: Any, ids: Tensor) -> Tensor:
    """``(B, L, V)`` next-token logits. Right padding needs no masking (attention is causal); the
    all-ones attention mask only says so to transformers."""
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def _cache_kwarg(model: Any) -> str:
    """transformers ≥ 5.x names the KV cache ``cache``; older versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def fused_head(model: Any, ids: Tensor) -> tuple[Any, Any] | None:
    """``(body, head)`` when the model's logits are ``head(body(ids).last_hidden_state)`` (GPT-2, Llama and
    most causal LMs of transformers), checked once on ``ids`` in eval mode; else None (the loss then takes the
    model's logits)."""
    m = getattr(model, "module", model)
    head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
    body = getattr(m, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or body is None or body is m:
        return None
    was = m.training
    m.eval()
    try:
        with torch.no_grad():
            x = ids[:1, : min(8, ids.shape[1])]
            want = lm_logits(m, x).float()
            got = head(body(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).last_hidden_state).float()
    except Exception:  # noqa: BLE001 - any model that does not fit the pattern takes the plain path
        return None
    finally:
        m.train(was)
    close = got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-4))
    return (body, head) if close else None


def teacher_outputs(teacher: Any) -> Any:
    """``fn(ids)``: the teacher's view of a batch for the chunked losses: its last hidden states and head
    (:class:`~distill.losses.chunked.HeadLogits`, the logits made per chunk) when the model has that shape,
    else its ``(B, L, V)`` logits."""
    from distill.losses.chunked import HeadLogits

    state: dict[str, Any] = {}

    @torch.no_grad()
    def outputs(ids: Tensor) -> Any:
        if "head" not in state:
            state["head"] = fused_head(teacher, ids)
        if state["head"] is None:
            return lm_logits(teacher, ids)
        body, head = state["head"]
        hidden = body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state
        return HeadLogits(hidden, head.weight.detach(), head.bias.detach() if head.bias is not None else None)

    return outputs


def ce_sum(logits: Tensor, ids: Tensor, mask: Tensor | None = None) -> tuple[Tensor, int]:
    """Sum of next-token cross-entropy over the masked positions ``t < L − 1``, and their count."""
    pred = logits[:, :-1].float()
    target = ids[:, 1:]
    m = torch.ones_like(target, dtype=torch.bool) if mask is None else mask[:, :-1]
    if not bool(m.any()):
        return logits.float().sum() * 0.0, 0
    return F.cross_entropy(pred[m], target[m], reduction="sum"), int(m.sum())


def unigram_logprobs(blocks: Tensor, vocab_size: int) -> Tensor:
    """``(V,)`` log of the add-one-smoothed token frequencies of ``blocks``."""
    counts = torch.bincount(blocks.reshape(-1), minlength=vocab_size)[:vocab_size].double() + 1.0
    return (counts / counts.sum()).log().float()


def expand_topk(topk: Any, prior_logp: Tensor, temperature: float = 1.0) -> Tensor:
    """Dense teacher logits ``(B, S, V)`` rebuilt from a top-k summary: the k stored log-probabilities,
    and the stored tail mass spread over the other tokens in proportion to ``prior_logp`` (e.g. the
    unigram frequencies), instead of one "everything else" bucket. Returned as ``T · log p`` so that
    ``softmax(logits / T)`` is that distribution."""
    idx = topk.indices.long()
    prior = prior_logp.to(topk.logprobs.device)
    rest = (1.0 - prior.exp()[idx].sum(-1)).clamp_min(1e-12)  # prior mass outside the top-k
    logp = prior.expand(*idx.shape[:-1], prior.shape[0]) + (topk.tail.float() - rest.log()).unsqueeze(-1)
    logp = logp.scatter(-1, idx, topk.logprobs.float())
    return logp * temperature


@torch.no_grad()
def evaluate_lm(model: Any, ids: Tensor, mask: Tensor | None = None, *, batch_size: int = 16) -> dict[str, float]:
    """Perplexity (exp of the mean next-token NLL over real positions), next-token top-1 and top-3
    accuracy, and the number of scored tokens."""
    was = model.training
    model.eval()
    nll, top1, top3, count = 0.0, 0, 0, 0
    try:
        for start in range(0, len(ids), batch_size):
            x = ids[start : start + batch_size]
            m = (torch.ones_like(x, dtype=torch.bool) if mask is None else mask[start : start + batch_size])[:, :-1]
            logits = lm_logits(model, x)[:, :-1].float()[m]
            target = x[:, 1:][m]
            nll += float(F.cross_entropy(logits, target, reduction="sum"))
            best3 = logits.topk(min(3, logits.shape[-1]), dim=-1).indices
            top1 += int((best3[:, 0] == target).sum())
            top3 += int((best3 == target[:, None]).any(-1).sum())
            count += int(m.sum())
    finally:
        model.train(was)
    if count == 0:
        return {"perplexity": float("nan"), "nll": float("nan"), "top1": float("nan"), "top3": float("nan"), "tokens": 0}
    mean = nll / count
    return {"perplexity": math.exp(mean), "nll": mean, "top1": top1 / count, "top3": top3 / count, "tokens": count}


@torch.no_grad()
def tokens_per_second(models: dict[str, Any], ids: Tensor, *, batch_size: int = 16, batches: int = 5) -> dict[str, float]:
    """Forward-pass tokens/s of each model, measured side by side: one untimed warm-up batch each,
    then ``batches`` rounds in which every model runs the same batch in turn; median per model."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.eval()
        lm_logits(m, ids[:batch_size])
    for r in range(batches):
        start = (r * batch_size) % max(len(ids) - batch_size + 1, 1)
        x = ids[start : start + batch_size]
        for name, m in models.items():
            t0 = time.perf_counter()
            lm_logits(m, x)
            times[name].append(time.perf_counter() - t0)
    n = min(batch_size, len(ids)) * ids.shape[1]
    return {k: n / statistics.median(v) for k, v in times.items()}


@torch.no_grad()
def generate(
    model: Any,
    prompt: Tensor,
    new_tokens: int,
    *,
    sample: bool,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """``(B, P + new_tokens)``: the prompt and exactly ``new_tokens`` tokens, greedy or sampled from
    the full softmax at ``temperature`` with ``generator`` (seeded: reproducible). EOS does not stop it."""
    was = model.training
    model.eval()
    try:
        kw = _cache_kwarg(model)
        attn = torch.ones_like(prompt)
        out = model(input_ids=prompt, attention_mask=attn, use_cache=True)
        past, logits = _cache_of(out), out.logits[:, -1]
        tokens = []
        for i in range(new_tokens):
            if sample:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                nxt = logits.argmax(-1)
            tokens.append(nxt)
            if i + 1 < new_tokens:
                attn = torch.cat([attn, attn[:, :1]], dim=1)
                out = model(input_ids=nxt[:, None], attention_mask=attn, use_cache=True, **{kw: past})
                past, logits = _cache_of(out), out.logits[:, -1]
    finally:
        model.train(was)
    return torch.cat([prompt, torch.stack(tokens, 1)], dim=1) if tokens else prompt.clone()


def continuation_mask(batch: int, prompt_len: int, gen_len: int, total_len: int) -> Tensor:
    """Positions whose next token is generated: ``prompt_len − 1 … prompt_len + gen_len − 2``."""
    mask = torch.zeros((batch, total_len), dtype=torch.bool)
    mask[:, prompt_len - 1 : prompt_len + gen_len - 1] = True
    return mask


def pad_to(ids: Tensor, length: int, pad_id: int) -> Tensor:
    if ids.shape[1] >= length:
        return ids[:, :length]
    return torch.cat([ids, ids.new_full((ids.shape[0], length - ids.shape[1]), pad_id)], dim=1)


def teacher_sequences(
    teacher: Any,
    prompts: Tensor,
    gen_len: int,
    block_len: int,
    pad_id: int,
    *,
    sample: bool,
    seed: int,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Sequence-level KD data: the teacher continues each prompt ``(N, P)`` by ``gen_len`` tokens.
    Returns ``ids (N, block_len)`` (right-padded) and the loss mask of the continuation."""
    g = torch.Generator().manual_seed(seed)
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="teacher generates", unit="seq", leave=False, dynamic_ncols=True)
    for start in range(0, len(prompts), batch_size):
        seq = generate(teacher, prompts[start : start + batch_size], gen_len, sample=sample, generator=g)
        out.append(pad_to(seq, block_len, pad_id))
        if bar is not None:
            bar.update(len(seq))
    if bar is not None:
        bar.close()
    ids = torch.cat(out)
    return ids, continuation_mask(len(ids), prompts.shape[1], gen_len, block_len)


def api_sequences(tokenizer: Any, pairs: list[tuple[str, str]], block_len: int) -> tuple[Tensor, Tensor]:
    """Sequence-level KD data from ``(prompt, completion)`` text pairs (e.g. a black-box API's answers)."""
    return pad_examples(encode_pairs(tokenizer, pairs), block_len, tokenizer.eos_token_id)


def on_policy_sequences(
    student: Any, blocks: Tensor, prompt_len: int, gen_len: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """GKD's on-policy batch: the student (sampling, no gradient) continues the first ``prompt_len``
    tokens of each block by ``gen_len`` tokens; the mask marks the generated positions, which the
    teacher then scores."""
    seq = generate(student, blocks[:, :prompt_len], gen_len, sample=True, generator=generator)
    return seq, continuation_mask(len(seq), prompt_len, gen_len, seq.shape[1])


def samples(
    models: dict[str, Any], tokenizer: Any, prompts: Tensor, new_tokens: int, *, seed: int
) -> list[dict[str, str]]:
    """Greedy and sampled (seeded) continuations of each prompt by each model, as text."""
    rows = []
    for i, p in enumerate(prompts):
        row = {"prompt": tokenizer.decode(p.tolist())}
        for name, m in models.items():
            g = torch.Generator().manual_seed(seed + i)
            row[f"{name} (greedy)"] = tokenizer.decode(generate(m, p[None], new_tokens, sample=False)[0, len(p) :].tolist())
            row[f"{name} (sampled)"] = tokenizer.decode(
                generate(m, p[None], new_tokens, sample=True, generator=g)[0, len(p) :].tolist()
            )
        rows.append(row)
    return rows
