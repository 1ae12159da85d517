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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (x86 AVX512-BF16 or AMX tiles).

    Where it does, oneDNN's bf16 matmuls run ~4x the fp32 rate; where it does not, bf16 is
    emulated and slower than fp32. (``torch.cpu``'s probes are underscored but are what
    PyTorch's own CPU code paths ask; a torch without them reports no native bf16.)
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 autocast on CUDA and on CPUs with native bf16 matmuls, fp32 elsewhere.

    Autocast keeps weights, gradients and optimizer state in fp32 (mixed precision); only
    matmul inputs round to bf16. It stays deterministic on CPU (a rerun gives the same bits).
    """
    if name == "auto":
        native_bf16 = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native_bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
