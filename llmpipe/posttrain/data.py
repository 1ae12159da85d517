"""``llmpipe posttrain-data``: the SFT conversations, preference pairs and RL problems, as JSONL.

By default everything is generated, seeded, from the toy web's world (``llmpipe.tasks``):
fact questions answered in one sentence that states the fact the way pretraining pages do,
arithmetic word problems with a worked step and a final "The answer is N." line, multi-turn
follow-ups, and sometimes a system message. A user's own files (conventional shapes:
``{"messages"}``, ``{"prompt", "chosen", "rejected"}``, ``{"prompt", "answer"}``) replace
the generated data of their kind after line-by-line validation.

Held-out discipline (the ``world`` config's held-out share, ``llmpipe.tasks.heldout``):
training data never mentions a held-out subject nor states a held-out arithmetic fact (an
operand pair, either order); the held-out files ask only about them. ``rl_test`` asks only
held-out facts, so its problems share no fact with any training file, let alone a text.
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from llmpipe import layout
from llmpipe.config import stage_params
from llmpipe.io import public, write_jsonl
from llmpipe.stats import StageStats
from llmpipe.tasks.arithmetic import ANSWER_PREFIX, final_line, rl_test_problems, unique_problems, worked_solution
from llmpipe.tasks.facts import Fact, answer_candidates, answer_sentence, heldout_questions, question, world_facts
from llmpipe.tasks.formats import read_preferences, read_problems, read_sft
from llmpipe.tasks.heldout import HeldOut, from_config
from llmpipe.tasks.world import PROBLEM_OPERANDS, operand_pools

OUTPUT_FILES = layout.POSTTRAIN_FILES


SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a friendly assistant. Answer in clear sentences.",
    "Answer the user's questions accurately.",
    "You are a knowledgeable guide to countries, animals and arithmetic.",
)

# Plausible words that add length but no information: they pad terse rejected replies so a
# preference model cannot separate chosen from rejected by length alone.
FILLERS = (
    "Good question!", "Hope that helps.", "I am sure of it.", "That is all.", "Easy one.",
    "Happy to help!", "Sure thing.", "No doubt about it.", "Simple.", "Glad you asked.",
)


# ---------------------------------------------------------------------------------------------
# Generated SFT conversations


def fact_turns(fact: Fact, rng: random.Random) -> list[dict]:
    return [
        {"role": "user", "content": question(fact, rng.randrange(3))},
        {"role": "assistant", "content": answer_sentence(fact)},
    ]


def arithmetic_turns(problem: tuple[str, int]) -> list[dict]:
    return [
        {"role": "user", "content": problem[0]},
        {"role": "assistant", "content": worked_solution(*problem)},
    ]


def follow_up(turns: list[dict]) -> list[dict]:
    """A second question phrased as a follow-up ("And what is ...?")."""
    first = turns[0]["content"]
    return [{"role": "user", "content": "And " + first[0].lower() + first[1:]}, turns[1]]


def sft_conversations(p: dict, facts: list[Fact], problems: list[tuple[str, int]], rng: random.Random) -> list[dict]:
    """``p["sft_conversations"]`` conversations: facts, worked arithmetic, and multi-turn ones
    (a follow-up fact about the same subject, or a fact then a problem), some with a system message."""
    by_subject: dict[str, list[Fact]] = {}
    for fact in facts:
        by_subject.setdefault(fact.subject, []).append(fact)
    problems = iter(problems)
    out = []
    for _ in range(p["sft_conversations"]):
        r = rng.random()
        fact = rng.choice(facts)
        if r < p["multi_turn_fraction"]:
            others = [f for f in by_subject[fact.subject] if f.kind != fact.kind]
            if others and rng.random() < 0.7:
                messages = fact_turns(fact, rng) + follow_up(fact_turns(rng.choice(others), rng))
            else:
                messages = fact_turns(fact, rng) + arithmetic_turns(next(problems))
        elif r < p["multi_turn_fraction"] + p["arithmetic_fraction"]:
            messages = arithmetic_turns(next(problems))
        else:
            messages = fact_turns(fact, rng)
        if rng.random() < p["system_fraction"]:
            messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] + messages
        out.append({"messages": messages})
    return out


# ---------------------------------------------------------------------------------------------
# Generated preference pairs: correct and worked > correct and terse (facts and arithmetic);
# correct > confidently wrong (facts only: see arithmetic_pair)


def pad_to(text: str, chosen: str, rng: random.Random, before: bool) -> str:
    """``text`` with filler sentences added (before or after it) to about the length of ``chosen``.

    Of ``text`` with 0, 1, 2, ... fillers, the version closest to a target jittered evenly
    around ``len(chosen)`` is kept, so padded replies are as often shorter as longer.
    """
    target = len(chosen) * rng.uniform(0.8, 1.2)
    fillers = list(FILLERS)
    rng.shuffle(fillers)
    versions = [text]
    for k in range(1, len(fillers) + 1):
        pad = " ".join(fillers[:k])
        versions.append(f"{pad} {text}" if before else f"{text} {pad}")
        if len(versions[-1]) > target:
            break
    return min(versions, key=lambda v: abs(len(v) - target))


def fact_pair(fact: Fact, candidates: dict[str, list[str]], rng: random.Random, terse_fraction: float) -> dict:
    chosen = answer_sentence(fact)
    if rng.random() < terse_fraction:
        rejected = pad_to(fact.answer[0].upper() + fact.answer[1:] + ".", chosen, rng, before=False)
        kind = "terse"
    else:
        wrong = rng.choice([c for c in candidates[fact.kind] if c != fact.answer])
        rejected, kind = answer_sentence(Fact(fact.kind, fact.subject, wrong)), "wrong"
    return {"prompt": question(fact, rng.randrange(3)), "chosen": chosen, "rejected": rejected, "_kind": kind}


def arithmetic_pair(problem: tuple[str, int], rng: random.Random) -> dict:
    """The worked reply over the bare final line, padded to its length: show the count.

    Never a wrong answer. DPO's gradient acts where chosen and rejected part (their shared
    prefix cancels), and a wrong reply to a word problem parts at a number: a misread count
    ("..., 7 is 4. So Omar has 6") or a count stopped a step early. Either pair teaches which
    number belongs to this question, a recalled fact, and on the default run (Muon pretraining,
    one seed) DPO then took held-out arithmetic from 0.53 to 0.34 (misread) or 0.23 (miscount);
    with only terse rejections it stayed at 0.52, as with no arithmetic pairs at all. Right and
    wrong answers are RL's to teach, with a reward that checks them.
    """
    text, answer = problem
    chosen = worked_solution(text, answer)
    rejected = pad_to(final_line(answer), chosen, rng, before=True)
    return {"prompt": text, "chosen": chosen, "rejected": rejected, "_kind": "terse"}


def preference_pairs(
    n: int, facts: list[Fact], problems: Iterable[tuple[str, int]], p: dict, rng: random.Random, cycle_facts: bool
) -> list[dict]:
    """``n`` pairs, about ``p["dpo_arithmetic_fraction"]`` of them arithmetic; facts drawn at random,
    or in order (``cycle_facts``: each held-out fact once before any repeats)."""
    # wrong answers come from the same facts' answers: a training pair never names a held-out
    # subject's answer ("Guatemala City") even as a wrong one
    candidates = answer_candidates(facts)
    problems = iter(problems)
    out = []
    for i in range(n):
        problem = next(problems, None) if rng.random() < p["dpo_arithmetic_fraction"] else None
        if problem is not None:
            pair = arithmetic_pair(problem, rng)
        else:
            fact = facts[i % len(facts)] if cycle_facts else rng.choice(facts)
            pair = fact_pair(fact, candidates, rng, p["dpo_terse_fraction"])
        if rng.random() < p["system_fraction"]:
            pair["system"] = rng.choice(SYSTEM_PROMPTS)
        out.append(pair)
    return out


def length_only_accuracy(pairs: Sequence[dict]) -> float:
    """How often the better of "pick the longer" / "pick the shorter" finds the chosen reply
    (ties count half): near 0.5 means length alone cannot separate the pairs."""
    if not pairs:
        return float("nan")
    longer = sum(
        1.0 if len(x["chosen"]) > len(x["rejected"]) else 0.5 if len(x["chosen"]) == len(x["rejected"]) else 0.0
        for x in pairs
    ) / len(pairs)
    return max(longer, 1 - longer)


def split_heldout(rows: list[dict], fraction: float, seed: int, name: str) -> tuple[list[dict], list[dict]]:
    """(train, heldout): a seeded ``fraction`` of a user's rows held out (at least one of two or more)."""
    if not rows:
        raise ValueError(f"{name}: the file has no rows")
    order = list(range(len(rows)))
    random.Random(f"{seed}/{name}").shuffle(order)
    k = min(len(rows) - 1, max(1 if len(rows) > 1 else 0, math.ceil(fraction * len(rows))))
    held = set(order[:k])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def dedupe_problems(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for row in rows:
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# The stage


def build(p: dict, held: HeldOut) -> tuple[dict[str, list[dict]], dict]:
    """All six files' rows and the stats' extra numbers, from the config section ``p`` and the
    world's held-out share ``held``."""
    seed = p["seed"]
    train_facts = world_facts(held, heldout=False)
    sources = {}

    # the generated test problems are held out even when the user brings RL data: the generated
    # held-out preference pairs ask them
    generated_test = rl_test_problems(seed, p["rl_test_problems"], held)
    if p["rl_path"]:
        rl_train, rl_test = split_heldout(
            dedupe_problems(read_problems(p["rl_path"])), p["heldout_fraction"], seed, "rl"
        )
        rl_test = [{**row, "kind": "user", "held_out": True} for row in rl_test]
        sources["rl"] = str(p["rl_path"])
    else:
        rl_test = generated_test
        train = unique_problems(
            random.Random(f"{seed}/rl_train"), p["rl_train_problems"], {r["prompt"] for r in rl_test}, held
        )
        rl_train = [{"prompt": q, "answer": str(a)} for q, a in train]
        sources["rl"] = "generated"
    test_texts = {r["prompt"] for r in rl_test + generated_test}

    if p["sft_path"]:
        sft_train, sft_heldout = split_heldout(read_sft(p["sft_path"]), p["heldout_fraction"], seed, "sft")
        sources["sft"] = str(p["sft_path"])
    else:
        problems = unique_problems(random.Random(f"{seed}/sft_problems"), p["sft_conversations"], test_texts, held)
        sft_train = sft_conversations(p, train_facts, problems, random.Random(f"{seed}/sft"))
        sft_heldout = [
            {"messages": q.messages + [{"role": "assistant", "content": q.reference}]}
            for q in heldout_questions(held, p["sft_heldout_conversations"])
        ]
        sources["sft"] = "generated"

    if p["dpo_path"]:
        dpo_train, dpo_heldout = split_heldout(read_preferences(p["dpo_path"]), p["heldout_fraction"], seed, "dpo")
        sources["dpo"] = str(p["dpo_path"])
    else:
        problems = unique_problems(random.Random(f"{seed}/dpo_problems"), p["dpo_pairs"], test_texts, held)
        dpo_train = preference_pairs(p["dpo_pairs"], train_facts, problems, p, random.Random(f"{seed}/dpo"), False)
        dpo_heldout = preference_pairs(
            p["dpo_heldout_pairs"],
            world_facts(held, heldout=True),
            itertools.cycle((r["prompt"], int(r["answer"])) for r in generated_test),
            p,
            random.Random(f"{seed}/dpo_heldout"),
            True,
        )
        sources["dpo"] = "generated"

    extra = {
        "sources": sources,
        **preference_stats(dpo_train, "dpo_train"),
        **preference_stats(dpo_heldout, "dpo_heldout"),
    }
    extra["arithmetic_facts"] = {
        side: len({(op, *ab) for op, pairs in operand_pools(PROBLEM_OPERANDS, held, heldout).items()
                   for ab in pairs if op not in ("add", "mul") or ab[0] <= ab[1]})
        for side, heldout in (("training", False), ("held_out", True))
    }
    if sources["sft"] == "generated":
        extra["heldout_subjects"] = sorted({f.subject for f in world_facts(held, heldout=True)})
        extra["sft_train_kinds"] = conversation_kinds(sft_train)
    files = {
        "sft_train": sft_train, "sft_heldout": sft_heldout, "dpo_train": dpo_train,
        "dpo_heldout": dpo_heldout, "rl_train": rl_train, "rl_test": rl_test,
    }
    for name, rows in files.items():
        extra[f"{name}_rows"] = len(rows)
    return files, extra


def preference_stats(pairs: list[dict], name: str) -> dict:
    if not pairs:
        return {}
    kinds: dict[str, int] = {}
    for pair in pairs:
        if "_kind" in pair:
            kinds[pair["_kind"]] = kinds.get(pair["_kind"], 0) + 1
    return {
        f"{name}_mean_chosen_chars": sum(len(x["chosen"]) for x in pairs) / len(pairs),
        f"{name}_mean_rejected_chars": sum(len(x["rejected"]) for x in pairs) / len(pairs),
        f"{name}_length_only_accuracy": length_only_accuracy(pairs),
        **({f"{name}_rejected_kinds": kinds} if kinds else {}),
    }


def conversation_kinds(conversations: list[dict]) -> dict[str, int]:
    counts = {"system": 0, "multi_turn": 0, "arithmetic": 0}
    for conv in conversations:
        roles = [m["role"] for m in conv["messages"]]
        counts["system"] += roles[0] == "system"
        counts["multi_turn"] += roles.count("user") > 1
        counts["arithmetic"] += any(ANSWER_PREFIX in m["content"] for m in conv["messages"])
    return counts


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--output", required=True, help="directory for the six JSONL files")
    parser.add_argument("--stats", required=True, help="stats.json to write")
    parser.add_argument("--world", help="the world config section as JSON (the held-out share; what the rule passes)")


def run(args: argparse.Namespace, stage: str) -> int:
    p = stage_params(args.params, args.config, "posttrain_data")
    held = from_config(stage_params(args.world, args.config, "world"))
    stats = StageStats("posttrain_data")
    files, extra = build(p, held)
    out = Path(args.output)
    for name in OUTPUT_FILES:
        write_jsonl(out / f"{name}.jsonl", (public(row) for row in files[name]))
    stats.extra.update(extra)
    stats.write(args.stats)
    return 0
