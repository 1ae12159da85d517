"""Arithmetic word problems: worked solutions, distinct draws, the held-out RL test set, and
GSM8K-style answers ("... #### 42").
"""
from __future__ import annotations

import random
import re

from llmpipe.tasks import world

_FORMS = (
    (re.compile(r"^(\w+) has (\d+) (\w+) and gets (\d+) more\."), "{a} + {b} = {n}, so {name} has {n} {thing} now."),
    (re.compile(r"^(\w+) has (\d+) (\w+) and gives (\d+) of them away\."),
     "{a} - {b} = {n}, so {name} has {n} {thing} left."),
    (re.compile(r"^(\w+) has (\d+) bags with (\d+) (\w+) in each bag\."),
     "{a} * {b} = {n}, so {name} has {n} {thing} in all."),
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
