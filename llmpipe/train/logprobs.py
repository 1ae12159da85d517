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

from llmpipe.model.gpt import GPT
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
def summed_logprobs(model: GPT, pairs: Sequence[Pair], pad_id: int, batch_size: int, runtime: Runtime) -> torch.Tensor:
    """Summed completion log-probs [N] (on the CPU) of many pairs, batched, without gradients:
    a frozen reference's scores, an evaluation."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pair_batch(pairs[start : start + batch_size], pad_id, model.config.context_length)
        with runtime.autocast():
            out.append(sequence_logprobs(model, batch.to(runtime.device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
