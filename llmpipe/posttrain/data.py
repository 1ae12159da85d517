"""``llmpipe posttrain-data``: the SFT conversations, preference pairs and RL problems, as JSONL.

By default everything is generated, seeded, from the toy web's world (``llmpipe.data.world``):
fact questions answered in one sentence that states the fact the way pretraining pages do,
arithmetic word problems with a worked step and a final "The answer is N." line, multi-turn
follow-ups, and sometimes a system message. A user's own files (conventional shapes:
``{"messages"}``, ``{"prompt", "chosen", "rejected"}``, ``{"prompt", "answer"}``) replace
the generated data of their kind after line-by-line validation.

Held-out discipline: subjects (countries, animals) are split by a stable hash
(``is_heldout_subject``); training data never mentions a held-out subject, and the held-out
files and the chat evaluation ask only about them. RL test problems never occur in any
training file (compared by question text).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from llmpipe.config import stage_params
from llmpipe.data import world
from llmpipe.io import atomic_path
from llmpipe.posttrain.chat import ChatFormatError, check_messages
from llmpipe.stats import StageStats

HELDOUT_PERCENT = 25
OUTPUT_FILES = ("sft_train", "sft_heldout", "dpo_train", "dpo_heldout", "rl_train", "rl_test")


class DataFormatError(ValueError):
    """A malformed line of a post-training data file; the message starts with ``file:line:``."""


# ---------------------------------------------------------------------------------------------
# Held-out subjects and fact questions


def is_heldout_subject(subject: str) -> bool:
    """Whether a country or animal is held out of all training data (~25%, by stable hash).

    A hash rather than a seeded draw: the split must not move when a seed or a count changes,
    or yesterday's held-out subject could be in today's training data.
    """
    digest = hashlib.sha256(f"heldout:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


# Several phrasings per kind of fact, so SFT teaches answering, not one wording.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": ("What is the capital of {}?", "Which city is the capital of {}?",
                "Can you tell me the capital of {}?"),
    "continent": ("Which continent is {} in?", "On which continent is {}?",
                  "Where in the world is {}?"),
    "language": ("What language do people speak in {}?", "What is the official language of {}?",
                 "Which language is spoken in {}?"),
    "currency": ("What is the currency of {}?", "What money do people use in {}?",
                 "Which currency is used in {}?"),
    "animal_group": ("What kind of animal is the {}?", "What type of animal is a {}?",
                     "Which animal group does the {} belong to?"),
    "animal_food": ("What does the {} eat?", "What food does the {} like?",
                    "What is the favourite food of the {}?"),
    "animal_habitat": ("Where does the {} live?", "Where can you find the {}?",
                       "What is the home of the {}?"),
    "animal_young": ("What is a baby {} called?", "What do you call a young {}?",
                     "What is the word for a baby {}?"),
    "animal_sound": ("What sound does the {} make?", "What noise does a {} make?",
                     "How does the {} sound?"),
}

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


@dataclass(frozen=True)
class Fact:
    kind: str
    subject: str
    answer: str


def world_facts(heldout: bool) -> list[Fact]:
    """The world's facts about held-out (or only non-held-out) subjects, in a stable order."""
    return [Fact(*item) for item in world.fact_items() if is_heldout_subject(item[1]) == heldout]


def answer_sentence(fact: Fact) -> str:
    """The fact stated the way pretraining pages state it, answer early: the model can copy the
    subject from the question and recall the answer as it learned it."""
    return f"{world.TRAIN_TEMPLATES[fact.kind][0].format(fact.subject)} {fact.answer}."


def question(fact: Fact, template: int) -> str:
    options = QUESTION_TEMPLATES[fact.kind]
    return options[template % len(options)].format(fact.subject)


def answer_candidates() -> dict[str, list[str]]:
    """kind -> every distinct answer of that kind (what a wrong answer is drawn from)."""
    out: dict[str, list[str]] = {}
    for kind, _, answer in world.fact_items():
        if answer not in out.setdefault(kind, []):
            out[kind].append(answer)
    return out


