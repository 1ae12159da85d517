"""Evaluation sets are files: the eval-sets stage writes exactly the items evaluate scored in-process
before, and evaluate scores whatever rl_test.jsonl holds (a user's rl_path split included)."""
from __future__ import annotations

import json

import torch

from llmpipe.cli import main
from llmpipe.config import stage_params
from llmpipe.eval.evaluate import EvalSets, evaluate
from llmpipe.eval.sets import arithmetic_problems, spread
from llmpipe.io import read_jsonl
from llmpipe.tasks.arithmetic import in_distribution_problems, stated_facts
from llmpipe.tasks.facts import heldout_questions
from llmpipe.tasks.world import fact_probes
from llmpipe.train import runtime as rt
from tests.conftest import HELD, WORLD


def test_written_sets_are_the_generated_items(tmp_path):
    names = ("fact-probes", "chat", "chat-arithmetic", "arithmetic-fewshot")
    paths = {name: tmp_path / f"{name}.jsonl" for name in names}
    params = {"fact_probes": 30, "chat_fact_questions": 7, "chat_arithmetic_problems": 6, "arithmetic_problems": 5,
              "seed": 3}
    args = [x for name, path in paths.items() for x in (f"--{name}", str(path))]
    assert main(["eval-sets", "--params", json.dumps(params), "--world", WORLD, *args,
                 "--stats", str(tmp_path / "s.json")]) == 0
    probes = read_jsonl(paths["fact-probes"])
    for phrasing, heldout in (("train", False), ("heldout", True)):
        expected = spread(fact_probes(heldout=heldout), 30)
        got = [r for r in probes if r["phrasing"] == phrasing]
        assert [(r["prompt"], r["answer"], r["kind"]) for r in got] == [(p.prompt, p.answer, p.kind) for p in expected]
        assert [r["subject_held_out"] for r in got] == [HELD.subject(p.subject) for p in expected]
    chat = read_jsonl(paths["chat"])
    # the held-out questions, then as many in-distribution ones
    expected = heldout_questions(HELD, 7) + heldout_questions(HELD, 7, heldout=False)
    assert [r["messages"] for r in chat] == [q.messages for q in expected]
    assert [r["held_out"] for r in chat] == [True] * 7 + [False] * 7
    assert all(r["prompt"] == r["messages"][-1]["content"] and r["answer"] and r["kind"] for r in chat)
    assert read_jsonl(paths["chat-arithmetic"]) == in_distribution_problems(3, 6, HELD)
    arithmetic = read_jsonl(paths["arithmetic-fewshot"])
    assert arithmetic == arithmetic_problems(5, 3, 10, 3, HELD, True) + arithmetic_problems(5, 3, 10, 3, HELD, False)
    # the question asks a fact of its side; the solved shots are always training facts
    for row in arithmetic:
        *shots, question = row["prompt"].splitlines()
        assert all(HELD.arithmetic(*fact) is False for line in shots for fact in stated_facts(line))
        assert all(HELD.arithmetic(*fact) is row["held_out"] for fact in stated_facts(question))


def test_evaluate_scores_the_rl_test_file_it_is_given(tiny_model_dir):
    from llmpipe.model.directory import load_model, load_tokenizer

    directory = tiny_model_dir(context_length=64)
    model, tok = load_model(directory), load_tokenizer(directory)
    user_test = [{"prompt": "Zed has 2 owls and gets 3 more. How many owls does Zed have now?", "answer": "5"},
                 {"prompt": "A crate holds 4 rows of 2 jars. How many jars?", "answer": "8"}]
    settings = {"sample_prompts": [], "chat_max_new_tokens": 4, "batch_size": 2, "generation_batch_size": 2}
    p = stage_params(json.dumps(settings), None, "evaluate")
    sets = EvalSets(fact_probes=[], chat=[], chat_arithmetic=[], arithmetic_fewshot=[], rl_test=user_test)
    with torch.no_grad():
        metrics = evaluate(model, tok, {}, sets, p, rt.Runtime(torch.device("cpu"), torch.float32))
    held_out = metrics["chat"]["arithmetic_held_out"]  # a user's test split is the held-out side
    assert held_out["n"] == 2
    assert [e["prompt"] for e in held_out["examples"]] == [r["prompt"] for r in user_test]
    assert metrics["chat"]["arithmetic_in_distribution"] == {"n": 0}
    assert metrics["chat"]["facts_held_out"] == {"n": 0} and "memorisation" not in metrics
