"""Completion log-probabilities of (prompt, completion) token pairs, shared by DPO and RL.

Sequences are right-padded: the model is causal, so padding after a sequence's last token
cannot change any real position's logits, and padded targets are ignored (-1). Log-probs are
taken of ``logits / temperature`` — RL must score a sample with the distribution it was drawn
from — and are differentiable unless the caller wraps them in ``torch.no_grad``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmpipe.model.generate import left_pad
from llmpipe.model.gpt import GPT, KVCache
from llmpipe.train.runtime import Runtime

Pair = tuple[Sequence[int], Sequence[int]]  # (prompt ids, completion ids)


@dataclass(frozen=True)
class PairBatch:
    """Right-padded next-token inputs [B, T] and targets [B, T]: -1 except on completion tokens."""

    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.targets >= 0

    def to(self, device) -> PairBatch:
        return PairBatch(self.inputs.to(device), self.targets.to(device))


def pair_batch(pairs: Sequence[Pair], pad_id: int, context_length: int | None = None) -> PairBatch:
    """Inputs and targets of ``pairs``; a pair longer than ``context_length`` is an error.

    The prompt must be non-empty (the first completion token is predicted from its last).
    """
    lengths = [len(p) + len(c) for p, c in pairs]
    for i, ((prompt, completion), n) in enumerate(zip(pairs, lengths)):
        if not prompt or not completion:
            raise ValueError(f"pair {i}: prompt and completion must both be non-empty")
        if context_length is not None and n - 1 > context_length:
            raise ValueError(f"pair {i}: {n} tokens do not fit the context of {context_length}")
    width = max(lengths) - 1
    inputs = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), width), -1, dtype=torch.long)
    for row, (prompt, completion) in enumerate(pairs):
        seq = torch.tensor([*prompt, *completion], dtype=torch.long)
        inputs[row, : len(seq) - 1] = seq[:-1]
        targets[row, len(prompt) - 1 : len(seq) - 1] = seq[len(prompt):]
    return PairBatch(inputs, targets)


def micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Row indices in groups to run one at a time: sorted by length, each group as many rows as
    fit ``max_tokens`` once padded to its longest (a longer row goes alone); every row once.

    On a CPU a forward and backward of 128 RL samples padded to one width took about twice the
    time of the same samples in length-sorted groups of 16 to 32 (6.7 s against 3.0 to 3.4 s, tiny
    model, 2 threads): a third of the padded positions were padding, and activations past the cache's
    size run slower per token. The order within a length is the input order (a stable sort).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    groups: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # sorted ascending, so this row is the group's longest
        if groups and (len(groups[-1]) + 1) * lengths[row] <= max_tokens:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def token_logprobs(
    model: GPT, batch: PairBatch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, T] of the targets under ``softmax(logits / temperature)`` (0 where
    masked), and, if asked, the per-token entropy of that distribution (detached, 0 where masked).

    Only completion positions are projected to the vocabulary: prompts and padding are a third
    to a half of an RL or DPO batch, and the head and its softmax are a large share of the cost.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to score samples, got {temperature}")
    mask = batch.mask
    hidden = model.hidden(batch.inputs)[mask]
    logits = model.lm_head(hidden).float() / temperature
    logp = torch.zeros(batch.targets.shape, dtype=logits.dtype, device=logits.device)
    logp = logp.masked_scatter(mask, -F.cross_entropy(logits, batch.targets[mask], reduction="none"))
    entropy = None
    if with_entropy:
        with torch.no_grad():
            full = logits.log_softmax(-1)
            entropy = torch.zeros_like(logp).masked_scatter(mask, -(full.exp() * full).sum(-1))
    return logp, entropy


def sequence_logprobs(model: GPT, batch: PairBatch, temperature: float = 1.0) -> torch.Tensor:
    """Summed completion log-prob of each row [B] (differentiable)."""
    return token_logprobs(model, batch, temperature)[0].sum(-1)


@torch.no_grad()
def summed_logprobs(model: GPT, pairs: Sequence[Pair], pad_id: int, max_tokens: int, runtime: Runtime) -> torch.Tensor:
    """Summed completion log-probs [N] (on the CPU, in the order of ``pairs``) of many pairs,
    without gradients, in length-sorted ``micro_batches`` of ``max_tokens``: a frozen
    reference's scores, an evaluation."""
    was_training = model.training
    model.eval()
    out = torch.zeros(len(pairs))
    for rows in micro_batches([len(p) + len(c) - 1 for p, c in pairs], max_tokens):
        batch = pair_batch([pairs[i] for i in rows], pad_id, model.config.context_length)
        with runtime.autocast():
            out[rows] = sequence_logprobs(model, batch.to(runtime.device)).float().cpu()
    model.train(was_training)
    return out