@dataclass(frozen=True)
class HeldoutQuestion:
    messages: list[dict]  # the user turn to answer
    reference: str  # the answer sentence SFT would teach
    answer: str
    kind: str
    subject: str


def heldout_questions(limit: int | None = None) -> list[HeldoutQuestion]:
    """One single-turn question per held-out fact, phrasings rotating within each kind.

    A pure function of the world (no seed), interleaved over kinds so any prefix mixes them:
    ``sft_heldout.jsonl``, SFT's accuracy and ``evaluate``'s chat metrics all use this set.
    """
    by_kind: dict[str, list[Fact]] = {}
    for fact in world_facts(heldout=True):
        by_kind.setdefault(fact.kind, []).append(fact)
    order = []
    for i in range(max(len(v) for v in by_kind.values())):
        order += [facts[i] for facts in by_kind.values() if i < len(facts)]
    items = [
        HeldoutQuestion([{"role": "user", "content": question(f, i)}], answer_sentence(f), f.answer, f.kind, f.subject)
        for i, f in enumerate(order)
    ]
    return items if limit is None else items[:limit]


# ---------------------------------------------------------------------------------------------
# Arithmetic word problems

_FORMS = (
    (re.compile(r"^(\w+) has (\d+) (\w+) and gets (\d+) more\."), "{a} + {b} = {n}, so {name} has {n} {thing} now."),
    (re.compile(r"^(\w+) has (\d+) (\w+) and gives (\d+) of them away\."), "{a} - {b} = {n}, so {name} has {n} {thing} left."),
    (re.compile(r"^(\w+) has (\d+) bags with (\d+) (\w+) in each bag\."), "{a} * {b} = {n}, so {name} has {n} {thing} in all."),
)


ANSWER_PREFIX = "The answer is "


def final_line(answer: int | str) -> str:
    """The final form every worked reply ends with; RL rewards parse exactly this."""
    return f"{ANSWER_PREFIX}{answer}."


def worked_solution(problem: str, answer: int) -> str:
    """The worked reply to a ``world.arithmetic_problems`` question: the step, then the final line."""
    for pattern, step in _FORMS:
        m = pattern.match(problem)
        if m is None:
            continue
        if "bags" in pattern.pattern:
            name, a, b, thing = m.groups()
        else:
            name, a, thing, b = m.groups()
        return step.format(a=a, b=b, n=answer, name=name, thing=thing) + "\n" + final_line(answer)
    raise ValueError(f"not a world.arithmetic_problems question: {problem!r}")


def unique_problems(rng: random.Random, n: int, exclude: set[str] = frozenset()) -> list[tuple[str, int]]:
    """``n`` distinct problems drawn in order from ``rng``, none of whose text is in ``exclude``.

    Drawing one at a time keeps prefixes stable: the first 50 of 100 are the 50 of 50.
    """
    out: list[tuple[str, int]] = []
    seen = set(exclude)
    for _ in range(1000 * max(n, 1)):
        if len(out) == n:
            return out
        ((text, answer),) = world.arithmetic_problems(rng, 1)
        if text not in seen:
            seen.add(text)
            out.append((text, answer))
    if len(out) < n:
        raise ValueError(f"could not draw {n} distinct arithmetic problems")
    return out


def rl_test_problems(seed: int, n: int) -> list[dict]:
    """The held-out RL problems (``rl_test.jsonl``, the chat evaluation's arithmetic)."""
    return [{"prompt": q, "answer": str(a)} for q, a in unique_problems(random.Random(f"{seed}/rl_test"), n)]


def gsm8k_number(text: str) -> str | None:
    """The integer a string states ("1,234", "-7", "42."), normalised; None if it is no integer."""
    m = re.fullmatch(r"\s*\$?(-?\d[\d,]*)\.?\s*", text)
    if m is None or m.group(1).startswith(",") or ",," in m.group(1):
        return None
    return str(int(m.group(1).replace(",", "")))


