"""``llmpipe eval-sets``: the evaluation sets as files, so they are DAG inputs rather than
something ``evaluate`` regenerates in-process.

Writes ``results/eval_sets/{fact_probes,chat,arithmetic_fewshot}.jsonl`` (layout.EVAL_SETS),
one item a line with at least ``prompt``, ``answer`` and ``kind``; every other field of the
item (``held_out`` where the world marks it) is carried along. ``evaluate`` scores exactly
these rows, and ``decontaminate`` indexes exactly these rows, so what is scored is what is
checked against the training data. The RL test set is not here: it is
``posttrain_data/rl_test.jsonl`` (generated or the user's ``rl_path`` split), read by both as is.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

from llmpipe import layout
from llmpipe.config import stage_params
from llmpipe.io import write_jsonl
from llmpipe.stats import StageStats

# The evaluate keys the sets depend on (the rule passes only these, so other evaluate keys
# rerun evaluate, not this rule and the decontamination after it).
KEYS = ("seed", "fact_probes", "chat_fact_questions", "arithmetic_problems", "arithmetic_shots",
        "arithmetic_max_operand")


def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced so every kind of fact stays represented."""
    if limit is None or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def arithmetic_problems(n: int, shots: int, max_operand: int, seed: int) -> list[tuple[str, int]]:
    """Few-shot prompts "What is 3 plus 4? 7" (shots solved lines, then the question) and answers."""
    rng = random.Random(seed)

    def problem() -> tuple[str, int]:
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        if rng.random() < 0.5:
            return f"What is {a} plus {b}?", a + b
        a, b = max(a, b), min(a, b)
        return f"What is {a} minus {b}?", a - b

    items = []
    for _ in range(n):
        examples = [problem() for _ in range(shots)]
        question, answer = problem()
        context = "".join(f"{q} {a}\n" for q, a in examples)
        items.append((context + question, answer))
    return items


def fact_probe_rows(limit: int | None) -> list[dict]:
    """Both phrasing sets (``phrasing``: "train" — the toy web's wording — or "heldout"), each
    spread to ``limit`` probes; every field of the world's probe is kept."""
    from llmpipe.tasks.world import fact_probes

    rows = []
    for phrasing, heldout in (("train", False), ("heldout", True)):
        rows += [{**dataclasses.asdict(p), "phrasing": phrasing} for p in spread(fact_probes(heldout=heldout), limit)]
    return rows


def chat_rows(limit: int | None) -> list[dict]:
    """The held-out fact questions asked in the chat format; ``prompt`` is the user turn."""
    from llmpipe.tasks.facts import heldout_questions

    return [{"prompt": q.messages[-1]["content"], **dataclasses.asdict(q)} for q in heldout_questions(limit)]


def arithmetic_rows(p: dict) -> list[dict]:
    items = arithmetic_problems(
        p["arithmetic_problems"], p["arithmetic_shots"], p["arithmetic_max_operand"], p["seed"]
    )
    return [{"prompt": q, "answer": str(a), "kind": "arithmetic"} for q, a in items]


def build(p: dict) -> dict[str, list[dict]]:
    """Every evaluation set of layout.EVAL_SETS, by name."""
    return {
        "fact_probes": fact_probe_rows(p["fact_probes"]),
        "chat": chat_rows(p["chat_fact_questions"]),
        "arithmetic_fewshot": arithmetic_rows(p),
    }


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    for name in layout.EVAL_SETS:
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=f"{name}.jsonl to write")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def run(args: argparse.Namespace, stage: str) -> int:
    p = stage_params(args.params, args.config, "evaluate")
    stats = StageStats("eval_sets")
    sets = build(p)
    for name in layout.EVAL_SETS:
        path = Path(getattr(args, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, sets[name])
        stats.extra[f"{name}_items"] = len(sets[name])
    stats.write(args.stats)
    return 0
