"""The final-answer parser and the RL reward, against the strings a model (or a hacker) writes."""
from __future__ import annotations

from fractions import Fraction

import pytest

from llmpipe.tasks.rewards import parse_final_answer, parse_number, reward


@pytest.mark.parametrize(
    "text, expected",
    [
        ("6 + 19 = 25, so Ivan has 25 cards now.\nThe answer is 25.", 25),
        ("The answer is 42", 42),
        ("the answer is: 7!", 7),
        ("#### -3", -3),
        ("#### 1,000", 1000),
        ("The answer is 1,234,567.", 1234567),
        ("The answer is 10.0", 10),
        ("The answer is 2.5.", Fraction(5, 2)),
        ("The answer is $1,000.50", Fraction(2001, 2)),
        ("The answer is 42, so we are done.", 42),
        ("The answer is 5. #### 5.0", 5),  # two markers, one value
        ("The answer is 5. The answer is 5.", 5),
    ],
)
def test_accepted_final_answers(text, expected):
    got = parse_final_answer(text)
    assert got == expected
    assert type(got) is type(expected)  # whole numbers are ints, never floats


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Ivan has 25 cards now.",  # a stray number is no answer
        "6 + 19 = 25",  # nor is an equation's result
        "The answer is 5. The answer is 6.",  # two different answers
        "The answer is 5. #### 6",
        "The answer is five.",
        "The answer is 1,00.",  # malformed thousands group
        "The answer is 42abc",
        "The answer is 4/5.",
        "The answer is 3.1.4",
        "The answer is 12. The answer is unclear.",  # a marker without a number spoils it
        "#### ",
    ],
)
def test_rejected_final_answers(text):
    assert parse_final_answer(text) is None


def test_numbers_compare_exactly():
    assert parse_number("10.0") == parse_number("10") == 10
    assert parse_number(" 1,000 ") == 1000
    assert parse_number("0.1") + parse_number("0.2") == parse_number("0.3")  # no float rounding
    assert parse_number("ten") is None


def test_reward_is_correctness_plus_the_format_term():
    assert reward("The answer is 1,000.", "1000", 0.1) == pytest.approx(1.1)
    assert reward("#### 10.0", "10") == 1.0
    assert reward("The answer is 9.", "10", 0.1) == pytest.approx(0.1)  # well-formed, wrong
    assert reward("The answer is 9. The answer is 10.", "10", 0.1) == 0.0  # hedging earns nothing
    assert reward("I think 10", "10", 0.1) == 0.0
    with pytest.raises(ValueError, match="'ten' is not a number"):
        reward("The answer is 10.", "ten")
