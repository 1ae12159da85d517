"""Device and precision choice, resolved the same way by training, evaluation and chat."""
from __future__ import annotations

import torch


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is cuda, then mps, then cpu; an explicit name is taken as given."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 autocast on CUDA, fp32 elsewhere (exact and deterministic on CPU)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
