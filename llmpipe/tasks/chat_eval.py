"""Chat evaluation, the same for every model (base included, prompted the same way): fact
questions and arithmetic word problems asked in the chat template, answered greedily, on both
sides of the world's held-out share (``llmpipe.tasks.heldout``) and reported side by side:
``*_held_out`` (facts no post-training data mentions; arithmetic facts no training input
states: ``rl_test``) and ``*_in_distribution`` (subjects and operand pairs training covers).

Scoring rules (documented here because the report quotes them):
- a fact reply is correct when the answer appears in it (case-insensitive, on word
  boundaries) and no other answer of the same kind (another capital, another food, ...)
  appears before it: "The capital of Ghana is Accra." is right, "Lagos or Accra" is not;
- a reply *ends properly* when the model closes its turn with ``<|end|>`` within the budget;
- an arithmetic reply is correct when its one final answer (``rewards.parse_final_answer``,
  the RL reward's parser: "The answer is N." / "#### N") equals the problem's (pass@1, greedy).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from llmpipe.model.generate import Sampling, generate_batched
from llmpipe.model.gpt import GPT
from llmpipe.tasks.facts import HeldoutQuestion, answer_candidates
from llmpipe.tasks.rewards import parse_final_answer
from llmpipe.tokenizer.chat import END, prompt_ids

EXAMPLES = 12  # replies of each task kept for the report
SIDES = (("in_distribution", False), ("held_out", True))  # (metric suffix, held-out flag)


@dataclass(frozen=True)
class Reply:
    text: str
    ended: bool  # the model closed its turn with <|end|> within the budget


def chat_replies(
    model: GPT, tokenizer, conversations: list[list[dict]], max_new_tokens: int, batch_size: int
) -> list[Reply]:
    """Greedy replies to conversations (each ends with a user turn), batched, KV-cached.

    Generation stops at ``<|end|>`` (a proper end) or at ``<|bos|>`` / ``<|eos|>``, which no
    reply should contain; a reply ended properly iff it stopped at ``<|end|>`` within budget.
    """
    end = tokenizer.special_tokens[END]
    stops = (end, tokenizer.eos_id, tokenizer.bos_id)
    sampling = Sampling(max_new_tokens, temperature=0, stop_ids=(end,))
    prompts = [prompt_ids(tokenizer, c) for c in conversations]
    replies = []
    for c in generate_batched(model, prompts, sampling, tokenizer.pad_id, batch_size):
        cut = next((i for i, t in enumerate(c.tokens) if t in stops), len(c.tokens))
        replies.append(Reply(tokenizer.decode(c.tokens[:cut]), c.ended and cut == len(c.tokens)))
    return replies


def _word(text: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)", re.IGNORECASE)


def fact_correct(reply: str, answer: str, candidates: list[str]) -> bool:
    """The answer appears (word-bounded, any case) and no other candidate appears before it."""
    found = _word(answer).search(reply)
    if found is None:
        return False
    for other in candidates:
        if other != answer:
            earlier = _word(other).search(reply)
            if earlier is not None and earlier.start() < found.start():
                return False
    return True


def fact_metrics(
    model: GPT, tokenizer, questions: list[HeldoutQuestion], max_new_tokens: int, batch_size: int
) -> dict:
    """Accuracy and ends-properly fraction over held-out fact questions, with examples."""
    if not questions:
        return {"n": 0}
    candidates = answer_candidates()
    replies = chat_replies(model, tokenizer, [q.messages for q in questions], max_new_tokens, batch_size)
    rows = [
        {"prompt": q.messages[-1]["content"], "answer": q.answer, "kind": q.kind, "held_out": q.held_out,
         "reply": r.text,
         "correct": fact_correct(r.text, q.answer, candidates[q.kind]), "ended": r.ended}
        for q, r in zip(questions, replies)
    ]
    kinds = sorted({r["kind"] for r in rows})
    return {
        "n": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "ends_properly": sum(r["ended"] for r in rows) / len(rows),
        "by_kind": {k: sum(r["correct"] for r in rows if r["kind"] == k) / sum(r["kind"] == k for r in rows)
                    for k in kinds},
        "examples": rows[:EXAMPLES],
    }


def arithmetic_metrics(
    model: GPT, tokenizer, problems: list[dict], max_new_tokens: int, batch_size: int
) -> dict:
    """pass@1 (greedy) on ``{"prompt", "answer"}`` problems asked as one user turn."""
    if not problems:
        return {"n": 0}
    conversations = [[{"role": "user", "content": p["prompt"]}] for p in problems]
    replies = chat_replies(model, tokenizer, conversations, max_new_tokens, batch_size)
    rows = []
    for problem, reply in zip(problems, replies):
        parsed = parse_final_answer(reply.text)
        rows.append({
            "prompt": problem["prompt"], "answer": problem["answer"], "kind": problem.get("kind"),
            "held_out": problem.get("held_out"), "reply": reply.text,
            "parsed": None if parsed is None else str(parsed),
            "correct": parsed is not None and parsed == int(problem["answer"]),
            "ended": reply.ended,
        })
    return {
        "n": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "ends_properly": sum(r["ended"] for r in rows) / len(rows),
        "examples": rows[:EXAMPLES],
    }


def chat_metrics(
    model: GPT, tokenizer, p: dict, runtime, questions: list[HeldoutQuestion], problems: dict[str, list[dict]]
) -> dict:  # runtime: the evaluate signature
    """The chat section of ``evaluate``'s metrics, each task on both sides of the held-out share:
    ``facts_held_out`` / ``facts_in_distribution`` (the questions, split by their ``held_out``)
    and ``arithmetic_held_out`` / ``arithmetic_in_distribution`` (``problems`` by side: evaluate
    passes rl_test.jsonl's rows and the eval_sets in-distribution problems, read as DAG inputs)."""
    bs, budget = p["generation_batch_size"], p["chat_max_new_tokens"]
    out = {}
    for side, heldout in SIDES:
        side_questions = [q for q in questions if q.held_out == heldout]
        out[f"facts_{side}"] = fact_metrics(model, tokenizer, side_questions, budget, bs)
        out[f"arithmetic_{side}"] = arithmetic_metrics(model, tokenizer, problems[side], budget, bs)
    return out
