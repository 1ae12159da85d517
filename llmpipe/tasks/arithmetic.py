"""Arithmetic word problems: worked solutions, distinct draws on either side of the world's
held-out share, the evaluation sets (``rl_test``: held-out facts; an in-distribution set of
training facts), GSM8K-style answers ("... #### 42"), and the facts a text states
(``stated_facts``: what the training-data leak test scans for).
"""
from __future__ import annotations

import random
import re

from llmpipe.tasks import world
from llmpipe.tasks.heldout import HeldOut, arithmetic_fact

# (question pattern, its groups as (name, a, thing, b) or (name, a, b, thing), the operation,
# the closing sentence)
_FORMS = (
    (re.compile(r"^(\w+) has (\d+) (\w+) and gets (\d+) more\."), "add", "So {name} has {n} {thing} now."),
    (re.compile(r"^(\w+) has (\d+) (\w+) and gives (\d+) of them away\."), "sub", "So {name} has {n} {thing} left."),
    (re.compile(r"^(\w+) has (\d+) bags with (\d+) (\w+) in each bag\."), "mul", "So {name} has {n} {thing} in all."),
)


ANSWER_PREFIX = "The answer is "


def final_line(answer: int | str) -> str:
    """The final form every worked reply ends with; RL rewards parse exactly this."""
    return f"{ANSWER_PREFIX}{answer}."


def count_line(op: str, a: int, b: int) -> str:
    """The count that works ``a op b`` out one step at a time, each value with its step number,
    from step 0: "Count on 3 from 7: 7 is 0, 8 is 1, 9 is 2, 10 is 3." (a − b counts back from
    a; a bags of b count in b's from 0).

    Why a count and not the result: a reply that states "7 + 3 = 10" can only be recalled, so
    the tiny default model answered the training facts and guessed at the held-out ones (chat
    arithmetic after SFT: 0.55 in-distribution, 0.03 held out). A count is built of steps
    (the next number, the next step number) that every other count also takes, so an unseen
    pair is worked out rather than remembered. It never states an equation ("a op b = n"), so
    ``stated_facts`` finds none in it; a longer count from the same start does pass through a
    held-out sum as one of its steps (3 + 8's count passes "10 is 7"), which the README states.

    Why step 0: without it the first value (a + 1) had to be worked out from the head, and for
    a held-out pair the model often wrote the answer or a remembered pair's value there instead
    ("Count on 3 from 1: 4 is 1"). With it, the first value is a copy and every later one the
    same increment; the README gives what it changed over three pretraining seeds.
    """
    if op == "add":
        steps = [(a + i, i) for i in range(b + 1)]
        head = f"Count on {b} from {a}"
    elif op == "sub":
        steps = [(a - i, i) for i in range(b + 1)]
        head = f"Count back {b} from {a}"
    elif op == "mul":
        steps = [(b * i, i) for i in range(a + 1)]
        head = f"Count {a} bags of {b}"
    else:
        raise ValueError(f"unknown operation {op!r}")
    return head + ": " + ", ".join(f"{value} is {i}" for value, i in steps) + "."


def worked_solution(problem: str, answer: int) -> str:
    """The worked reply to a ``world.arithmetic_problems`` question: the count, the sentence
    that reads its last value off as the answer, then the final line."""
    for pattern, op, closing in _FORMS:
        m = pattern.match(problem)
        if m is None:
            continue
        if op == "mul":
            name, a, b, thing = m.groups()
        else:
            name, a, thing, b = m.groups()
        return "\n".join([count_line(op, int(a), int(b)), closing.format(n=answer, name=name, thing=thing),
                          final_line(answer)])
    raise ValueError(f"not a world.arithmetic_problems question: {problem!r}")


def unique_problems(
    rng: random.Random, n: int, exclude: set[str] = frozenset(), held: HeldOut | None = None, heldout: bool = False
) -> list[tuple[str, int]]:
    """``n`` distinct problems drawn in order from ``rng``, none of whose text is in ``exclude``,
    on one side of the held-out split (``held``; any fact if None).

    Drawing one at a time keeps prefixes stable: the first 50 of 100 are the 50 of 50.
    """
    return [(p.question, p.answer) for p in unique_facts(rng, n, exclude, held, heldout)]


