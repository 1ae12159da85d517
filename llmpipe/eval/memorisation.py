"""Memorisation: does a model, continuing held-out text, reproduce its training corpus verbatim?

From the prefixes of validation documents (never trained on) the model continues greedily;
a continuation is *memorised* when it contains a span of at least ``span`` tokens that occurs
verbatim in the train token shards. The longest copied span is measured exactly:

- the index holds every ``k``-token window of the train tokens as a 64-bit polynomial hash,
  sorted, with its position (numpy, ~16 bytes a train token; no Python object per window);
- for each start in a continuation, the train positions whose window hash equals the
  continuation's are extended token by token against the train tokens themselves, so a hash
  collision never counts; a span shorter than ``k`` is not seen (reported as 0);
- a window that occurs more than ``MAX_CANDIDATES`` times is extended from its first ones
  only; ``capped_lookups`` counts those, where the longest span is a lower bound.

Windows crossing two documents contain the second one's ``<|bos|>``; generation stops at
``<|bos|>``, so they can never match and need no special case.

The same measure on the validation documents' own next tokens (``reference_*``) says how
much the held-out text itself shares with train: a model that copies no more than that is
not memorising beyond what the data repeats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmpipe.model.generate import Sampling, generate_batched
from llmpipe.model.gpt import GPT
from llmpipe.tokenizer.pack import load_stream

MAX_CANDIDATES = 4096  # train positions extended per continuation window (all at once, vectorised)
EXAMPLES = 5  # continuations with the longest copied spans kept for the report
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial hash (mod 2**64)


def window_hashes(tokens: np.ndarray, k: int) -> np.ndarray:
    """The polynomial hash (mod 2**64) of every ``k``-token window of ``tokens``, in order."""
    n = len(tokens) - k + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    t = tokens.astype(np.uint64) + np.uint64(1)  # +1: a zero token still moves the hash
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # k vectorised passes: wrap-around multiply-add is the mod 2**64
            h = h * _BASE + t[j : j + n]
    return h


@dataclass(frozen=True)
class TrainIndex:
    tokens: np.ndarray  # the train token shards, concatenated
    k: int  # window length of the index
    hashes: np.ndarray  # sorted window hashes
    positions: np.ndarray  # their start positions in ``tokens``

    @classmethod
    def build(cls, headers: list[str], k: int) -> TrainIndex:
        """The index of the token shards' (``tokens/train/*.json`` headers) ``k``-token windows."""
        tokens, _, _ = load_stream(headers)
        tokens = tokens.astype(np.int64)
        hashes = window_hashes(tokens, k)
        order = np.argsort(hashes, kind="stable")
        return cls(tokens, k, hashes[order], order.astype(np.int64))

    def longest_match(self, seq: list[int]) -> tuple[int, bool]:
        """The longest span of ``seq`` found verbatim in the train tokens (0 if none of ``k``
        or more), and whether a lookup was capped at ``MAX_CANDIDATES`` (then a lower bound)."""
        query = np.asarray(seq, dtype=np.int64)
        best, capped = 0, False
        for i, h in enumerate(window_hashes(query, self.k)):
            if best >= len(query) - i:
                break  # nothing starting here can be longer
            lo, hi = np.searchsorted(self.hashes, h, "left"), np.searchsorted(self.hashes, h, "right")
            if hi - lo > MAX_CANDIDATES:
                capped, hi = True, lo + MAX_CANDIDATES
            if hi > lo:
                best = max(best, self._extend(self.positions[lo:hi], query[i:]))
        return best, capped


    def _extend(self, starts: np.ndarray, rest: np.ndarray) -> int:
        """The longest common prefix of ``rest`` and the train tokens at any of ``starts``."""
        at = starts[:, None] + np.arange(len(rest))
        inside = at < len(self.tokens)
        same = (self.tokens[np.minimum(at, len(self.tokens) - 1)] == rest[None, :]) & inside
        return int(np.where(same.all(axis=1), len(rest), same.argmin(axis=1)).max())


def held_out_docs(headers: list[str]) -> list[list[int]]:
    """The documents of the validation token shards, each as its token ids (``<|bos|>`` first)."""
    tokens, offsets, _ = load_stream(headers)
    starts = np.concatenate([[0], offsets[:-1]])
    return [tokens[a:b].tolist() for a, b in zip(starts, offsets)]


def pick(docs: list[list[int]], n: int, min_len: int) -> list[list[int]]:
    """``n`` documents of at least ``min_len`` tokens, evenly spaced over the split."""
    long_enough = [d for d in docs if len(d) >= min_len]
    if len(long_enough) <= n:
        return long_enough
    return [long_enough[i * len(long_enough) // n] for i in range(n)]


def memorisation_metrics(model: GPT, tokenizer, index: TrainIndex, docs: list[list[int]], p: dict) -> dict:
    """Share of greedy continuations of held-out prefixes that copy >= ``memorisation_span``
    train tokens verbatim, the longest copied span, and the held-out text's own figures."""
    prefix_len, new, span = p["memorisation_prefix_tokens"], p["memorisation_new_tokens"], p["memorisation_span"]
    chosen = pick(docs, p["memorisation_prefixes"], prefix_len + 1)
    if not chosen:
        return {"n": 0, "span_tokens": span}
    prefixes = [d[:prefix_len] for d in chosen]
    sampling = Sampling(new, temperature=0, stop_ids=(tokenizer.eos_id, tokenizer.bos_id))
    completions = generate_batched(model, prefixes, sampling, tokenizer.pad_id, p["generation_batch_size"])
    continuations = [c.tokens for c in completions]
    found = [index.longest_match(c) for c in continuations]
    reference = [index.longest_match(d[prefix_len : prefix_len + new]) for d in chosen]
    longest = [n for n, _ in found]
    ranked = sorted(range(len(chosen)), key=lambda i: -longest[i])[:EXAMPLES]
    return {
        "n": len(chosen), "prefix_tokens": prefix_len, "new_tokens": new, "span_tokens": span,
        "index_window": index.k, "train_tokens": int(len(index.tokens)),
        "rate": sum(n >= span for n in longest) / len(chosen),
        "longest_span": max(longest), "mean_longest_span": sum(longest) / len(chosen),
        "mean_continuation_tokens": sum(map(len, continuations)) / len(chosen),
        "reference_rate": sum(n >= span for n, _ in reference) / len(chosen),
        "reference_longest_span": max(n for n, _ in reference),
        "capped_lookups": sum(c for _, c in found) + sum(c for _, c in reference),
        "examples": [{"prefix": tokenizer.decode(prefixes[i][1:] if prefixes[i][:1] == [tokenizer.bos_id]
                                                 else prefixes[i]),
                      "continuation": tokenizer.decode(continuations[i]), "longest_span": longest[i]}
                     for i in ranked],
    }
