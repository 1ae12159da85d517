"""`llmpipe chat` on a tiny model through stdin, and the chat evaluation's scoring rules."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from llmpipe.posttrain.chat_cli import fit_history
from llmpipe.tasks import chat_eval
from llmpipe.tasks.arithmetic import in_distribution_problems, rl_test_problems, stated_facts
from llmpipe.tasks.facts import heldout_questions
from llmpipe.tokenizer import Tokenizer
from llmpipe.train import runtime as rt
from tests.conftest import HELD, REPO


@pytest.fixture(scope="module")
def tok(byte_tokenizer) -> Tokenizer:
    return byte_tokenizer


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir(context_length=64)


def chat(model_dir, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmpipe.cli", "chat", "--model", str(model_dir), "--max-new-tokens", "6",
         "--device", "cpu", *args],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    )


def test_chat_replies_per_line_resets_and_exits_on_eof(model_dir):
    proc = chat(
        model_dir, "Hello there\nAnd again\n/reset\nHello there\n", "--temperature", "0", "--system", "Be kind."
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[2] == "(history cleared)"
    # greedy, same question after a reset: the same reply as the first turn
    assert lines[3] == lines[0]


def test_long_histories_drop_the_oldest_turns_but_keep_the_system_message(tok):
    messages = [{"role": "system", "content": "S"}]
    for i in range(20):
        messages += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    messages.append({"role": "user", "content": "last"})
    kept = fit_history(tok, messages, room=60)
    assert kept[0]["content"] == "S" and kept[-1]["content"] == "last"
    assert kept[1]["role"] == "user" and len(kept) < len(messages)


def test_fact_scoring_rule():
    candidates = ["Accra", "Abuja", "Lagos"]
    assert chat_eval.fact_correct("The capital of Ghana is Accra.", "Accra", candidates)
    assert chat_eval.fact_correct("accra, I think", "Accra", candidates)
    assert not chat_eval.fact_correct("Abuja or Accra", "Accra", candidates)  # another answer first
    assert not chat_eval.fact_correct("Accrafield", "Accra", candidates)  # word boundary


def test_chat_metrics_on_a_tiny_model(tok, model_dir):
    from llmpipe.model.directory import load_model

    model = load_model(model_dir)
    p = {
        "chat_max_new_tokens": 4, "generation_batch_size": 4,
    }
    questions = heldout_questions(HELD, 6) + heldout_questions(HELD, 6, heldout=False)
    problems = {"held_out": rl_test_problems(1234, 3, HELD),
                "in_distribution": in_distribution_problems(1234, 3, HELD)}
    runtime = rt.Runtime(torch.device("cpu"), torch.float32)
    metrics = chat_eval.chat_metrics(model, tok, p, runtime, questions, problems)
    for side, heldout in chat_eval.SIDES:
        facts, arithmetic = metrics[f"facts_{side}"], metrics[f"arithmetic_{side}"]
        assert facts["n"] == 6 and arithmetic["n"] == 3
        assert 0 <= facts["accuracy"] <= 1 and 0 <= facts["ends_properly"] <= 1
        assert all(e["held_out"] is heldout for e in facts["examples"] + arithmetic["examples"])
        example = arithmetic["examples"][0]
        assert {"prompt", "answer", "kind", "held_out", "reply", "parsed", "correct", "ended"} <= set(example)
        # each side asks only its own facts
        assert all(HELD.arithmetic(*fact) is heldout for e in arithmetic["examples"]
                   for fact in stated_facts(e["prompt"]))
