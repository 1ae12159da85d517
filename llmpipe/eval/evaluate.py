"""``llmpipe evaluate``: one metrics JSON per model — loss, perplexity, bits per byte, fact
probes (train-phrased and held-out), few-shot arithmetic and the chat evaluation, each on
in-distribution and held-out facts side by side (``*_in_distribution`` / ``*_held_out``: the
world's held-out share, ``llmpipe.tasks.heldout``), and fixed-prompt samples.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections import defaultdict
from pathlib import Path

import torch

from llmpipe.config import ConfigError, stage_params
from llmpipe.eval.memorisation import TrainIndex, held_out_docs, memorisation_metrics
from llmpipe.io import read_jsonl, write_json
from llmpipe.model.generate import Sampling, generate, generate_batched
from llmpipe.model.gpt import GPT
from llmpipe.stats import StageStats
from llmpipe.tasks.chat_eval import SIDES, chat_metrics
from llmpipe.train import runtime as rt
from llmpipe.train.data import PackedData, target_counts, unigram_entropy
from llmpipe.train.logprobs import option_logprobs
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


# option rows per batch of multiple-choice scoring (each prompt runs once, its options share its
# cached keys and values, options of one length run together): the default probes' 33,796 options
# took 10.5 s at 1024 rows, 12.5 s at 2048, 16.5 s at 512 (2 CPU cores, fp32)
OPTION_ROWS = 1024


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A prompt as a document start: <|bos|> then the text, as packed training rows see it."""
    return [tokenizer.bos_id, *tokenizer.encode(text)]


def answer_text(prompt: str, answer: str) -> str:
    return answer if prompt.endswith((" ", "\n")) else " " + answer


def probe_metrics(
    model: GPT, tokenizer, probes: list, runtime: rt.Runtime, batch_size: int, held_out: list[bool] | None = None
) -> dict:
    """Greedy accuracy (the continuation starts with the answer) and multiple-choice accuracy
    (the answer out-scores every other answer of its kind), with that choice's chance level;
    with ``held_out`` (a flag per probe: its subject is in the world's held-out share), also the
    choice accuracy on held-out and in-distribution subjects."""
    if not probes:
        return {"n": 0}
    choices: dict[str, list[str]] = defaultdict(list)
    for p in probes:
        if p.answer not in choices[p.kind]:
            choices[p.kind].append(p.answer)
    prompts = [prompt_ids(tokenizer, p.prompt) for p in probes]
    options = [[tokenizer.encode(answer_text(p.prompt, option)) for option in choices[p.kind]] for p in probes]
    scores = option_logprobs(model, prompts, options, tokenizer.pad_id, OPTION_ROWS, runtime)
    best = [choices[p.kind][int(s.argmax())] for p, s in zip(probes, scores)]  # the first of equals, as max()
    max_new = max(len(tokenizer.encode(" " + p.answer)) for p in probes) + 1
    continuations = greedy(model, tokenizer, prompts, max_new, batch_size)
    rows = []
    for i, (p, cont) in enumerate(zip(probes, continuations)):
        rows.append({
            "prompt": p.prompt, "answer": p.answer, "kind": p.kind, "continuation": cont,
            "greedy_correct": cont.strip().startswith(p.answer), "choice": best[i],
            "choice_correct": best[i] == p.answer, "chance": 1 / len(choices[p.kind]),
            "held_out": held_out is not None and held_out[i],
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
            for side, heldout in SIDES} if held_out is not None else {}),
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


def arithmetic_metrics(
    model: GPT, tokenizer, items: list[dict], shots: int, batch_size: int, heldout: bool
) -> dict:
    """Greedy accuracy on the few-shot set's rows of one side (``prompt``: solved lines then the question)."""
    if not items:
        return {"n": 0}
    outputs = greedy(model, tokenizer, [prompt_ids(tokenizer, r["prompt"]) for r in items], 4, batch_size)
    parsed = [re.match(r"\s*(-?\d+)", out) for out in outputs]
    correct = [m is not None and int(m.group(1)) == int(r["answer"]) for m, r in zip(parsed, items)]
    return {
        "n": len(items), "accuracy": sum(correct) / len(items), "shots": shots, "held_out": heldout,
        "examples": [{"prompt": r["prompt"].splitlines()[-1], "answer": int(r["answer"]), "kind": r.get("kind"),
                      "held_out": heldout, "output": o} for r, o in list(zip(items, outputs))[:10]],
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


def from_row(cls, row: dict):
    """A task dataclass from an evaluation-set row, keeping the fields ``cls`` has."""
    return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row})


@dataclasses.dataclass(frozen=True)
class EvalSets:
    """The evaluation items, read from the files the ``eval_sets`` and ``posttrain_data`` rules write."""
    fact_probes: list[dict]  # both phrasings, "phrasing": "train" | "heldout"; "subject_held_out"
    chat: list[dict]  # fact questions in the chat format, both sides ("held_out")
    chat_arithmetic: list[dict]  # in-distribution problems in the chat format
    arithmetic_fewshot: list[dict]  # both sides ("held_out")
    rl_test: list[dict]  # the RL test problems: the chat evaluation's held-out arithmetic

    @classmethod
    def read(
        cls, fact_probes: str, chat: str, chat_arithmetic: str, arithmetic_fewshot: str, rl_test: str
    ) -> EvalSets:
        paths = (fact_probes, chat, chat_arithmetic, arithmetic_fewshot, rl_test)
        return cls(*(read_jsonl(path) for path in paths))


