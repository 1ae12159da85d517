"""Generation speed with and without the KV cache: tokens/s at 512 new tokens.

    python benchmarks/generate.py [--preset tiny] [--new-tokens 512] [--batch 1] [--device auto]
"""
from __future__ import annotations

import argparse
import time

import torch

from llmpipe.model.device import pick_device
from llmpipe.model.generate import Sampling, generate
from llmpipe.model.gpt import GPT, GPTConfig


def tokens_per_second(model: GPT, prompts: list[list[int]], new_tokens: int, use_cache: bool) -> tuple[float, list]:
    sampling = Sampling(max_new_tokens=new_tokens, temperature=0)
    if model.embed_tokens.weight.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate(model, prompts, sampling, use_cache=use_cache)
    if model.embed_tokens.weight.device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(o) for o in out) / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    config = GPTConfig.from_preset(
        args.preset, vocab_size=args.vocab_size, context_length=args.prompt_tokens + args.new_tokens
    )
    model = GPT(config).to(device).eval()
    prompts = torch.randint(0, args.vocab_size, (args.batch, args.prompt_tokens)).tolist()
    tokens_per_second(model, prompts, 8, True)  # warm-up (kernels, allocator)
    cached, out_cached = tokens_per_second(model, prompts, args.new_tokens, True)
    uncached, out_uncached = tokens_per_second(model, prompts, args.new_tokens, False)
    print(f"device {device}, preset {args.preset} ({model.num_params() / 1e6:.1f}M params), "
          f"batch {args.batch}, prompt {args.prompt_tokens}, new tokens {args.new_tokens}")
    print(f"| mode | tokens/s |\n|---|---|\n| KV cache | {cached:,.0f} |\n| no cache | {uncached:,.0f} |")
    print(f"speed-up {cached / uncached:.1f}x; identical greedy tokens: {out_cached == out_uncached}")


if __name__ == "__main__":
    main()
