"""``llmpipe dpo``: direct preference optimisation of the SFT model on (prompt, chosen, rejected).

DPO (Rafailov et al. 2023): the policy starts as, and is regularised towards, a frozen
reference — the SFT model itself. Because the policy *is* the reference before the first
step, the reference's summed completion log-probs of every train and held-out pair are
computed once, with the starting weights, and no second model is ever held in memory.

Losses, per pair, with ``pc``/``pr`` the policy's and ``rc``/``rr`` the reference's summed
log-probs of the chosen/rejected completion (``<|end|>`` included):

- ``sigmoid`` (DPO): ``-log σ(β·((pc − rc) − (pr − rr)))``;
- ``ipo`` (Azar et al. 2023): ``(h − 1/(2β))²`` with ``h`` the difference of *length-normalised*
  log-ratios, ``(pc − rc)/|c| − (pr − rr)/|r|``: IPO's target margin ``1/(2β)`` is a per-token
  quantity, so with summed log-ratios it would mean something different for every length.

An optional ``sft_weight`` adds the chosen reply's mean per-token negative log-likelihood
(RPO, Pang et al. 2024): sigmoid DPO can widen the margin by pushing *both* replies down, and
on this tiny model that costs answers; the anchor keeps the chosen reply likely.

The implicit rewards ``β·(pc − rc)`` and ``β·(pr − rr)`` give the metrics: reward accuracy
(chosen's reward above rejected's; a tie counts half, so the starting model scores 0.5 by
construction), margin, and the raw log-probs, on training batches and on held-out pairs. The
chat evaluation's held-out fact and arithmetic accuracy, before and after, shows whether
preference training cost the model its answers.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmpipe.io import public
from llmpipe.posttrain import trainer
from llmpipe.stats import StageStats
from llmpipe.tasks.chat_eval import arithmetic_metrics
from llmpipe.tasks.formats import read_preferences
from llmpipe.tasks.heldout import HeldOut
from llmpipe.tasks.rewards import parse_final_answer
from llmpipe.tokenizer.chat import as_messages, completion_ids, prompt_ids
from llmpipe.train import runtime as rt
from llmpipe.train.logprobs import micro_batches, pair_batch, sequence_logprobs, summed_logprobs
from llmpipe.train.schedule import batch_order


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[int]
    chosen: list[int]  # completion ids: reply text + <|end|>
    rejected: list[int]


def pair_messages(row: dict) -> list[dict]:
    """The conversation a preference row answers: its system message (if any), then the prompt."""
    system = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return system + as_messages(row["prompt"])


def encode_pairs(tokenizer, rows: list[dict], context_length: int) -> tuple[list[PreferencePair], int]:
    """Token ids of each row in the chat template, and how many rows were skipped because a
    completion does not fit the context after its prompt (skipped, not truncated: a cut reply
    is a different reply)."""
    pairs, skipped = [], 0
    for row in rows:
        prompt = prompt_ids(tokenizer, pair_messages(row))
        chosen, rejected = completion_ids(tokenizer, row["chosen"]), completion_ids(tokenizer, row["rejected"])
        if len(prompt) + max(len(chosen), len(rejected)) - 1 > context_length:
            skipped += 1
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected))
    return pairs, skipped


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    beta: float, loss_type: str = "sigmoid",
    chosen_len: torch.Tensor | None = None, rejected_len: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair loss [B] from summed completion log-probs (see the module docstring)."""
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    if loss_type == "ipo":
        if chosen_len is None or rejected_len is None:
            raise ValueError("the ipo loss needs the completion lengths")
        h = chosen_ratio / chosen_len - rejected_ratio / rejected_len
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"dpo.loss {loss_type!r} is not one of ['sigmoid', 'ipo']")


def reward_metrics(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
) -> dict[str, float]:
    """Means over pairs of the implicit rewards, their accuracy (ties half) and margin, and the
    policy's summed log-probs; ``chosen_preferred`` is how often the policy itself gives the
    chosen reply more probability than the rejected one (no reference involved)."""
    chosen_reward = beta * (policy_chosen - ref_chosen).detach().float()
    rejected_reward = beta * (policy_rejected - ref_rejected).detach().float()
    margin = chosen_reward - rejected_reward
    accuracy = (margin > 0).float() + 0.5 * (margin == 0).float()
    return {
        "rewards_chosen": float(chosen_reward.mean()),
        "rewards_rejected": float(rejected_reward.mean()),
        "reward_accuracy": float(accuracy.mean()),
        "reward_margin": float(margin.mean()),
        "logps_chosen": float(policy_chosen.detach().float().mean()),
        "logps_rejected": float(policy_rejected.detach().float().mean()),
        "chosen_preferred": float((policy_chosen > policy_rejected).float().mean()),
    }


