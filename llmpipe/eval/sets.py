"""``llmpipe eval-sets``: the evaluation sets as files, so they are DAG inputs rather than
something ``evaluate`` regenerates in-process.

Writes ``results/eval_sets/{fact_probes,chat,chat_arithmetic,arithmetic_fewshot}.jsonl``
(layout.EVAL_SETS), one item a line with at least ``prompt``, ``answer``, ``kind`` and
``held_out`` (the side of the world's held-out share, ``llmpipe.tasks.heldout``, it asks about);
every other field of the item is carried along. ``evaluate`` scores exactly
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
from llmpipe.tasks.arithmetic import in_distribution_problems
from llmpipe.tasks.heldout import HeldOut, from_config

# The evaluate keys the sets depend on (the rule passes only these, so other evaluate keys
# rerun evaluate, not this rule and the decontamination after it).
KEYS = ("seed", "fact_probes", "chat_fact_questions", "chat_arithmetic_problems", "arithmetic_problems",
        "arithmetic_shots", "arithmetic_max_operand")


def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced so every kind of fact stays represented."""
    if limit is None or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def arithmetic_problems(n: int, shots: int, max_operand: int, seed: int, held: HeldOut, heldout: bool) -> list[dict]:
    """Few-shot prompts "What is 3 plus 4? 7" (shots solved lines, then the question) as
    evaluation items: the solved shots are training facts, the question a fact of the requested
    side of the world's held-out split (``held``)."""
    from llmpipe.tasks.world import apply, operand_pools

    rng = random.Random(f"{seed}/{'held_out' if heldout else 'in_distribution'}")
    operands = {"add": [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)],
                "sub": [(a, b) for a in range(max_operand + 1) for b in range(a + 1)]}
    pools = {side: operand_pools(operands, held, side) for side in (False, True)}

    def problem(side: bool) -> tuple[str, int, str]:
        if not pools[side]:
            raise ValueError(f"no few-shot arithmetic fact with operands 0..{max_operand} is held_out={side}")
        op = rng.choice(list(pools[side]))
        a, b = rng.choice(pools[side][op])
        return f"What is {a} {'plus' if op == 'add' else 'minus'} {b}?", apply(op, a, b), op

    items = []
    for _ in range(n):
        context = "".join(f"{q} {a}\n" for q, a, _ in (problem(False) for _ in range(shots)))
        question, answer, op = problem(heldout)
        items.append({"prompt": context + question, "answer": str(answer), "kind": op, "held_out": heldout})
    return items


def fact_probe_rows(limit: int | None, held: HeldOut) -> list[dict]:
    """Both phrasing sets (``phrasing``: "train" — the toy web's wording — or "heldout"), each
    spread to ``limit`` probes; every field of the world's probe is kept, and ``subject_held_out``
    says whether its subject is in the world's held-out share. The toy web's pages state every
    subject's facts (a fact nothing states cannot be known); post-training data never mentions a
    held-out subject. So these rows carry no ``held_out`` mark: the train-phrased probes are the
    pages' own sentences (recall by design, ``decontaminate.report_only``)."""
    from llmpipe.tasks.world import fact_probes

    rows = []
    for phrasing, heldout in (("train", False), ("heldout", True)):
        rows += [{**dataclasses.asdict(p), "phrasing": phrasing, "subject_held_out": held.subject(p.subject)}
                 for p in spread(fact_probes(heldout=heldout), limit)]
    return rows


def chat_rows(limit: int | None, held: HeldOut) -> list[dict]:
    """Fact questions asked in the chat format about held-out subjects, then as many about
    training subjects (the same cost per side; prefixes interleave the kinds alike); ``prompt``
    is the user turn."""
    from llmpipe.tasks.facts import heldout_questions

    questions = heldout_questions(held, limit, heldout=True)
    questions += heldout_questions(held, len(questions), heldout=False)
    return [{"prompt": q.messages[-1]["content"], **dataclasses.asdict(q)} for q in questions]


def build(p: dict, held: HeldOut) -> dict[str, list[dict]]:
    """Every evaluation set of layout.EVAL_SETS, by name. The chat evaluation's held-out
    arithmetic is rl_test.jsonl (posttrain_data's); ``chat_arithmetic`` is its in-distribution side."""
    shots = (p["arithmetic_problems"], p["arithmetic_shots"], p["arithmetic_max_operand"], p["seed"], held)
    return {
        "fact_probes": fact_probe_rows(p["fact_probes"], held),
        "chat": chat_rows(p["chat_fact_questions"], held),
        "chat_arithmetic": in_distribution_problems(p["seed"], p["chat_arithmetic_problems"], held),
        "arithmetic_fewshot": arithmetic_problems(*shots, heldout=True) + arithmetic_problems(*shots, heldout=False),
    }


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    for name in layout.EVAL_SETS:
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=f"{name}.jsonl to write")
    parser.add_argument("--world", help="the world config section as JSON (the held-out share; what the rule passes)")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def run(args: argparse.Namespace, stage: str) -> int:
    p = stage_params(args.params, args.config, "evaluate")
    held = from_config(stage_params(args.world, args.config, "world"))
    stats = StageStats("eval_sets")
    sets = build(p, held)
    for name in layout.EVAL_SETS:
        path = Path(getattr(args, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, sets[name])
        stats.extra[f"{name}_items"] = len(sets[name])
    stats.write(args.stats)
    return 0
