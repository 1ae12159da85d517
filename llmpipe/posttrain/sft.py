"""``llmpipe sft``: supervised fine-tuning of a model directory on chat conversations.

Each conversation is rendered with THE chat template (``llmpipe.tokenizer.chat``); the loss
counts only assistant tokens and their ``<|end|>``. Conversations are packed whole into rows
of the context length, each with its own segment id, so the document mask keeps every
conversation from attending to its neighbours (no cross-example leakage). AdamW with warmup +
cosine (``llmpipe.posttrain.trainer``, as in pretraining), a few epochs, seeded; fp32 on CPU is
deterministic.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass

import torch

from llmpipe.model.gpt import GPT
from llmpipe.posttrain import trainer
from llmpipe.stats import StageStats
from llmpipe.tasks.formats import read_sft
from llmpipe.tasks.heldout import HeldOut
from llmpipe.tokenizer.chat import render
from llmpipe.tokenizer.pack import best_fit
from llmpipe.train import runtime as rt
from llmpipe.train.schedule import batch_order


@dataclass(frozen=True)
class Example:
    inputs: list[int]
    targets: list[int]  # -1 where the loss does not count (everything but assistant turns)


@dataclass(frozen=True)
class Rows:
    """Packed rows [R, T]: inputs, targets (-1 = ignored) and segments (0 = padding)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    segments: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.size(0)

    def select(self, index: torch.Tensor | slice) -> Rows:
        return Rows(self.inputs[index], self.targets[index], self.segments[index])


def to_examples(tokenizer, conversations: list[dict], context_length: int) -> tuple[list[Example], dict[str, int]]:
    """Training pairs of the conversations that fit the context, and counts of those skipped.

    A conversation longer than the context is skipped, not truncated: cutting it could drop
    the very reply it exists to teach.
    """
    examples, skipped = [], {"too_long": 0}
    for conv in conversations:
        inputs, targets = render(tokenizer, conv["messages"]).training_pair()
        if len(inputs) > context_length:
            skipped["too_long"] += 1
            continue
        examples.append(Example(inputs, targets))
    return examples, skipped


def pack(examples: list[Example], context_length: int, pad_id: int) -> Rows:
    """Best-fit packing of whole examples, in order, into rows; segment ids 1, 2, ... per row, 0 = padding."""
    placed = [[examples[i] for i in items] for items in best_fit([len(ex.inputs) for ex in examples], context_length)]
    shape = (len(placed), context_length)
    inputs = torch.full(shape, pad_id, dtype=torch.long)
    targets = torch.full(shape, -1, dtype=torch.long)
    segments = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(placed):
        pos = 0
        for seg, ex in enumerate(row, start=1):
            end = pos + len(ex.inputs)
            inputs[r, pos:end] = torch.tensor(ex.inputs)
            targets[r, pos:end] = torch.tensor(ex.targets)
            segments[r, pos:end] = seg
            pos = end
    return Rows(inputs, targets, segments)


def loss_sum(model: GPT, rows: Rows, runtime: rt.Runtime) -> torch.Tensor:
    """Summed next-token loss over the counted targets of ``rows``, with the document mask."""
    with runtime.autocast():
        _, loss = model(
            rows.inputs.to(runtime.device), rows.targets.to(runtime.device),
            rows.segments.to(runtime.device), reduction="sum",
        )
    return loss


@torch.no_grad()
def mean_loss(model: GPT, rows: Rows, runtime: rt.Runtime, batch_size: int) -> float:
    """Mean loss per counted target (assistant token) over all rows."""
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows.select(slice(start, start + batch_size))
        total += float(loss_sum(model, chunk, runtime))
        count += int((chunk.targets >= 0).sum())
    return total / max(count, 1)


def evaluate_heldout(model: GPT, tokenizer, heldout: Rows, runtime: rt.Runtime, p: dict, held: HeldOut) -> dict:
    """Held-out loss (assistant tokens of sft_heldout) and the chat accuracy on held-out facts."""
    model.eval()
    facts = trainer.heldout_facts(model, tokenizer, p, held)
    out = {
        "heldout_loss": mean_loss(model, heldout, runtime, p["eval_batch_size"]) if len(heldout) else None,
        "heldout_answer_accuracy": facts.get("accuracy"),
        "heldout_ends_properly": facts.get("ends_properly"),
    }
    model.train()
    return out | {"_examples": facts.get("examples", [])}