def evaluate(
    model: GPT, tokenizer, splits: dict[str, PackedData], sets: EvalSets, p: dict, runtime: rt.Runtime,
    memorisation_index: TrainIndex | None = None, val_docs: list[list[int]] | None = None,
) -> dict:
    from llmpipe.tasks.facts import HeldoutQuestion
    from llmpipe.tasks.world import Probe

    bs, gen_bs = p["batch_size"], p["generation_batch_size"]
    metrics = {name: split_metrics(model, data, tokenizer, runtime, bs, p["document_mask"])
               for name, data in splits.items()}
    # generation and scoring in the runtime's precision, as training ran (bf16 autocast where native)
    with runtime.autocast():
        for name, phrasing in (("facts_train_phrasing", "train"), ("facts_heldout_phrasing", "heldout")):
            rows = [r for r in sets.fact_probes if r.get("phrasing") == phrasing]
            metrics[name] = probe_metrics(model, tokenizer, [from_row(Probe, r) for r in rows], runtime, gen_bs,
                                          [bool(r.get("subject_held_out", False)) for r in rows])
        for side, heldout in SIDES:
            items = [r for r in sets.arithmetic_fewshot if bool(r.get("held_out", False)) == heldout]
            metrics[f"arithmetic_{side}"] = arithmetic_metrics(
                model, tokenizer, items, p["arithmetic_shots"], gen_bs, heldout
            )
        metrics["samples"] = samples(model, tokenizer, p)
        questions = [from_row(HeldoutQuestion, r) for r in sets.chat]
        n = p["chat_arithmetic_problems"]
        # rl_test is the held-out side (generated: held-out facts; a user's file: its held-out split)
        problems = {"held_out": [{**r, "held_out": True} for r in sets.rl_test[:n]],
                    "in_distribution": sets.chat_arithmetic[:n]}
        metrics["chat"] = chat_metrics(model, tokenizer, p, runtime, questions, problems)
        if memorisation_index is not None and val_docs is not None:
            metrics["memorisation"] = memorisation_metrics(model, tokenizer, memorisation_index, val_docs, p)
    return metrics


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", required=True, help="model directory to evaluate")
    parser.add_argument("--val", required=True, help="packed validation split directory")
    parser.add_argument("--test", required=True, help="packed test split directory")
    parser.add_argument("--fact-probes", required=True, help="eval_sets/fact_probes.jsonl")
    parser.add_argument("--chat", required=True, help="eval_sets/chat.jsonl (fact questions, both sides)")
    parser.add_argument("--chat-arithmetic", required=True, help="eval_sets/chat_arithmetic.jsonl (in-distribution)")
    parser.add_argument("--arithmetic", required=True, help="eval_sets/arithmetic_fewshot.jsonl")
    parser.add_argument("--rl-test", required=True, help="posttrain_data/rl_test.jsonl (chat arithmetic)")
    parser.add_argument("--train-tokens", nargs="*", default=[], help="train token shard headers (memorisation index)")
    parser.add_argument("--val-tokens", nargs="*", default=[], help="validation token shard headers (prefixes)")
    parser.add_argument("--output", required=True, help="metrics JSON to write")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def check_memorisation(p: dict) -> None:
    """What the schema cannot say: a continuation must be able to hold a memorised span."""
    if p["memorisation_prefixes"] and p["memorisation_new_tokens"] < p["memorisation_span"]:
        raise ConfigError(
            f"config key 'evaluate.memorisation_new_tokens' ({p['memorisation_new_tokens']}) is below"
            f" 'evaluate.memorisation_span' ({p['memorisation_span']}): no continuation could count as memorised"
        )
    if p["memorisation_index_window"] > p["memorisation_span"]:
        raise ConfigError(
            f"config key 'evaluate.memorisation_index_window' ({p['memorisation_index_window']}) exceeds"
            f" 'evaluate.memorisation_span' ({p['memorisation_span']})"
        )


def run(args: argparse.Namespace, stage: str) -> int:
    from llmpipe.model.directory import load_model, load_tokenizer

    p = stage_params(args.params, args.config, "evaluate")
    check_memorisation(p)
    stats = StageStats("evaluate", shard=Path(args.model).name)
    sets = EvalSets.read(args.fact_probes, args.chat, args.chat_arithmetic, args.arithmetic, args.rl_test)
    index = docs = None
    if p["memorisation_prefixes"] and args.train_tokens and args.val_tokens:
        index = TrainIndex.build(args.train_tokens, p["memorisation_index_window"])
        docs = held_out_docs(args.val_tokens)
    runtime = rt.start(p["device"], p["dtype"])
    torch.manual_seed(p["seed"])
    model = load_model(args.model, runtime.device)
    metrics = evaluate(
        model, load_tokenizer(args.model), {"val": PackedData(args.val), "test": PackedData(args.test)}, sets, p,
        runtime, index, docs,
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
        "memorisation_rate": metrics.get("memorisation", {}).get("rate"),
        "memorisation_longest_span": metrics.get("memorisation", {}).get("longest_span"),
        "device": str(runtime.device), "dtype": str(runtime.dtype).removeprefix("torch."),
    })
    stats.write(args.stats)
    return 0
