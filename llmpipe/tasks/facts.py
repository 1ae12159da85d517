"""The world's facts as questions: held-out subjects, question phrasings, answer sentences.

Held-out discipline: subjects (countries, animals) are split by the world's held-out share
(``llmpipe.tasks.heldout``, a hash of the ``world`` config's seed and the subject); post-training
data never mentions a held-out subject, the held-out files ask only about them, and the chat
evaluation asks about both sides and reports them side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmpipe.tasks import world
from llmpipe.tasks.heldout import HeldOut

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


def world_facts(held: HeldOut, heldout: bool) -> list[Fact]:
    """The world's facts about held-out (or only non-held-out) subjects, in a stable order."""
    return [Fact(*item) for item in world.fact_items() if held.subject(item[1]) == heldout]


def answer_sentence(fact: Fact) -> str:
    """The fact stated the way pretraining pages state it, answer early: the model can copy the
    subject from the question and recall the answer as it learned it."""
    return f"{world.TRAIN_TEMPLATES[fact.kind][0].format(fact.subject)} {fact.answer}."


def question(fact: Fact, template: int) -> str:
    options = QUESTION_TEMPLATES[fact.kind]
    return options[template % len(options)].format(fact.subject)


def answer_candidates(facts: list[Fact] | None = None) -> dict[str, list[str]]:
    """kind -> every distinct answer of that kind among ``facts`` (default: the whole world's),
    what a wrong answer is drawn from."""
    out: dict[str, list[str]] = {}
    for kind, _, answer in world.fact_items() if facts is None else ((f.kind, f.subject, f.answer) for f in facts):
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
    held_out: bool = True  # False: an in-distribution question (its subject is in post-training)


def heldout_questions(held: HeldOut, limit: int | None = None, heldout: bool = True) -> list[HeldoutQuestion]:
    """One single-turn question per held-out fact (``heldout=False``: per training fact),
    phrasings rotating within each kind.

    A pure function of the world and its held-out share, interleaved over kinds so any prefix
    mixes them: ``sft_heldout.jsonl``, SFT's accuracy and ``evaluate``'s chat metrics use this set.
    """
    by_kind: dict[str, list[Fact]] = {}
    for fact in world_facts(held, heldout=heldout):
        by_kind.setdefault(fact.kind, []).append(fact)
    order = []
    for i in range(max(len(v) for v in by_kind.values())):
        order += [facts[i] for facts in by_kind.values() if i < len(facts)]
    items = [
        HeldoutQuestion([{"role": "user", "content": question(f, i)}], answer_sentence(f), f.answer, f.kind, f.subject,
                        heldout)
        for i, f in enumerate(order)
    ]
    return items if limit is None else items[:limit]
