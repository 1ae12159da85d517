"""Pretraining throughput and MFU of the gpt2 preset at context 1024 on one CUDA GPU.

Variants side by side in one run: plain eager fp32 (TF32 matmuls), eager bf16 autocast,
bf16 + torch.compile + fused AdamW (what ``llmpipe pretrain`` runs on CUDA), and the same with
the document mask (FlexAttention block mask from segment ids, ~8 documents per row).
MFU counts 6·N + 12·L·H·Q·T flops per token against the device's dense bf16 peak. Before timing,
``--check-flex`` compares FlexAttention's gradients with the dense mask's on the GPU.

``--optimizers adamw muon`` and ``--qk-norm off on`` repeat the chosen variants for each optimizer
(``llmpipe.train.optim``: fused AdamW, or Muon for the block matrices) and with QK-norm on or off.

    python benchmarks/pretrain_gpu.py [--batch 32] [--steps 20] [--preset gpt2] [--check-flex]
        [--optimizers adamw muon] [--qk-norm off on]
"""
from __future__ import annotations

import argparse
import time

import torch

from llmpipe.model.device import pick_device
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.train.optim import build_optimizer
from llmpipe.train.runtime import Runtime

# the pretrain schema's defaults for the optimizer keys (lr as nanoGPT's gpt2 run)
OPTIMIZER = {"lr": 6e-4, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "muon_lr": 0.02, "muon_momentum": 0.95,
             "muon_ns_steps": 5, "muon_weight_decay": 0.0}

VARIANTS = {  # name -> (autocast dtype, compile, document mask)
    "eager fp32 (tf32)": (torch.float32, False, False),
    "eager bf16": (torch.bfloat16, False, False),
    "compile bf16": (torch.bfloat16, True, False),
    "compile bf16 + document mask (flex)": (torch.bfloat16, True, True),
}


def document_segments(batch: int, length: int, documents: int, device) -> torch.Tensor:
    """Segment ids [batch, length]: ``documents`` equal documents per row, numbered from 1."""
    return (torch.arange(length, device=device) * documents // length + 1).expand(batch, length).contiguous()


def check_flex_gradients(config: GPTConfig, device) -> float:
    """Largest relative gradient difference between the FlexAttention and dense-mask paths (fp32)."""
    torch.manual_seed(0)
    small = GPTConfig(**{**config.to_dict(), "n_layer": 2, "context_length": 256})
    model = GPT(small).to(device)
    x = torch.randint(0, small.vocab_size, (4, small.context_length), device=device)
    y = torch.roll(x, -1, dims=1)
    segments = document_segments(4, small.context_length, 5, device)
    grads = []
    for flex in (False, True):
        model.zero_grad(set_to_none=True)
        _, loss = model(x, y, segments=segments, flex=flex)
        loss.backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return max(float((a - b).norm() / b.norm().clamp(min=1e-12)) for a, b in zip(*grads))


def train_step(
    forward, model: GPT, optimizer: torch.optim.Optimizer, runtime: Runtime, x: torch.Tensor, y: torch.Tensor,
    segments: torch.Tensor | None = None,
) -> None:
    """One optimizer step: ``forward`` is ``model`` itself or its ``torch.compile`` wrapper."""
    with runtime.autocast():
        _, loss = forward(x, y, segments=segments)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(
    config: GPTConfig, batch: int, steps: int, dtype: torch.dtype, compiled: bool, document_mask: bool, device,
    optimizer_name: str = "adamw",
) -> tuple[float, float]:
    """(tokens/s, MFU) over ``steps`` optimizer steps after warm-up."""
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = build_optimizer(model, {**OPTIMIZER, "optimizer": optimizer_name}, fused=True)
    forward = torch.compile(model) if compiled else model
    runtime = Runtime(device, dtype)
    x = torch.randint(0, config.vocab_size, (batch, config.context_length), device=device)
    y = torch.roll(x, -1, dims=1)
    segments = document_segments(batch, config.context_length, 8, device) if document_mask else None

    for _ in range(5 if compiled else 3):  # compilation, autotuning, allocator warm-up
        train_step(forward, model, optimizer, runtime, x, y, segments)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(forward, model, optimizer, runtime, x, y, segments)
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
    parser.add_argument("--check-flex", action="store_true", help="FlexAttention vs dense-mask gradients")
    parser.add_argument("--optimizers", nargs="*", default=["adamw"], choices=["adamw", "muon"])
    parser.add_argument("--qk-norm", nargs="*", default=["off"], choices=["off", "on"])
    args = parser.parse_args()
    device = pick_device("auto")
    if device.type != "cuda":
        raise SystemExit("pretrain_gpu.py measures a CUDA GPU; none is available here")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = GPTConfig.from_preset(args.preset, vocab_size=args.vocab_size, context_length=args.context)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, preset {args.preset}, "
          f"batch {args.batch} x {args.context}, {model_flops(config) / 1e9:.2f} GFLOP/token")
    if args.check_flex:
        print(f"FlexAttention vs dense document mask, fp32 gradients: max relative difference "
              f"{check_flex_gradients(config, device):.2e}")
    print("| variant | optimizer | QK-norm | tokens/s | MFU |\n|---|---|---|---|---|")
    for name in args.variants:
        for optimizer_name in args.optimizers:
            for qk in args.qk_norm:
                cfg = GPTConfig(**{**config.to_dict(), "qk_norm": qk == "on"})
                label = f"| {name} | {optimizer_name} | {qk} |"
                try:
                    tps, mfu = measure(cfg, args.batch, args.steps, *VARIANTS[name], device, optimizer_name)
                except torch.OutOfMemoryError:  # the fp32 baseline may not fit a batch bf16 fits
                    print(f"{label} out of memory | |", flush=True)
                    torch.cuda.empty_cache()
                    continue
                print(f"{label} {tps:,.0f} | {mfu:.1%} |", flush=True)


if __name__ == "__main__":
    main()
