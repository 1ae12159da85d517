"""``llmpipe evaluate``: one metrics JSON per model — loss, perplexity, bits per byte, fact
probes (train-phrased and held-out), few-shot arithmetic and the chat evaluation, each on
in-distribution and held-out facts side by side (``*_in_distribution`` / ``*_held_out``: the
world's held-out share, ``llmpipe.tasks.heldout``), and fixed-prompt samples.
"""
from __future__ import annotations

import argparse
import math
import random
import re
from collections import defaultdict
from pathlib import Path

import torch

from llmpipe.config import stage_params
from llmpipe.io import write_json
from llmpipe.model.generate import Sampling, generate, generate_batched
from llmpipe.model.gpt import GPT
from llmpipe.stats import StageStats
from llmpipe.tasks.chat_eval import SIDES, chat_metrics
from llmpipe.tasks.heldout import HeldOut, from_config
from llmpipe.train import runtime as rt
from llmpipe.train.data import PackedData, target_counts, unigram_entropy
from llmpipe.train.logprobs import summed_logprobs
from llmpipe.train.loss import token_nats


def split_metrics(
    model: GPT, data: PackedData, tokenizer, runtime: rt.Runtime, batch_size: int, document_mask: bool
) -> dict:
    """Loss, perplexity and bits per byte of one split, beside the split's unigram entropy.

    Bits per byte (tokenizer-independent) is nats over the UTF-8 bytes of the ordinary-text
    targets / ln 2; special-token targets carry no bytes and are left out of both sums.
    The unigram entropy is over the same targets as the loss: the loss of the best
    context-free model, so ``loss / unigram_entropy`` is the share of it the model still pays.
    """
    special = torch.tensor(sorted(tokenizer.special_tokens.values()), dtype=torch.long)
    nats_all = count_all = nats_text = n_bytes = 0.0
    for batch in data.sequential(batch_size):
        nats = token_nats(model, batch, runtime, document_mask).cpu()
        valid = batch.targets >= 0
        text = valid & ~torch.isin(batch.targets, special)
        nats_all += float(nats[valid].sum())
        count_all += int(valid.sum())
        nats_text += float(nats[text].sum())
        for row, keep in zip(batch.targets, text):
            n_bytes += len(tokenizer.decode_bytes(row[keep].tolist()))
    loss = nats_all / max(count_all, 1)
    entropy = unigram_entropy(target_counts(data))
    return {
        "loss": loss, "perplexity": math.exp(loss), "tokens": int(count_all), "bytes": int(n_bytes),
        "bits_per_byte": nats_text / max(n_bytes, 1) / math.log(2),
        "unigram_entropy": entropy, "loss_to_unigram_ratio": loss / entropy, "unigram_gap": entropy - loss,
    }


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A prompt as a document start: <|bos|> then the text, as packed training rows see it."""
    return [tokenizer.bos_id, *tokenizer.encode(text)]


def answer_text(prompt: str, answer: str) -> str:
    return answer if prompt.endswith((" ", "\n")) else " " + answer


def probe_metrics(
    model: GPT, tokenizer, probes: list, runtime: rt.Runtime, batch_size: int, held: HeldOut | None = None
) -> dict:
    """Greedy accuracy (the continuation starts with the answer) and multiple-choice accuracy
    (the answer out-scores every other answer of its kind), with that choice's chance level;
    with ``held``, also the choice accuracy on held-out and in-distribution subjects."""
    if not probes:
        return {"n": 0}
    choices: dict[str, list[str]] = defaultdict(list)
    for p in probes:
        if p.answer not in choices[p.kind]:
            choices[p.kind].append(p.answer)
    pairs, owners = [], []
    for i, p in enumerate(probes):
        for option in choices[p.kind]:
            pairs.append((prompt_ids(tokenizer, p.prompt), tokenizer.encode(answer_text(p.prompt, option))))
            owners.append((i, option))
    best: dict[int, tuple[float, str]] = {}
    for (i, option), score in zip(
        owners, summed_logprobs(model, pairs, tokenizer.pad_id, batch_size, runtime).tolist()
    ):
        if i not in best or score > best[i][0]:
            best[i] = (score, option)
    prompts = [prompt_ids(tokenizer, p.prompt) for p in probes]
    max_new = max(len(tokenizer.encode(" " + p.answer)) for p in probes) + 1
    continuations = greedy(model, tokenizer, prompts, max_new, batch_size)
    rows = []
    for i, (p, cont) in enumerate(zip(probes, continuations)):
        rows.append({
            "prompt": p.prompt, "answer": p.answer, "kind": p.kind, "continuation": cont,
            "greedy_correct": cont.strip().startswith(p.answer), "choice": best[i][1],
            "choice_correct": best[i][1] == p.answer, "chance": 1 / len(choices[p.kind]),
            "held_out": held is not None and held.subject(p.subject),
        })
    n = len(rows)
    by_kind = {
        kind: {"n": sum(r["kind"] == kind for r in rows),
               "choice_accuracy": sum(r["choice_correct"] for r in rows if r["kind"] == kind)
               / sum(r["kind"] == kind for r in rows)}
        for kind in choices
    }
    return {
        "n": n,
        "greedy_accuracy": sum(r["greedy_correct"] for r in rows) / n,
        "choice_accuracy": sum(r["choice_correct"] for r in rows) / n,
        "choice_chance": sum(r["chance"] for r in rows) / n,
        "by_kind": by_kind,
        **({f"choice_accuracy_{side}": share([r["choice_correct"] for r in rows if r["held_out"] == heldout])
            for side, heldout in SIDES} if held is not None else {}),
        "examples": rows[:20],
    }


def share(flags: list[bool]) -> float | None:
    """The fraction of true flags (None for none: a side with no items has no accuracy)."""
    return sum(flags) / len(flags) if flags else None


def greedy(model: GPT, tokenizer, prompts: list[list[int]], max_new: int, batch_size: int) -> list[str]:
    sampling = Sampling(max_new, temperature=0, stop_ids=(tokenizer.eos_id, tokenizer.bos_id))
    return [
        tokenizer.decode(c.tokens) for c in generate_batched(model, prompts, sampling, tokenizer.pad_id, batch_size)
    ]


def arithmetic_problems(
    n: int, shots: int, max_operand: int, seed: int, held: HeldOut, heldout: bool
) -> list[dict]:
    """Few-shot prompts "What is 3 plus 4? 7" (shots solved lines, then the question) as
    evaluation items: the solved shots are training facts, the question a fact of the requested
    side of the world's held-out split (``held``)."""
    rng = random.Random(f"{seed}/{'held_out' if heldout else 'in_distribution'}")
    operands = {op: [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1) if op == "add" or a >= b]
                for op in ("add", "sub")}
    pools = {side: {op: [ab for ab in pairs if held.arithmetic(op, *ab) == side] for op, pairs in operands.items()}
             for side in (False, True)}

    def problem(side: bool) -> tuple[str, int, str]:
        ops = [op for op, pairs in pools[side].items() if pairs]
        if not ops:
            raise ValueError(f"no few-shot arithmetic fact with operands 0..{max_operand} is held_out={side}")
        op = rng.choice(ops)
        a, b = rng.choice(pools[side][op])
        return f"What is {a} {'plus' if op == 'add' else 'minus'} {b}?", a + b if op == "add" else a - b, op

    items = []
    for _ in range(n):
        context = "".join(f"{q} {a}\n" for q, a, _ in (problem(False) for _ in range(shots)))
        question, answer, op = problem(heldout)
        items.append({"prompt": context + question, "answer": str(answer), "kind": op, "held_out": heldout})
    return items