@torch.no_grad()
def option_logprobs(
    model: GPT, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]], pad_id: int,
    max_rows: int, runtime: Runtime,
) -> list[torch.Tensor]:
    """Summed log-probs of each prompt's options (``summed_logprobs`` of every (prompt, option)
    pair, as one tensor per prompt, on the CPU), running each prompt once.

    A multiple-choice probe scores its prompt with every answer of its kind (79 capitals): as
    pairs, the prompt's tokens go through the model once per option, most of the work. Here a
    batch of prompts is prefilled into a KV cache, each prompt's keys and values are copied to
    one row per option, and only the options' tokens are run (right-padded: the model is causal,
    so padding after an option cannot change its logits). ``max_rows`` bounds the option rows of
    one batch. Equal to the pairs' scores up to float rounding (prompts are left-padded, and
    RoPE is relative).
    """
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    start = 0
    while start < len(prompts):
        stop, rows = start, 0
        while stop < len(prompts) and (stop == start or rows + len(options[stop]) <= max_rows):
            rows += len(options[stop])
            stop += 1
        out += _option_batch(model, prompts[start:stop], options[start:stop], pad_id, runtime)
        start = stop
    model.train(was_training)
    return out


def _option_batch(
    model: GPT, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]], pad_id: int,
    runtime: Runtime,
) -> list[torch.Tensor]:
    device = runtime.device
    for i, (prompt, opts) in enumerate(zip(prompts, options)):
        if not prompt or any(not o for o in opts):
            raise ValueError(f"prompt {i}: the prompt and every option must be non-empty")
    ids, segments = left_pad([list(p) for p in prompts], pad_id, device)
    owner = [i for i, opts in enumerate(options) for _ in opts]
    flat = [list(o) for opts in options for o in opts]
    if not flat:
        return [torch.zeros(0) for _ in prompts]
    width = max(map(len, flat))
    if ids.size(1) + width - 1 > model.config.context_length:
        raise ValueError(f"a prompt and option of {ids.size(1) + width} tokens do not fit the context")
    lengths = torch.tensor([len(o) for o in flat])
    option_ids = torch.full((len(flat), width), pad_id, dtype=torch.long)
    for row, o in enumerate(flat):
        option_ids[row, : len(o)] = torch.tensor(o, dtype=torch.long)
    option_ids = option_ids.to(device)
    cache = KVCache(model.config, len(prompts), ids.size(1) + width - 1, device, next(model.parameters()).dtype)
    with runtime.autocast():
        last = model.lm_head(model.hidden(ids, segments=segments, cache=cache)[:, -1]).float().log_softmax(-1)
        owners = torch.tensor(owner, device=device)
        # the first option token is predicted by the prompt's last position, token j by option token j - 1
        totals = last[owners].gather(1, option_ids[:, :1]).squeeze(1).cpu()
        # options of one length run together, so none runs its batch's padding (options of the
        # default probes are 1 to 8 tokens, 3.2 on average: a padded batch ran twice the positions)
        for length in sorted(set(lengths.tolist()) - {1}):
            same = (lengths == length).nonzero().squeeze(1)
            rows = same.to(device)
            following = model(option_ids[rows, : length - 1], cache=cache.take(owners[rows]))[0]
            rest = following.float().log_softmax(-1).gather(2, option_ids[rows, 1:length, None]).squeeze(2)
            totals[same] += rest.sum(1).cpu()
    return list(totals.split([len(opts) for opts in options]))
