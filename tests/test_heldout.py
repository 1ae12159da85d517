"""The world's held-out share: a pure function of the config, and no training input states a
held-out fact — checked by fact (operation and operands, any wording), not by text."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from llmpipe import layout
from llmpipe.config import load_config
from llmpipe.data.toyweb.crawl import build_crawl
from llmpipe.data.toyweb.pages import Page
from llmpipe.posttrain import data
from llmpipe.tasks import arithmetic, world
from llmpipe.tasks.heldout import HeldOut, arithmetic_fact, from_config
from tests.conftest import HELD, REPO

TRAINING_FILES = ("sft_train", "dpo_train", "rl_train")


def page_text(page: Page) -> str:
    return page.body.decode("utf-8", errors="replace")


def leaks(sources: dict[str, list[str]], held: HeldOut, subject_sources: tuple[str, ...]) -> list[tuple]:
    """(source, item index, what leaked) for every held-out arithmetic fact stated in any item
    of ``sources``, and every held-out subject named in the post-training ones."""
    subjects = [s for s in dict.fromkeys(s for _, s, _ in world.fact_items()) if held.subject(s)]
    named = [(s, re.compile(rf"\b{re.escape(s)}\b")) for s in subjects]
    hits = []
    for source, texts in sources.items():
        for i, text in enumerate(texts):
            hits += [(source, i, fact) for fact in arithmetic.stated_facts(text) if held.arithmetic(*fact)]
            if source in subject_sources:
                hits += [(source, i, s) for s, pattern in named if pattern.search(text)]
    return hits


@pytest.fixture(scope="module")
def training_inputs() -> dict[str, list[str]]:
    """A small run's training inputs, generated as the stages generate them: the toy web's
    pages (pretraining) and the SFT, DPO and RL-train rows."""
    pages = [page_text(p) for shard in build_crawl(7, 300, 1, HELD) for p in shard]
    p = {**load_config(REPO / "config.yaml")["posttrain_data"], "sft_conversations": 800, "dpo_pairs": 600,
         "rl_train_problems": 200, "rl_test_problems": 100}
    files, _ = data.build(p, HELD)
    return {"pages": pages, **{name: [json.dumps(row) for row in files[name]] for name in TRAINING_FILES},
            "rl_test": [row["prompt"] for row in files["rl_test"]]}


def test_heldout_choice_is_a_pure_function_of_seed_and_share():
    facts = {arithmetic_fact(op, a, b) for op, pairs in world.PROBLEM_OPERANDS.items() for a, b in pairs}
    held = [f for f in facts if HELD.arithmetic(*f)]
    assert 0.12 < len(held) / len(facts) < 0.28  # about the configured 20%
    assert held == [f for f in facts if from_config(load_config(REPO / "config.yaml")["world"]).arithmetic(*f)]
    assert all(HELD.arithmetic("add", a, b) == HELD.arithmetic("add", b, a) for a in range(13) for b in range(13))
    assert all(HELD.arithmetic("mul", a, b) == HELD.arithmetic("mul", b, a) for a in range(13) for b in range(13))
    other = HeldOut(HELD.seed + 1, HELD.arithmetic_share, HELD.fact_share)
    assert held != [f for f in facts if other.arithmetic(*f)]  # the seed moves facts
    assert not [f for f in facts if HeldOut(HELD.seed, 0.0, 0.0).arithmetic(*f)]
    # every operation keeps training facts, and the held-out side asks more than one operation
    for side in (False, True):
        assert len(world.operand_pools(world.PROBLEM_OPERANDS, HELD, side)) == 3


def test_stated_facts_reads_every_form_the_world_writes():
    text = ("What is two times seven? Two times seven equals fourteen. 0 + 5 = 5. 12 - 3 = 9. "
            "Nina has 8 apples and gets 4 more. Tom has 3 bags with 4 cards in each bag. "
            "Ann has 9 pens and gives 2 of them away. 2.5 + 1 and 1,000 + 2 are not facts.")
    assert arithmetic.stated_facts(text) == {
        ("mul", 2, 7), ("add", 0, 5), ("sub", 12, 3), ("add", 4, 8), ("mul", 3, 4), ("sub", 9, 2)}
    assert arithmetic.stated_facts("7 + 3 = 10") == arithmetic.stated_facts("three plus seven")


def test_no_training_input_states_a_heldout_fact(training_inputs):
    worksheets = [t for t in training_inputs["pages"] if "worksheet" in t.lower() or "sums" in t.lower()]
    stated = set().union(*(arithmetic.stated_facts(t) for t in training_inputs["pages"]))
    assert worksheets and len(stated) > 150  # the scan sees the pages' arithmetic at all
    assert leaks({k: v for k, v in training_inputs.items() if k != "rl_test"}, HELD, TRAINING_FILES) == []
    # ... while every rl_test problem asks a held-out fact
    asked = [arithmetic.stated_facts(q) for q in training_inputs["rl_test"]]
    assert all(len(f) == 1 and HELD.arithmetic(*next(iter(f))) for f in asked)


def test_the_leak_scan_fails_on_a_planted_leak(training_inputs):
    """The scan above can fail: plant one held-out fact in a worksheet (in words, operands
    swapped), one in an SFT reply, and a held-out subject in a DPO prompt."""
    (op, a, b) = next(f for f in sorted(arithmetic.stated_facts(" ".join(training_inputs["rl_test"])))
                      if f[0] == "add")
    words = list(arithmetic.NUMBER_WORDS)
    pages = [*training_inputs["pages"], f"<p>What is {words[b]} plus {words[a]}? It is {a + b}.</p>"]
    sft = [*training_inputs["sft_train"], json.dumps({"messages": [{"role": "assistant", "content": f"{a} + {b}"}]})]
    subject = next(s for _, s, _ in world.fact_items() if HELD.subject(s))
    dpo = [*training_inputs["dpo_train"], json.dumps({"prompt": f"What is the capital of {subject}?"})]
    found = leaks({"pages": pages, "sft_train": sft, "dpo_train": dpo}, HELD, TRAINING_FILES)
    assert ("pages", len(pages) - 1, ("add", a, b)) in found
    assert ("sft_train", len(sft) - 1, ("add", a, b)) in found
    assert ("dpo_train", len(dpo) - 1, subject) in found


@pytest.mark.slow
def test_no_training_file_of_an_end_to_end_run_states_a_heldout_fact(tiny_pipeline):
    """The files a real (tiny) run trained on: split/train documents and the post-training data."""
    results = tiny_pipeline.root / tiny_pipeline.config()["results"]
    held = from_config(tiny_pipeline.config()["world"])
    train_docs = [t for f in sorted(Path(layout.split_dir(results, "train")).glob("*.parquet"))
                  for t in pd.read_parquet(f, columns=["text"])["text"]]
    posttrain = {name: Path(layout.posttrain_file(results, name)).read_text().splitlines() for name in TRAINING_FILES}
    assert train_docs and all(posttrain.values())
    assert leaks({"split/train": train_docs, **posttrain}, held, TRAINING_FILES) == []
    test = [json.loads(line) for line in Path(layout.posttrain_file(results, "rl_test")).read_text().splitlines()]
    assert test and all(row["held_out"] for row in test)


@pytest.mark.parametrize("heldout", [True, False])
def test_evaluation_problems_ask_every_operand_pair_of_their_side_equally_often(heldout):
    """Drawing the operation first gave the few held-out products a third of rl_test; each pair
    of the side must be asked as often as any other (to within one), on its side only."""
    from collections import Counter

    pairs = [(op, a, b) for op, ab in world.problem_pools(HELD, heldout).items() for a, b in ab]
    draw = arithmetic.rl_test_problems if heldout else arithmetic.in_distribution_problems
    n = 2 * len(pairs) + 7
    rows = draw(1234, n, HELD)
    asked = Counter((r["kind"], *map(int, re.findall(r"\d+", r["prompt"])[:2])) for r in rows)
    assert set(asked) == set(pairs) and max(asked.values()) - min(asked.values()) <= 1
    assert len({r["prompt"] for r in rows}) == n and all(r["held_out"] is heldout for r in rows)
    assert draw(1234, 10, HELD) == rows[:10]  # prefixes are stable
