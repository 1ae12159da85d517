"""Text generation: a KV-cache engine over batched prompts, and ``llmpipe generate``.

Prompts of different lengths are left-padded; padding gets segment 0, so the document mask
keeps real tokens from attending to it (RoPE is relative, so the offset changes nothing).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import torch

from llmpipe.model.gpt import GPT, KVCache


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    stop_ids: tuple[int, ...] = ()
    seed: int = 0


def sample_next(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from [B, V] logits: greedy, or temperature with top-k / nucleus (top-p)."""
    if s.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / s.temperature
    if s.top_k is not None and s.top_k < logits.size(-1):
        kth = torch.topk(logits, s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p is not None and s.top_p < 1.0:
        # Holtzman et al. 2020: keep the smallest set whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= s.top_p  # the first always stays
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    # inverse-CDF sampling: the first token whose cumulative probability exceeds a uniform draw
    # scaled to the row's total, so a token of probability 0 is not drawn (save when the draw
    # rounds up to the total itself, about once in 2^24 draws: then the last token). The same
    # distribution as torch.multinomial, at a thirtieth of its time on a CPU for 128 x 2048
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    draw = torch.rand(cdf.size(0), 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw, right=True).squeeze(-1).clamp_(max=cdf.size(-1) - 1)


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and segments (1 = prompt, 0 = padding) of prompts aligned on the right."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    segments = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        segments[row, width - len(prompt):] = 1
    return ids.to(device), segments.to(device)


def distinct_prompts(prompts: list[list[int]]) -> tuple[list[int], list[int]]:
    """Indices of each distinct prompt's first occurrence, and each prompt's distinct index."""
    index: dict[tuple[int, ...], int] = {}
    firsts: list[int] = []
    inverse: list[int] = []
    for row, prompt in enumerate(prompts):
        key = tuple(prompt)
        if key not in index:
            index[key] = len(firsts)
            firsts.append(row)
        inverse.append(index[key])
    return firsts, inverse


COMPACT_FRACTION = 0.25  # drop finished rows once this share of the live ones has finished


@torch.no_grad()
def generate(
    model: GPT, prompts: list[list[int]], sampling: Sampling, pad_id: int = 0, use_cache: bool = True,
    share_prompts: bool = True, compact: bool = True,
) -> list[list[int]]:
    """New tokens for each prompt, without the stop token that ended it.

    With ``use_cache`` the prompt is run once and each step feeds only the newest token;
    without, every step reruns the whole sequence (the reference the cache must equal).
    ``share_prompts``: a prompt that occurs several times in the batch (RL's group of samples of
    one problem, pass@k's k samples) is prefilled once and its keys and values copied to each
    of its rows. ``compact``: once a quarter of the live rows have hit a stop token they leave
    the batch (and the cache), so the steps after run on the unfinished rows only; the loop
    ends when every row has finished. Greedy decoding gives the same tokens either way; seeded
    sampling draws the same distribution, though once rows leave, not the same random numbers.
    The two switches exist to measure what they save (``benchmarks/rl_sampling.py``).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token (start it with <|bos|>)")
    limit = model.config.context_length
    prompts = [p[-(limit - 1):] for p in prompts]  # keep the most recent context
    device = next(model.parameters()).device
    ids, segments = left_pad(prompts, pad_id, device)
    steps = max(0, min(sampling.max_new_tokens, limit - ids.size(1)))
    generator = None
    if sampling.temperature != 0:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    n = len(prompts)
    result = torch.full((n, steps), -1, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)  # the prompt of each live row
    stop = torch.tensor(list(sampling.stop_ids), dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)  # per live row
    cache = logits = None
    if use_cache and steps:
        firsts, inverse = distinct_prompts(prompts) if share_prompts else (list(range(n)), list(range(n)))
        cache = KVCache(model.config, len(firsts), ids.size(1) + steps, device, next(model.parameters()).dtype)
        logits, _ = model(ids[firsts], segments=segments[firsts], cache=cache)
        if len(firsts) < n:
            expand = torch.tensor(inverse, device=device)
            cache.select(expand)
            logits = logits[expand]
    step_ids = step_segments = None
    for t in range(steps):
        if not use_cache:
            logits, _ = model(ids, segments=segments)
        elif t:  # the prefill gave step 0's logits
            logits, _ = model(step_ids, segments=step_segments, cache=cache)
        token = sample_next(logits[:, -1], sampling, generator)
        result[rows, t] = torch.where(done, -1, token)
        done |= torch.isin(token, stop)
        if bool(done.all()):
            break
        if compact and int(done.sum()) >= COMPACT_FRACTION * len(rows):
            live = (~done).nonzero().squeeze(1)
            rows, token, done = rows[live], token[live], done[live]
            if use_cache:
                cache.select(live)
            else:
                ids, segments = ids[live], segments[live]
        ones = torch.ones_like(token)[:, None]
        if use_cache:
            step_ids, step_segments = token[:, None], ones
        else:
            ids, segments = torch.cat([ids, token[:, None]], 1), torch.cat([segments, ones], 1)
    return [[t for t in row if t >= 0 and t not in sampling.stop_ids] for row in result.tolist()]


@dataclass(frozen=True)
class Completion:
    tokens: list[int]  # the new tokens, without the stop token that ended them
    ended: bool  # stopped at a stop token within its budget (not cut by max_new_tokens or the context)


def generate_batched(
    model: GPT, prompts: list[list[int]], sampling: Sampling, pad_id: int, batch_size: int, **engine: bool
) -> list[Completion]:
    """``generate`` over ``prompts`` in batches of ``batch_size``, telling which completions ended.

    The engine drops the stop token, so a completion shorter than the steps its batch was given
    stopped at one. Batch ``k`` samples with seed ``sampling.seed + k * batch_size``: a fixed
    seed draws the same way however many batches there are before it. ``engine``: ``generate``'s
    ``share_prompts`` / ``compact`` switches.
    """
    out: list[Completion] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        budget = min(sampling.max_new_tokens, model.config.context_length - max(len(p) for p in chunk))
        chunk_sampling = dataclasses.replace(sampling, seed=sampling.seed + start)
        news = generate(model, chunk, chunk_sampling, pad_id, **engine)
        out += [Completion(new, len(new) < budget) for new in news]
    return out


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument(
        "--model", required=True, help="model directory (model.safetensors, config.json, tokenizer.json)"
    )
    parser.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")


def run(args: argparse.Namespace, stage: str) -> int:
    from llmpipe.model.device import pick_device
    from llmpipe.model.directory import load_model, load_tokenizer

    model = load_model(args.model, pick_device(args.device))
    tokenizer = load_tokenizer(args.model)
    prompts = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in args.prompt]
    sampling = Sampling(
        args.max_new_tokens, args.temperature, args.top_k, args.top_p,
        stop_ids=(tokenizer.eos_id, tokenizer.bos_id), seed=args.seed,
    )
    for prompt, new in zip(args.prompt, generate(model, prompts, sampling, tokenizer.pad_id, not args.no_cache)):
        print(prompt + tokenizer.decode(new), flush=True)
        print("---", flush=True)
    return 0