@dataclass(frozen=True)
class Scored:
    """Pairs with the reference's summed log-probs of their chosen and rejected completions."""

    pairs: list[PreferencePair]
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor

    def lengths(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor([len(self.pairs[i].chosen) for i in index], dtype=torch.float32),
                torch.tensor([len(self.pairs[i].rejected) for i in index], dtype=torch.float32))


def score(
    model, pairs: list[PreferencePair], pad_id: int, max_tokens: int, runtime: rt.Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of every pair's chosen and of its rejected completion, without gradients."""
    chosen = summed_logprobs(model, [(p.prompt, p.chosen) for p in pairs], pad_id, max_tokens, runtime)
    rejected = summed_logprobs(model, [(p.prompt, p.rejected) for p in pairs], pad_id, max_tokens, runtime)
    return chosen, rejected


def reference_scores(
    model, pairs: list[PreferencePair], used: torch.Tensor, pad_id: int, max_tokens: int, runtime: rt.Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """``score`` of the pairs at indices ``used``, in tensors over all pairs (NaN elsewhere)."""
    chosen, rejected = torch.full((len(pairs),), math.nan), torch.full((len(pairs),), math.nan)
    chosen[used], rejected[used] = score(model, [pairs[i] for i in used.tolist()], pad_id, max_tokens, runtime)
    return chosen, rejected


def heldout_rewards(model, heldout: Scored, pad_id: int, max_tokens: int, beta: float, runtime: rt.Runtime) -> dict:
    if not heldout.pairs:
        return {}
    chosen, rejected = score(model, heldout.pairs, pad_id, max_tokens, runtime)
    metrics = reward_metrics(chosen, rejected, heldout.ref_chosen, heldout.ref_rejected, beta)
    return {f"heldout_{k}": v for k, v in metrics.items()}


def arithmetic_problems_of(rows: list[dict]) -> list[dict]:
    """Held-out pairs whose chosen reply states a final answer, as ``{"prompt", "answer"}``
    problems (each prompt once): the arithmetic half of the answer-accuracy check."""
    problems, seen = [], set()
    for row in rows:
        answer = parse_final_answer(row["chosen"])
        if answer is not None and row["prompt"] not in seen:
            seen.add(row["prompt"])
            problems.append({"prompt": row["prompt"], "answer": str(answer)})
    return problems


def answer_accuracy(model, tokenizer, problems: list[dict], p: dict, held: HeldOut) -> dict:
    """Greedy chat accuracy on held-out fact questions and on held-out arithmetic pairs."""
    facts = trainer.heldout_facts(model, tokenizer, p, held)
    arithmetic = arithmetic_metrics(model, tokenizer, problems, p["eval_max_new_tokens"], p["eval_batch_size"])
    return {
        "heldout_answer_accuracy": facts.get("accuracy"),
        "heldout_arithmetic_accuracy": arithmetic.get("accuracy"),
        "_examples": facts.get("examples", [])[:4] + arithmetic.get("examples", [])[:4],
    }


def train(p: dict, args: argparse.Namespace, stats: StageStats) -> None:
    base = trainer.load_base(p, args.base)
    model, tokenizer, runtime = base.model, base.tokenizer, base.runtime
    context, pad_id, micro = model.config.context_length, tokenizer.pad_id, p["micro_batch_tokens"]
    held = trainer.world_heldout(args)

    train_rows, heldout_rows = read_preferences(args.train), read_preferences(args.heldout)
    train_pairs, skipped = encode_pairs(tokenizer, train_rows, context)
    heldout_pairs, heldout_skipped = encode_pairs(tokenizer, heldout_rows, context)
    stats.docs_in, stats.docs_out = len(train_rows), len(train_pairs)
    if skipped:
        stats.removed["too_long"] += skipped
    if not train_pairs:
        raise ValueError(f"{args.train}: no preference pair fits the context of {context} tokens")

    steps_per_epoch = math.ceil(len(train_pairs) / p["batch_size"])
    steps = max(1, round(p["epochs"] * steps_per_epoch))
    order = batch_order(len(train_pairs), p["batch_size"], steps, p["seed"])

    start_time = time.perf_counter()
    # the frozen reference = the starting weights: score every pair training will use (all of
    # them from one epoch on) and every held-out pair once, before any step
    used = torch.cat(order).unique()
    train_set = Scored(train_pairs, *reference_scores(model, train_pairs, used, pad_id, micro, runtime))
    heldout_set = Scored(heldout_pairs, *score(model, heldout_pairs, pad_id, micro, runtime))
    reference_seconds = time.perf_counter() - start_time
    problems = arithmetic_problems_of(heldout_rows)
    start_eval = heldout_rewards(model, heldout_set, pad_id, micro, p["beta"], runtime)
    start_answers = answer_accuracy(model, tokenizer, problems, p, held)
    optimizer = trainer.make_optimizer(model, p, runtime)

    def step_fn(step: int, index: torch.Tensor) -> dict:
        t0 = time.perf_counter()
        n = len(index)
        policy_chosen, policy_rejected = torch.zeros(n), torch.zeros(n)  # detached, for the metrics
        preference_sum = nll_sum = 0.0
        # each micro-batch runs a group of pairs' chosen and rejected rows; the loss is a mean
        # over pairs, so each group adds its pairs' terms / n and the gradients sum to the step's
        widths = [len(train_pairs[i].prompt) + max(len(train_pairs[i].chosen), len(train_pairs[i].rejected)) - 1
                  for i in index.tolist()]
        for group in micro_batches(widths, max(1, micro // 2)):
            sel = index[group]
            pairs = [train_pairs[i] for i in sel.tolist()]
            rows = [(q.prompt, q.chosen) for q in pairs] + [(q.prompt, q.rejected) for q in pairs]
            batch = pair_batch(rows, pad_id, context).to(runtime.device)
            with runtime.autocast():
                logps = sequence_logprobs(model, batch).float()
            chosen, rejected = logps[: len(sel)], logps[len(sel):]
            chosen_len, rejected_len = (t.to(runtime.device) for t in train_set.lengths(sel))
            preference = dpo_loss(chosen, rejected, train_set.ref_chosen[sel].to(runtime.device),
                                  train_set.ref_rejected[sel].to(runtime.device), p["beta"], p["loss"],
                                  chosen_len, rejected_len).sum() / n
            nll_chosen = -(chosen / chosen_len).sum() / n
            (preference + p["sft_weight"] * nll_chosen).backward()
            preference_sum += float(preference.detach())
            nll_sum += float(nll_chosen.detach())
            policy_chosen[group], policy_rejected[group] = chosen.detach().cpu(), rejected.detach().cpu()
        grad_norm = trainer.apply_gradients(model, optimizer, p["grad_clip"])
        return {
            "epoch": step / steps_per_epoch, "loss": preference_sum + p["sft_weight"] * nll_sum,
            "preference_loss": preference_sum, "nll_chosen": nll_sum,
            "grad_norm": grad_norm,
            **reward_metrics(policy_chosen, policy_rejected, train_set.ref_chosen[index],
                             train_set.ref_rejected[index], p["beta"]),
            "pairs_per_s": n / (time.perf_counter() - t0),
        }

    history, last_eval = trainer.train_steps(
        model,
        optimizer,
        p,
        order,
        step_fn,
        lambda: heldout_rewards(model, heldout_set, pad_id, micro, p["beta"], runtime),
        "dpo",
        {"loss": "loss", "acc": "reward_accuracy"},
    )
    end_answers = answer_accuracy(model, tokenizer, problems, p, held)
    seconds = time.perf_counter() - start_time

    trainer.save(args, base, model, "dpo", history)
    stats.extra.update({
        "steps": steps, "epochs": p["epochs"], "pairs_used": len(used), "batch_size": p["batch_size"],
        "beta": p["beta"], "loss": p["loss"], "sft_weight": p["sft_weight"],
        "train_pairs": len(train_pairs), "heldout_pairs": len(heldout_pairs), "heldout_skipped": heldout_skipped,
        "final_loss": history[-1]["loss"],
        **last_eval,
        **{f"{k}_start": v for k, v in start_eval.items()},
        **public(end_answers),
        **{f"{k}_start": v for k, v in public(start_answers).items()},
        "heldout_examples": end_answers["_examples"], "heldout_examples_start": start_answers["_examples"],
        "reference_seconds": reference_seconds, **trainer.runtime_extra(runtime, seconds),
    })


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    trainer.add_arguments(parser, "model directory to align, also the frozen reference (results/sft)",
                          {"--train": "dpo_train.jsonl", "--heldout": "dpo_heldout.jsonl"})


def run(args: argparse.Namespace, stage: str) -> int:
    return trainer.run(args, "dpo", train)
