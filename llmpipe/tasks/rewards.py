"""Verifiable rewards: the one parser of a reply's final numeric answer, and the RL reward.

The grammar is strict on purpose: a reward that a model can collect by scattering numbers,
or by hedging between two answers, is a reward RL will learn to hack.

Final-answer grammar (case-insensitive; ``MARKER NUMBER``):

- MARKER is ``The answer is`` (optionally followed by ``:``) or ``####`` (GSM8K's form).
  Nothing else counts: not a stray number, not ``= 42`` at the end of a worked step (the
  worked step of a correct reply states the result too, so it adds nothing, and accepting it
  would reward replies that stop mid-way).
- NUMBER is an optional ``-`` or ``+``, an optional ``$``, then digits — either plain
  (``1000``) or in comma-separated groups of three (``1,000``; ``1,00`` is malformed) — and an
  optional decimal part (``10.0``, ``2.50``). It must be followed by the end, a space, or
  closing punctuation (``.,;:!?)``) and then the end or a space — so the sentence's full stop
  in ``The answer is 42.`` is fine, while ``42abc``, ``4/5`` or ``3.1.4`` are malformed.
- Every marker in the reply must carry a well-formed NUMBER, and all of them must state the
  same value (``The answer is 5. #### 5.0`` is one answer, 5). Two different values, a marker
  with no well-formed number after it, or no marker at all: no answer (``None``).

Values are exact: an ``int`` when whole (``"10.0"`` -> 10, ``"1,000"`` -> 1000), otherwise a
``fractions.Fraction`` (``"2.5"`` -> 5/2), so comparison is numeric and never suffers float
rounding.
"""
from __future__ import annotations

import re
from fractions import Fraction

Number = int | Fraction

_NUMBER = r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_MARKER = re.compile(r"(?:\bthe answer is\s*:?|####)\s*", re.IGNORECASE)
# The number, then the end, a space, or closing punctuation ("42.", "42, so", "42!") before one.
_AFTER_MARKER = re.compile(rf"({_NUMBER})(?=$|\s|[.,;:!?)]+(?:$|\s))")


def parse_number(text: str) -> Number | None:
    """``text`` (surrounding space allowed) as an exact number by the grammar above, or None."""
    m = re.fullmatch(rf"\s*({_NUMBER})\.?\s*", text)
    return _value(m.group(1)) if m else None


def _value(token: str) -> Number:
    sign = -1 if token.startswith("-") else 1
    value = Fraction(token.lstrip("+-").lstrip("$").replace(",", "")) * sign
    return int(value) if value.denominator == 1 else value


def final_answers(text: str) -> list[Number | None]:
    """The value after each marker in ``text``, in order; None where it is malformed."""
    out: list[Number | None] = []
    for marker in _MARKER.finditer(text):
        m = _AFTER_MARKER.match(text, marker.end())
        out.append(_value(m.group(1)) if m else None)
    return out


def parse_final_answer(text: str) -> Number | None:
    """The reply's one final answer, or None (no answer, a malformed one, or two different ones)."""
    answers = final_answers(text)
    if not answers or None in answers or len(set(answers)) != 1:
        return None
    return answers[0]


def reward(completion: str, answer: str | Number, format_weight: float = 0.0) -> float:
    """1 for the correct final answer, plus ``format_weight`` for stating exactly one
    well-formed final answer (right or wrong): the small shaping term that teaches the format
    a model must use before correctness can be rewarded at all.

    ``answer`` is the problem's reference ("42", "1,000" or a number); an unparseable
    reference is a data error and raises ValueError.
    """
    expected = answer if isinstance(answer, (int, Fraction)) else parse_number(str(answer))
    if expected is None:
        raise ValueError(f"reference answer {answer!r} is not a number")
    got = parse_final_answer(completion)
    if got is None:
        return 0.0
    return float(got == expected) + format_weight
