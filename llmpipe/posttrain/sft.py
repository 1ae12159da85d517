"""``llmpipe sft``: supervised fine-tuning of a model directory on chat conversations.

Each conversation is rendered with THE chat template (``llmpipe.tokenizer.chat``); the loss
counts only assistant tokens and their ``<|end|>``. Conversations are packed whole into rows
of the context length, each with its own segment id, so the document mask keeps every
conversation from attending to its neighbours (no cross-example leakage). AdamW with warmup +
cosine (``lr_at``, as in pretraining), a few epochs, seeded; fp32 on CPU is deterministic.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from llmpipe.config import stage_params
from llmpipe.tasks.chat_eval import fact_metrics
from llmpipe.io import atomic_path, read_json
from llmpipe.model.gpt import GPT
from llmpipe.tokenizer.chat import render
from llmpipe.tasks.facts import heldout_questions
from llmpipe.tasks.formats import read_sft
from llmpipe.stats import StageStats
from llmpipe.train import checkpoint, runtime as rt
from llmpipe.train.schedule import batch_order, lr_at, short_run_schedule


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

    def select(self, index: torch.Tensor | slice) -> "Rows":
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
    """Best-fit packing of whole examples into rows; segment ids 1, 2, ... per row, 0 = padding."""
    free: list[int] = []  # space left in each row
    placed: list[list[Example]] = []
    for ex in examples:
        n = len(ex.inputs)
        fits = [i for i, room in enumerate(free) if room >= n]
        if fits:
            row = min(fits, key=free.__getitem__)
        else:
            row = len(free)
            free.append(context_length)
            placed.append([])
        free[row] -= n
        placed[row].append(ex)
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


def evaluate_heldout(model: GPT, tokenizer, heldout: Rows, runtime: rt.Runtime, p: dict) -> dict:
    """Held-out loss (assistant tokens of sft_heldout) and the chat accuracy on held-out facts."""
    model.eval()
    facts = fact_metrics(model, tokenizer, heldout_questions(p["eval_fact_questions"]),
                         p["eval_max_new_tokens"], p["eval_batch_size"])
    out = {
        "heldout_loss": mean_loss(model, heldout, runtime, p["eval_batch_size"]) if len(heldout) else None,
        "heldout_answer_accuracy": facts.get("accuracy"),
        "heldout_ends_properly": facts.get("ends_properly"),
    }
    model.train()
    return out | {"_examples": facts.get("examples", [])}


def train(p: dict, args: argparse.Namespace, stats: StageStats) -> None:
    runtime = rt.start(p["device"], p["dtype"])
    torch.manual_seed(p["seed"])
    base = Path(args.base)
    model = checkpoint.load_model(base, runtime.device)
    tokenizer = checkpoint.load_tokenizer(base)
    context = model.config.context_length

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
    sched = short_run_schedule(p, steps)
    optimizer = model.optimizer(p["lr"], p["weight_decay"], (p["beta1"], p["beta2"]), fused=runtime.device.type == "cuda")

    start_time = time.perf_counter()
    base_eval = evaluate_heldout(model, tokenizer, heldout, runtime, p)
    history, last_eval, tokens = [], base_eval, 0
    model.train()
    bar = tqdm(total=steps, desc="sft", unit="step", mininterval=2.0)
    for step, index in enumerate(batch_order(len(rows), p["batch_size"], steps, p["seed"]), start=1):
        t0 = time.perf_counter()
        lr = lr_at(step - 1, sched)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = rows.select(index)
        n_valid = int((batch.targets >= 0).sum())
        loss = loss_sum(model, batch, runtime)
        (loss / max(n_valid, 1)).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), p["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_tokens = int((batch.segments > 0).sum())
        tokens += step_tokens
        row = {
            "step": step, "epoch": step / steps_per_epoch, "loss": float(loss.detach()) / max(n_valid, 1), "lr": lr,
            "grad_norm": float(grad_norm), "tokens": tokens, "target_tokens": n_valid,
            "tokens_per_s": step_tokens / (time.perf_counter() - t0),
        }
        if step % p["eval_every"] == 0 or step == steps:
            last_eval = evaluate_heldout(model, tokenizer, heldout, runtime, p)
            row.update({k: v for k, v in last_eval.items() if not k.startswith("_")})
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
    bar.close()
    seconds = time.perf_counter() - start_time

    base_config = read_json(base / checkpoint.CONFIG)
    meta = {k: v for k, v in base_config.items() if k not in ("format", "model")}
    checkpoint.save_model_dir(args.output, model, base / checkpoint.TOKENIZER, meta={**meta, "stage": "sft", "base_model": str(base)})
    with atomic_path(args.metrics or Path(args.output) / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
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
        "seconds": seconds, "device": str(runtime.device), "dtype": str(runtime.dtype).removeprefix("torch."),
        "params": model.num_params(),
    })


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--base", required=True, help="model directory to fine-tune (e.g. results/pretrain)")
    parser.add_argument("--train", required=True, help="sft_train.jsonl")
    parser.add_argument("--heldout", required=True, help="sft_heldout.jsonl (held-out loss)")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--metrics", help="metrics.jsonl (default: OUTPUT/metrics.jsonl)")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def run(args: argparse.Namespace, stage: str) -> int:
    p = stage_params(args.params, args.config, "sft")
    stats = StageStats("sft")
    train(p, args, stats)
    stats.write(args.stats)
    return 0