def final_answer_from_gsm8k(text: str | int) -> str | None:
    """A GSM8K-style answer ("... #### 1,234") or a bare number ("42") as "1234"; None if neither."""
    if isinstance(text, int) and not isinstance(text, bool):
        return str(text)
    if not isinstance(text, str):
        return None
    return gsm8k_number(text.rsplit("####", 1)[-1])


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
# Generated preference pairs: correct and worked > correct and terse > confident and wrong


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


def arithmetic_pair(problem: tuple[str, int], rng: random.Random, terse_fraction: float) -> dict:
    text, answer = problem
    chosen = worked_solution(text, answer)
    if rng.random() < terse_fraction:
        rejected = pad_to(final_line(answer), chosen, rng, before=True)
        kind = "terse"
    else:
        off = rng.choice([-3, -2, -1, 1, 2, 3])
        wrong = answer + off if answer + off >= 0 else answer + abs(off)
        rejected = _wrong_worked(text, answer, wrong)
        kind = "wrong"
    return {"prompt": text, "chosen": chosen, "rejected": rejected, "_kind": kind}


def _wrong_worked(problem: str, answer: int, wrong: int) -> str:
    """The worked reply with the result replaced by ``wrong``: the step is shown, confidently wrong."""
    step, _ = worked_solution(problem, answer).split("\n")
    head, tail = step.split(" = ", 1)
    tail = re.sub(rf"\b{answer}\b", str(wrong), tail)
    return f"{head} = {tail}\n{final_line(wrong)}"


def preference_pairs(
    n: int, facts: list[Fact], problems: Iterable[tuple[str, int]], p: dict, rng: random.Random, cycle_facts: bool
) -> list[dict]:
    """``n`` pairs, about ``p["dpo_arithmetic_fraction"]`` of them arithmetic; facts drawn at random,
    or in order (``cycle_facts``: each held-out fact once before any repeats)."""
    candidates = answer_candidates()
    problems = iter(problems)
    out = []
    for i in range(n):
        problem = next(problems, None) if rng.random() < p["dpo_arithmetic_fraction"] else None
        if problem is not None:
            pair = arithmetic_pair(problem, rng, p["dpo_terse_fraction"])
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


# ---------------------------------------------------------------------------------------------
# Reading and validating user files


def read_jsonl(path: str | os.PathLike, check: Callable[[Any], dict]) -> list[dict]:
    """Rows of a JSONL file, each passed through ``check``; blank lines are skipped.

    ``check`` raises ValueError with what is wrong; it is re-raised as DataFormatError naming
    the file and line.
    """
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
            try:
                rows.append(check(row))
            except (ValueError, ChatFormatError) as err:
                raise DataFormatError(f"{path}:{lineno}: {err}") from None
    return rows


def _object_with(row: Any, required: Iterable[str]) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [key for key in required if key not in row]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    return row


