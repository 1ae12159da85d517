"""Learning-rate schedules and batch orders shared by pretraining and post-training."""
from __future__ import annotations

import math

import torch


def lr_at(step: int, p: dict) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < p["warmup_steps"]:
        return p["lr"] * (step + 1) / p["warmup_steps"]
    span = max(1, p["max_steps"] - p["warmup_steps"])
    progress = min(1.0, (step - p["warmup_steps"]) / span)
    floor = p["lr"] * p["min_lr_ratio"]
    return floor + 0.5 * (p["lr"] - floor) * (1 + math.cos(math.pi * progress))


def batch_order(n_rows: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Row indices of each step: a fresh seeded shuffle every epoch, batches never span two."""
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n_rows, generator=g)
        out += list(perm.split(batch_size))
    return out[:steps]


def short_run_schedule(p: dict, steps: int) -> dict:
    """The keys ``lr_at`` reads, with warmup no longer than a tenth of a short run."""
    return {"lr": p["lr"], "min_lr_ratio": p["min_lr_ratio"], "max_steps": steps,
            "warmup_steps": min(p["warmup_steps"], max(1, steps // 10))}