def arithmetic_metrics(model: GPT, tokenizer, p: dict, batch_size: int, held: HeldOut, heldout: bool) -> dict:
    items = arithmetic_problems(
        p["arithmetic_problems"], p["arithmetic_shots"], p["arithmetic_max_operand"], p["seed"], held, heldout
    )
    if not items:
        return {"n": 0}
    outputs = greedy(model, tokenizer, [prompt_ids(tokenizer, it["prompt"]) for it in items], 4, batch_size)
    parsed = [re.match(r"\s*(-?\d+)", out) for out in outputs]
    correct = [m is not None and m.group(1) == str(int(it["answer"])) for m, it in zip(parsed, items)]
    return {
        "n": len(items), "accuracy": sum(correct) / len(items), "shots": p["arithmetic_shots"], "held_out": heldout,
        "examples": [{"prompt": it["prompt"].splitlines()[-1], "answer": it["answer"], "kind": it["kind"],
                      "held_out": heldout, "output": o} for it, o in list(zip(items, outputs))[:10]],
    }


def samples(model: GPT, tokenizer, p: dict) -> list[dict]:
    sampling = Sampling(
        p["sample_max_new_tokens"], p["sample_temperature"], p["sample_top_k"], None,
        stop_ids=(tokenizer.eos_id, tokenizer.bos_id), seed=p["seed"],
    )
    prompts = p["sample_prompts"]
    if not prompts:
        return []
    outputs = generate(model, [prompt_ids(tokenizer, t) for t in prompts], sampling, tokenizer.pad_id)
    return [{"prompt": t, "completion": tokenizer.decode(ids)} for t, ids in zip(prompts, outputs)]