def train(p: dict, args: argparse.Namespace, stats: StageStats) -> None:
    base = trainer.load_base(p, args.base)
    model, tokenizer, runtime = base.model, base.tokenizer, base.runtime
    context = model.config.context_length
    held = trainer.world_heldout(args)

    conversations = read_sft(args.train)
    examples, skipped = to_examples(tokenizer, conversations, context)
    for reason, count in skipped.items():
        stats.removed[reason] += count
    stats.docs_in, stats.docs_out = len(conversations), len(examples)
    if not examples:
        raise ValueError(f"{args.train}: no conversation fits the context of {context} tokens")
    random.Random(p["seed"]).shuffle(examples)
    rows = pack(examples, context, tokenizer.pad_id)
    held_examples, held_skipped = to_examples(tokenizer, read_sft(args.heldout), context)
    heldout = pack(held_examples, context, tokenizer.pad_id)

    steps_per_epoch = math.ceil(len(rows) / p["batch_size"])
    steps = max(1, round(p["epochs"] * steps_per_epoch))
    optimizer = trainer.make_optimizer(model, p, runtime)
    start_time = time.perf_counter()
    base_eval = evaluate_heldout(model, tokenizer, heldout, runtime, p, held)
    tokens = 0

    def step_fn(step: int, index: torch.Tensor) -> dict:
        nonlocal tokens
        t0 = time.perf_counter()
        batch = rows.select(index)
        n_valid = int((batch.targets >= 0).sum())
        loss = loss_sum(model, batch, runtime)
        grad_norm = trainer.optimizer_step(model, optimizer, loss / max(n_valid, 1), p["grad_clip"])
        step_tokens = int((batch.segments > 0).sum())
        tokens += step_tokens
        return {"epoch": step / steps_per_epoch, "loss": float(loss.detach()) / max(n_valid, 1),
                "grad_norm": grad_norm, "tokens": tokens, "target_tokens": n_valid,
                "tokens_per_s": step_tokens / (time.perf_counter() - t0)}

    order = batch_order(len(rows), p["batch_size"], steps, p["seed"])
    history, last_eval = trainer.train_steps(
        model, optimizer, p, order, step_fn, lambda: evaluate_heldout(model, tokenizer, heldout, runtime, p, held),
        "sft", {"loss": "loss"},
    )
    seconds = time.perf_counter() - start_time

    trainer.save(args, base, model, "sft", history)
    stats.extra.update({
        "steps": steps, "epochs": p["epochs"], "rows": len(rows), "batch_size": p["batch_size"],
        "conversations": len(conversations), "heldout_conversations": len(held_examples),
        "heldout_skipped": held_skipped, "assistant_tokens_per_epoch": int((rows.targets >= 0).sum()),
        "packing_efficiency": float((rows.segments > 0).float().mean()),
        "final_loss": history[-1]["loss"],
        "base_heldout_loss": base_eval["heldout_loss"],
        "base_heldout_answer_accuracy": base_eval["heldout_answer_accuracy"],
        "base_heldout_ends_properly": base_eval["heldout_ends_properly"],
        "heldout_loss": last_eval["heldout_loss"],
        "heldout_answer_accuracy": last_eval["heldout_answer_accuracy"],
        "heldout_ends_properly": last_eval["heldout_ends_properly"],
        "heldout_examples": last_eval["_examples"][:8], "base_heldout_examples": base_eval["_examples"][:8],
        **trainer.runtime_extra(runtime, seconds), "params": model.num_params(),
    })


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    trainer.add_arguments(parser, "model directory to fine-tune (e.g. results/pretrain)",
                          {"--train": "sft_train.jsonl", "--heldout": "sft_heldout.jsonl (held-out loss)"})


def run(args: argparse.Namespace, stage: str) -> int:
    return trainer.run(args, "sft", train)