def unique_facts(
    rng: random.Random, n: int, exclude: set[str] = frozenset(), held: HeldOut | None = None, heldout: bool = False
) -> list[world.Problem]:
    """``unique_problems`` with each problem's operation and operands."""
    out: list[world.Problem] = []
    seen = set(exclude)
    pools = world.problem_pools(held, heldout)
    for _ in range(1000 * max(n, 1)):
        if len(out) == n:
            return out
        problem = world.draw_problem(rng, pools)
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
    if len(out) < n:
        raise ValueError(f"could not draw {n} distinct arithmetic problems")
    return out


def balanced_facts(rng: random.Random, n: int, held: HeldOut, heldout: bool) -> list[world.Problem]:
    """``n`` distinct problems on one side of the held-out split that ask every operand pair of
    that side equally often (to within one): the pairs in a fresh shuffle per round, each
    worded anew. An evaluation set, unlike training data, should weigh every fact alike: drawing
    the operation first gave the 6 held-out products a third of ``rl_test`` and two of them 16 of
    its 100 problems, so one fact learned or lost moved held-out pass@1 by 0.16.

    Drawn one at a time, so prefixes are stable: the first 50 of 100 are the 50 of 50.
    """
    pools = world.problem_pools(held, heldout)
    pairs = [(op, a, b) for op in sorted(pools) for a, b in pools[op]]
    out: list[world.Problem] = []
    seen: set[str] = set()
    order: list[tuple[str, int, int]] = []
    for _ in range(1000 * max(n, 1)):
        if len(out) == n:
            return out
        if not order:
            order = rng.sample(pairs, len(pairs))
        op, a, b = order[-1]
        question = world.problem_text(rng, op, a, b)
        if question not in seen:  # a repeat wording redraws the same pair
            order.pop()
            seen.add(question)
            out.append(world.Problem(question, world.apply(op, a, b), op, a, b))
    raise ValueError(f"could not draw {n} distinct arithmetic problems")


def eval_row(problem: world.Problem, heldout: bool) -> dict:
    """An evaluation item: the question, its answer, the operation (``kind``) and its side."""
    return {"prompt": problem.question, "answer": str(problem.answer), "kind": problem.op, "held_out": heldout}


def rl_test_problems(seed: int, n: int, held: HeldOut) -> list[dict]:
    """The held-out RL problems (``rl_test.jsonl``, the chat evaluation's held-out arithmetic):
    every one asks a fact of the held-out share, which no training input states, and every
    held-out operand pair is asked equally often (``balanced_facts``)."""
    return [eval_row(p, True) for p in balanced_facts(random.Random(f"{seed}/rl_test"), n, held, heldout=True)]


def in_distribution_problems(seed: int, n: int, held: HeldOut) -> list[dict]:
    """Problems about training facts (new wording draws, maybe seen texts): the in-distribution
    side the chat evaluation reports next to ``rl_test``, weighed alike (``balanced_facts``)."""
    rng = random.Random(f"{seed}/in_distribution")
    return [eval_row(p, False) for p in balanced_facts(rng, n, held, heldout=False)]


NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER = r"(\d+|" + "|".join(NUMBER_WORDS) + r")"
_OPS = {"+": "add", "plus": "add", "-": "sub", "minus": "sub", "*": "mul", "×": "mul", "times": "mul"}
_STATEMENTS = (  # (pattern, operation or None: the operator is group 2)
    (re.compile(rf"(?<![\w.,]){_NUMBER} (\+|-|\*|×|plus|minus|times) {_NUMBER}(?![\w,]|\.\d)", re.IGNORECASE), None),
    (re.compile(r"has (\d+) \w+ and gets (\d+) more"), "add"),
    (re.compile(r"has (\d+) \w+ and gives (\d+) of them away"), "sub"),
    (re.compile(r"has (\d+) bags with (\d+) \w+ in each bag"), "mul"),
)


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS[word.lower()]


def stated_facts(text: str) -> set[tuple[str, int, int]]:
    """Every arithmetic fact (canonical ``(op, a, b)``) a text states or asks, in any of the
    forms the world writes: "3 + 4", "three plus four", "5 * 2", "Tom has 3 apples and gets 4
    more", "2 bags with 5 ...". What the leak test scans training files for, by fact."""
    found = set()
    for pattern, op in _STATEMENTS:
        for m in pattern.finditer(text):
            if op is None:
                a, sym, b = m.groups()
                found.add(arithmetic_fact(_OPS[sym.lower()], _number(a), _number(b)))
            else:
                found.add(arithmetic_fact(op, int(m.group(1)), int(m.group(2))))
    return found


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
