"""Optimizers for pretraining and post-training: AdamW, or Muon for the hidden matrices.

``build_optimizer`` reads a stage's ``optimizer`` key. ``adamw`` is torch's AdamW with decay on
matrices only. ``muon`` follows nanochat's split (Karpathy 2025, ``nanochat/gpt.py``
``setup_optimizers``): the 2-D weights inside the transformer blocks (attention and MLP
projections) are trained with Muon, while the token embedding, the output head (tied to it by
default) and every norm gain stay on AdamW — Muon's orthogonalised update suits a matrix that
maps one hidden space to another, not a lookup table or a vector.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon; the ``Muon`` optimizer of modded-nanogpt): keep a momentum
buffer of the gradient, take its Nesterov look-ahead, replace that matrix by the nearest
semi-orthogonal one (U V^T of its SVD, approximated by a few Newton–Schulz iterations), and step
along it, scaled by sqrt(max(1, rows / cols)) so tall and wide matrices get updates of comparable
per-element size. The quintic iteration's coefficients (3.4445, -4.7750, 2.0315) are the ones
Jordan tuned to push every singular value into roughly [0.7, 1.2] in five steps from a
Frobenius-normalised start; the result is not exactly orthogonal, and need not be.

Distributed training. DDP all-reduces (averages) the gradients during ``backward``, before
``optimizer.step`` runs, so every rank holds the same gradient, hence the same momentum buffer,
hence computes the same orthogonalised update: the ranks stay in lock-step without any further
communication. The price is that each rank repeats the Newton–Schulz work for every matrix;
modded-nanogpt instead gives each rank a share of the matrices, orthogonalises its share and
all-gathers the updates. At our sizes (≤ 350M parameters, a few matmuls of ≤ 4096² per matrix
per step) the repeated work is a small fraction of a step's forward and backward, so we keep
the simpler, communication-free form.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

OPTIMIZERS = ("adamw", "muon")
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan's quintic Newton–Schulz coefficients


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with ``g``'s singular vectors (``U V^T``).

    Iterates X <- a X + (b A + c A^2) X with A = X X^T on the wide orientation (rows <= cols,
    so A is the smaller Gram matrix), starting from X = g / ||g||_F so every singular value
    starts in [0, 1]. Runs in bfloat16 on CUDA (as Jordan's does: the iteration tolerates it
    and tensor cores make it cheap) and in float32 elsewhere, where it stays bit-reproducible.
    """
    if g.dim() != 2:
        raise ValueError(f"newton_schulz: expected a matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        # addmm folds the scalings into the matrix products: 3 ops an iteration, not 7 (a fifth
        # less time on a CPU, where the default run's Muon step was 15% of a pretraining step)
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, polynomial, x, beta=a)  # a X + (b A + c A^2) X
    return (x.T if tall else x).to(g.dtype)


def muon_direction(
    grad: torch.Tensor, buf: torch.Tensor, momentum: float, ns_steps: int, nesterov: bool = True
) -> torch.Tensor:
    """Update ``buf`` (the gradient's moving average) in place; return the step's direction.

    buf <- momentum * buf + (1 - momentum) * grad; the direction orthogonalises the Nesterov
    look-ahead (1 - momentum) * grad + momentum * buf (or ``buf`` itself without Nesterov),
    scaled by sqrt(max(1, rows / cols)).
    """
    buf.lerp_(grad, 1 - momentum)
    ahead = grad.lerp(buf, momentum) if nesterov else buf
    scale = math.sqrt(max(1.0, grad.size(0) / grad.size(1)))
    return newton_schulz(ahead, ns_steps) * scale


class Muon(torch.optim.Optimizer):
    """Muon for groups with ``muon=True``, AdamW (decoupled decay, bias-corrected) for the rest.

    One optimizer object, so ``state_dict`` / ``load_state_dict`` checkpoint both halves (each
    Muon parameter's momentum buffer; each AdamW parameter's step and moments) the usual way.
    Every group's ``weight_decay`` is decoupled: p <- p * (1 - lr * weight_decay).
    """

    def __init__(self, groups: list[dict], lr: float = 0.02, momentum: float = 0.95, ns_steps: int = 5,
                 nesterov: bool = True, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        defaults = dict(lr=lr, momentum=momentum, ns_steps=ns_steps, nesterov=nesterov, betas=betas, eps=eps,
                        weight_decay=weight_decay, muon=False)
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon: a muon group may hold only matrices (2-D parameters)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if wd:
                    p.mul_(1 - lr * wd)
                if group["muon"]:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    direction = muon_direction(p.grad, state["momentum_buffer"], group["momentum"],
                                               group["ns_steps"], group["nesterov"])
                    p.add_(direction, alpha=-lr)
                else:
                    adamw_update(p, p.grad, state, group["betas"], group["eps"], lr)
        return loss


def adamw_update(p: torch.Tensor, grad: torch.Tensor, state: dict, betas: tuple[float, float], eps: float,
                 lr: float) -> None:
    """Adam's bias-corrected step (Kingma & Ba 2015); decay is applied by the caller (AdamW)."""
    beta1, beta2 = betas
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    state["step"] += 1
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    correction1 = 1 - beta1 ** state["step"]
    correction2 = 1 - beta2 ** state["step"]
    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(correction2)).add_(eps)
    p.addcdiv_(state["exp_avg"], denom, value=-lr / correction1)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights inside the transformer blocks: Muon's share (nanochat's ``matrix_params``)."""
    return [p for p in model.layers.parameters() if p.requires_grad and p.dim() == 2]


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:  # a tied head is the embedding itself: one parameter, one group
            seen.add(id(p))
            out.append(p)
    return out


def build_optimizer(model: nn.Module, p: dict, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer a stage's config asks for (``optimizer``, default ``adamw``).

    Each group records its ``peak_lr``; ``set_lr_scale`` sets every group to its peak times the
    schedule's factor, so AdamW's ``lr`` and Muon's ``muon_lr`` follow one warmup and decay.
    """
    betas = (p["beta1"], p["beta2"])
    kind = p.get("optimizer", "adamw")
    if kind == "adamw":
        adamw = model.optimizer(p["lr"], p["weight_decay"], betas, fused=fused)
        for group in adamw.param_groups:
            group["peak_lr"] = p["lr"]
        return adamw
    if kind != "muon":
        raise ValueError(f"optimizer {kind!r} is not one of {OPTIMIZERS}")
    params = _unique(q for q in model.parameters() if q.requires_grad)
    matrices = hidden_matrices(model)
    ids = {id(q) for q in matrices}
    rest = [q for q in params if id(q) not in ids]
    groups = [
        {"params": matrices, "muon": True, "lr": p["muon_lr"], "peak_lr": p["muon_lr"],
         "momentum": p["muon_momentum"], "ns_steps": p["muon_ns_steps"], "weight_decay": p["muon_weight_decay"]},
        {"params": [q for q in rest if q.dim() >= 2], "weight_decay": p["weight_decay"], "peak_lr": p["lr"]},
        {"params": [q for q in rest if q.dim() < 2], "weight_decay": 0.0, "peak_lr": p["lr"]},
    ]
    return Muon([g for g in groups if g["params"]], lr=p["lr"], betas=betas)


def set_lr_scale(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """Every group's learning rate to its ``peak_lr`` times ``scale`` (the schedule's factor)."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * scale
