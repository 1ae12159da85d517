"""Pretraining throughput and MFU of the gpt2 preset at context 1024 on one CUDA GPU.

Variants side by side in one run: plain eager fp32 (TF32 matmuls), eager bf16 autocast, and
bf16 + torch.compile + fused AdamW (what ``llmpipe pretrain`` runs on CUDA).
MFU counts 6·N + 12·L·H·Q·T flops per token against the device's dense bf16 peak.

    python benchmarks/pretrain_gpu.py [--batch 32] [--steps 20] [--preset gpt2]
"""
from __future__ import annotations

import argparse
import time

import torch

from llmpipe.model.device import pick_device
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.train.runtime import Runtime

VARIANTS = {  # name -> (autocast dtype, compile)
    "eager fp32 (tf32)": (torch.float32, False),
    "eager bf16": (torch.bfloat16, False),
    "compile bf16": (torch.bfloat16, True),
}


def train_step(
    forward, model: GPT, optimizer: torch.optim.Optimizer, runtime: Runtime, x: torch.Tensor, y: torch.Tensor
) -> None:
    """One optimizer step: ``forward`` is ``model`` itself or its ``torch.compile`` wrapper."""
    with runtime.autocast():
        _, loss = forward(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(
    config: GPTConfig, batch: int, steps: int, dtype: torch.dtype, compiled: bool, device
) -> tuple[float, float]:
    """(tokens/s, MFU) over ``steps`` optimizer steps after warm-up."""
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = model.optimizer(6e-4, 0.1, (0.9, 0.95), fused=True)
    forward = torch.compile(model) if compiled else model
    runtime = Runtime(device, dtype)
    x = torch.randint(0, config.vocab_size, (batch, config.context_length), device=device)
    y = torch.roll(x, -1, dims=1)

    for _ in range(5 if compiled else 3):  # compilation, autotuning, allocator warm-up
        train_step(forward, model, optimizer, runtime, x, y)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(forward, model, optimizer, runtime, x, y)
    torch.cuda.synchronize()
    tokens_per_s = batch * config.context_length * steps / (time.perf_counter() - start)
    peak = runtime.peak_flops() or float("nan")
    del model, optimizer, forward
    torch.cuda.empty_cache()
    return tokens_per_s, model_flops(config) * tokens_per_s / peak


def model_flops(config: GPTConfig) -> float:
    with torch.device("meta"):
        return GPT(config).flops_per_token()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--vocab-size", type=int, default=50304)  # GPT-2's 50257 padded to a multiple of 64
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    device = pick_device("auto")
    if device.type != "cuda":
        raise SystemExit("pretrain_gpu.py measures a CUDA GPU; none is available here")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = GPTConfig.from_preset(args.preset, vocab_size=args.vocab_size, context_length=args.context)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, preset {args.preset}, "
          f"batch {args.batch} x {args.context}, {model_flops(config) / 1e9:.2f} GFLOP/token")
    print("| variant | tokens/s | MFU |\n|---|---|---|")
    for name in args.variants:
        try:
            tps, mfu = measure(config, args.batch, args.steps, *VARIANTS[name], device)
        except torch.OutOfMemoryError:  # the fp32 baseline may not fit a batch bf16 fits
            print(f"| {name} | out of memory | |", flush=True)
            torch.cuda.empty_cache()
            continue
        print(f"| {name} | {tps:,.0f} | {mfu:.1%} |", flush=True)


if __name__ == "__main__":
    main()