def _text(row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string, got {value!r:.60}")
    return value


def check_sft(row: Any) -> dict:
    row = _object_with(row, ["messages"])
    messages = row["messages"]
    check_messages(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant message: nothing to train on")
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def check_preference(row: Any) -> dict:
    row = _object_with(row, ["prompt", "chosen", "rejected"])
    out = {key: _text(row, key) for key in ("prompt", "chosen", "rejected")}
    if out["chosen"] == out["rejected"]:
        raise ValueError("'chosen' and 'rejected' are identical")
    if row.get("system") is not None:
        out["system"] = _text(row, "system")
    return out


def check_problem(row: Any) -> dict:
    """``{"prompt", "answer"}`` (GSM8K's ``{"question", "answer"}`` too); the answer must state
    an integer, bare or after ``####``."""
    if isinstance(row, dict) and "prompt" not in row and "question" in row:
        row = {**row, "prompt": row["question"]}
    row = _object_with(row, ["prompt", "answer"])
    answer = final_answer_from_gsm8k(row["answer"])
    if answer is None:
        raise ValueError(f"'answer' {row['answer']!r:.60} is not a number (expected e.g. \"42\" or \"... #### 42\")")
    return {"prompt": _text(row, "prompt"), "answer": answer}


def read_sft(path: str | os.PathLike) -> list[dict]:
    """``{"messages": [...]}`` rows; roles system/user/assistant, at least one assistant turn."""
    return read_jsonl(path, check_sft)


def read_preferences(path: str | os.PathLike) -> list[dict]:
    """``{"prompt", "chosen", "rejected"}`` rows (optional ``system``), all non-empty strings."""
    return read_jsonl(path, check_preference)


def read_problems(path: str | os.PathLike) -> list[dict]:
    """``{"prompt", "answer"}`` rows with the answer normalised to an integer string."""
    return read_jsonl(path, check_problem)


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


def build(p: dict) -> tuple[dict[str, list[dict]], dict]:
    """All six files' rows and the stats' extra numbers, from the config section ``p``."""
    seed = p["seed"]
    train_facts = world_facts(heldout=False)
    sources = {}

    # the generated test problems are held out even when the user brings RL data: the generated
    # held-out preference pairs ask them
    generated_test = rl_test_problems(seed, p["rl_test_problems"])
    if p["rl_path"]:
        rl_train, rl_test = split_heldout(dedupe_problems(read_problems(p["rl_path"])), p["heldout_fraction"], seed, "rl")
        sources["rl"] = str(p["rl_path"])
    else:
        rl_test = generated_test
        train = unique_problems(random.Random(f"{seed}/rl_train"), p["rl_train_problems"], {r["prompt"] for r in rl_test})
        rl_train = [{"prompt": q, "answer": str(a)} for q, a in train]
        sources["rl"] = "generated"
    test_texts = {r["prompt"] for r in rl_test + generated_test}

    if p["sft_path"]:
        sft_train, sft_heldout = split_heldout(read_sft(p["sft_path"]), p["heldout_fraction"], seed, "sft")
        sources["sft"] = str(p["sft_path"])
    else:
        problems = unique_problems(random.Random(f"{seed}/sft_problems"), p["sft_conversations"], test_texts)
        sft_train = sft_conversations(p, train_facts, problems, random.Random(f"{seed}/sft"))
        sft_heldout = [
            {"messages": q.messages + [{"role": "assistant", "content": q.reference}]}
            for q in heldout_questions(p["sft_heldout_conversations"])
        ]
        sources["sft"] = "generated"

    if p["dpo_path"]:
        dpo_train, dpo_heldout = split_heldout(read_preferences(p["dpo_path"]), p["heldout_fraction"], seed, "dpo")
        sources["dpo"] = str(p["dpo_path"])
    else:
        problems = unique_problems(random.Random(f"{seed}/dpo_problems"), p["dpo_pairs"], test_texts)
        dpo_train = preference_pairs(p["dpo_pairs"], train_facts, problems, p, random.Random(f"{seed}/dpo"), False)
        dpo_heldout = preference_pairs(
            p["dpo_heldout_pairs"], world_facts(heldout=True), itertools.cycle((r["prompt"], int(r["answer"])) for r in generated_test),
            p, random.Random(f"{seed}/dpo_heldout"), True,
        )
        sources["dpo"] = "generated"

    extra = {"sources": sources, **preference_stats(dpo_train, "dpo_train"), **preference_stats(dpo_heldout, "dpo_heldout")}
    if sources["sft"] == "generated":
        extra["heldout_subjects"] = sorted({f.subject for f in world_facts(heldout=True)})
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


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """One JSON object a line, atomically; keys starting with ``_`` (bookkeeping) are left out."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--output", required=True, help="directory for the six JSONL files")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def run(args: argparse.Namespace, stage: str) -> int:
    p = stage_params(args.params, args.config, "posttrain_data")
    stats = StageStats("posttrain_data")
    files, extra = build(p)
    out = Path(args.output)
    for name in OUTPUT_FILES:
        write_jsonl(out / f"{name}.jsonl", files[name])
    stats.extra.update(extra)
    stats.write(args.stats)
    return 0
