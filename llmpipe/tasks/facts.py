"""The world's facts as questions: held-out subjects, question phrasings, answer sentences.

Held-out discipline: subjects (countries, animals) are split by a stable hash
(``is_heldout_subject``); training data never mentions a held-out subject, and the held-out
files and the chat evaluation ask only about them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llmpipe.tasks import world

HELDOUT_PERCENT = 25


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