def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced so every kind of fact stays represented."""
    if limit is None or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def evaluate(
    model: GPT, tokenizer, splits: dict[str, PackedData], p: dict, runtime: rt.Runtime, held: HeldOut
) -> dict:
    from llmpipe.tasks.world import fact_probes

    bs = p["batch_size"]
    metrics = {name: split_metrics(model, data, tokenizer, runtime, bs, p["document_mask"])
               for name, data in splits.items()}
    for name, heldout in (("facts_train_phrasing", False), ("facts_heldout_phrasing", True)):
        probes = spread(fact_probes(heldout=heldout), p["fact_probes"])
        metrics[name] = probe_metrics(model, tokenizer, probes, runtime, bs, held)
    for side, heldout in SIDES:
        metrics[f"arithmetic_{side}"] = arithmetic_metrics(model, tokenizer, p, bs, held, heldout)
    metrics["samples"] = samples(model, tokenizer, p)
    metrics["chat"] = chat_metrics(model, tokenizer, p, runtime, held)
    return metrics


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", required=True, help="model directory to evaluate")
    parser.add_argument("--val", required=True, help="packed validation split directory")
    parser.add_argument("--test", required=True, help="packed test split directory")
    parser.add_argument("--output", required=True, help="metrics JSON to write")
    parser.add_argument("--stats", required=True, help="stats.json to write")
    parser.add_argument("--world", help="the world config section as JSON (the held-out share; what the rule passes)")


def run(args: argparse.Namespace, stage: str) -> int:
    from llmpipe.model.directory import load_model, load_tokenizer

    p = stage_params(args.params, args.config, "evaluate")
    stats = StageStats("evaluate", shard=Path(args.model).name)
    runtime = rt.start(p["device"], p["dtype"])
    torch.manual_seed(p["seed"])
    model = load_model(args.model, runtime.device)
    held = from_config(stage_params(args.world, args.config, "world"))
    metrics = evaluate(
        model, load_tokenizer(args.model), {"val": PackedData(args.val), "test": PackedData(args.test)}, p, runtime,
        held,
    )
    metrics["model"] = {"dir": str(args.model), "params": model.num_params(), **model.config.to_dict()}
    write_json(args.output, metrics)
    for side, _ in SIDES:
        stats.extra[f"arithmetic_accuracy_{side}"] = metrics[f"arithmetic_{side}"].get("accuracy")
        stats.extra[f"chat_fact_accuracy_{side}"] = metrics["chat"][f"facts_{side}"].get("accuracy")
        stats.extra[f"chat_arithmetic_pass@1_{side}"] = metrics["chat"][f"arithmetic_{side}"].get("accuracy")
    stats.extra.update({
        "val_loss": metrics["val"]["loss"], "test_loss": metrics["test"]["loss"],
        "val_bits_per_byte": metrics["val"]["bits_per_byte"],
        "facts_train_choice_accuracy": metrics["facts_train_phrasing"].get("choice_accuracy"),
        "facts_heldout_choice_accuracy": metrics["facts_heldout_phrasing"].get("choice_accuracy"),
        "chat_ends_properly": metrics["chat"]["facts_held_out"].get("ends_properly"),
    })
    stats.write(args.stats)
    return 0
