"""The one post-training skeleton that SFT, DPO and RL share.

It loads the base model directory, builds the optimizer, runs the steps under the short-run
schedule (warmup + cosine, as in pretraining), evaluates every ``eval_every`` steps and at the
end, and writes the model directory, ``metrics.jsonl`` and the CLI. ``sft.py``, ``dpo.py`` and
``rl.py`` hold only what differs — data encoding, loss, step and metrics — the way TRL's
trainers hold only their loss.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llmpipe.config import stage_params
from llmpipe.io import public, read_json, write_jsonl
from llmpipe.model.directory import CONFIG, TOKENIZER, load_model, load_tokenizer, save_model_dir
from llmpipe.model.gpt import GPT
from llmpipe.stats import StageStats
from llmpipe.tasks.chat_eval import fact_metrics
from llmpipe.tasks.facts import heldout_questions
from llmpipe.tasks.heldout import HeldOut, from_config
from llmpipe.tokenizer import Tokenizer
from llmpipe.train import runtime as rt
from llmpipe.train.optim import build_optimizer, set_lr_scale
from llmpipe.train.schedule import lr_at, short_run_schedule

# one training step: (step number from 1, row indices of its batch) -> the step's metrics
StepFn = Callable[[int, torch.Tensor], dict[str, Any]]


@dataclass(frozen=True)
class Base:
    """The model directory a stage starts from, loaded onto the stage's runtime."""

    path: Path
    model: GPT
    tokenizer: Tokenizer
    runtime: rt.Runtime

    def load_frozen(self) -> GPT:
        """A second, frozen copy of the starting weights (a reference model)."""
        return load_model(self.path, self.runtime.device).requires_grad_(False)


def load_base(p: dict, base: str | Path) -> Base:
    """Start the runtime, seed torch, and load the base model and its tokenizer."""
    runtime = rt.start(p["device"], p["dtype"])
    torch.manual_seed(p["seed"])
    base = Path(base)
    return Base(base, load_model(base, runtime.device), load_tokenizer(base), runtime)


def make_optimizer(model: GPT, p: dict, runtime: rt.Runtime) -> torch.optim.Optimizer:
    return build_optimizer(model, p, fused=runtime.device.type == "cuda")


def optimizer_step(model: GPT, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> float:
    """Backward, clip the gradient norm to ``grad_clip``, step, clear; the norm before clipping."""
    loss.backward()
    return apply_gradients(model, optimizer, grad_clip)


def apply_gradients(model: GPT, optimizer: torch.optim.Optimizer, grad_clip: float) -> float:
    """Clip the accumulated gradient's norm to ``grad_clip``, step, clear; the norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


def train_steps(
    model: GPT, optimizer: torch.optim.Optimizer, p: dict, order: Sequence[torch.Tensor], step_fn: StepFn,
    evaluate: Callable[[], dict], desc: str, show: dict[str, str],
) -> tuple[list[dict], dict | None]:
    """Run one step per batch of ``order`` and return the metrics rows and the last evaluation.

    Each row is ``{"step", "lr", **step_fn(...), "seconds"}``, plus the public keys of
    ``evaluate()`` on evaluation steps; ``show`` maps progress-bar labels to row keys.
    """
    steps = len(order)
    sched = short_run_schedule(p, steps)
    history: list[dict] = []
    last_eval = None
    model.train()
    bar = tqdm(total=steps, desc=desc, unit="step", mininterval=2.0)
    for step, index in enumerate(order, start=1):
        t0 = time.perf_counter()
        lr = lr_at(step - 1, sched)
        set_lr_scale(optimizer, lr / p["lr"])
        row = {"step": step, "lr": lr, **step_fn(step, index)}
        row["seconds"] = time.perf_counter() - t0
        if step % p["eval_every"] == 0 or step == steps:
            last_eval = evaluate()
            row.update(public(last_eval))
        history.append(row)
        bar.update(1)
        bar.set_postfix({label: f"{row[key]:.3f}" for label, key in show.items()})
    bar.close()
    return history, last_eval


def world_heldout(args: argparse.Namespace) -> HeldOut:
    """The world's held-out share (``--world`` JSON from the rule, or ``--config``'s section)."""
    return from_config(stage_params(args.world, args.config, "world"))


def heldout_facts(model: GPT, tokenizer: Tokenizer, p: dict, held: HeldOut) -> dict:
    """The chat evaluation's held-out fact questions, asked with the stage's eval settings."""
    return fact_metrics(model, tokenizer, heldout_questions(held, p["eval_fact_questions"]),
                        p["eval_max_new_tokens"], p["eval_batch_size"])


def save(args: argparse.Namespace, base: Base, model: GPT, stage: str, history: list[dict]) -> None:
    """The stage's model directory (the base's metadata, this stage's name) and its metrics.jsonl."""
    meta = {k: v for k, v in read_json(base.path / CONFIG).items() if k not in ("format", "model")}
    save_model_dir(
        args.output, model, base.path / TOKENIZER, meta={**meta, "stage": stage, "base_model": str(base.path)}
    )
    write_jsonl(args.metrics or Path(args.output) / "metrics.jsonl", history)


def runtime_extra(runtime: rt.Runtime, seconds: float) -> dict:
    return {"seconds": seconds, "device": str(runtime.device), "dtype": str(runtime.dtype).removeprefix("torch.")}


def add_arguments(parser: argparse.ArgumentParser, base_help: str, inputs: dict[str, str]) -> None:
    """``--base``, the stage's data files (flag -> help), ``--output``, ``--metrics``, ``--stats``."""
    parser.add_argument("--base", required=True, help=base_help)
    for flag, help_text in inputs.items():
        parser.add_argument(flag, required=True, help=help_text)
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--metrics", help="metrics.jsonl (default: OUTPUT/metrics.jsonl)")
    parser.add_argument("--stats", required=True, help="stats.json to write")
    parser.add_argument("--world", help="the world config section as JSON (the held-out share; what the rule passes)")


def run(args: argparse.Namespace, stage: str, train: Callable[[dict, argparse.Namespace, StageStats], None]) -> int:
    """Run ``train`` with the stage's config section and write its stats."""
    p = stage_params(args.params, args.config, stage)
    stats = StageStats(stage)
    train(p, args, stats)
    stats.write(args.stats)
    return 0
