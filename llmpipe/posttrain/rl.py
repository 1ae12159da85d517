"""``llmpipe rl``: GRPO-style reinforcement learning on verifiable rewards (arithmetic problems).

GRPO (Shao et al. 2024, DeepSeekMath): no value model; each step samples G completions of
each of B problems from the current policy, scores them with ``rewards.reward`` (1 for the
correct parsed final answer, plus a small format term), and uses the reward minus its
group's mean as every token's advantage — optionally divided by the group's std, which Dr.
GRPO (Liu et al. 2025) shows favours groups of low spread, hence off by default.

The loss is PPO's clipped surrogate, ``-min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A)`` per token
with ``ρ = π/π_old``, summed over every completion token of the step and divided by their
count (token-level normalisation, as DAPO and Dr. GRPO: no per-sequence length bias). Over
``ppo_epochs`` passes on the same samples ρ moves away from 1 and the clip bites; π_old is
the first pass's detached log-prob (the weights that sampled: no extra forward). Log-probs
are of ``logits / temperature`` — the distribution samples were drawn from. An optional k3
estimate of KL(π‖π_ref) to the frozen starting model (Schulman 2020) is added per token;
with ``kl_coef = 0`` that model is never loaded.

Held-out metrics on ``rl_test`` at the start, every ``eval_every`` steps and at the end:
greedy pass@1, and from ``eval_pass_k`` samples per problem at the sampling temperature the
sampled pass@1 and pass@k (the unbiased estimator of Chen et al. 2021).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import torch

from llmpipe.io import public
from llmpipe.model.generate import Sampling, generate_batched
from llmpipe.model.gpt import GPT
from llmpipe.posttrain import trainer
from llmpipe.stats import StageStats
from llmpipe.tasks.formats import read_problems
from llmpipe.tasks.rewards import Number, parse_final_answer, parse_number, reward
from llmpipe.tokenizer.chat import END, as_messages, prompt_ids
from llmpipe.train import runtime as rt
from llmpipe.train.logprobs import micro_batches, pair_batch, token_logprobs
from llmpipe.train.schedule import batch_order

EXAMPLES = 8  # held-out completions kept in stats.json for the report


@dataclasses.dataclass(frozen=True)
class Problem:
    text: str
    prompt: list[int]  # the chat-template prompt, ending with <|assistant|>
    answer: Number


def encode_problems(
    tokenizer, rows: list[dict], context_length: int, max_new_tokens: int, source: str
) -> tuple[list[Problem], int]:
    """Problems whose prompt leaves room for ``max_new_tokens`` in the context, and how many
    did not (skipped: a completion cut short by the context could never be rewarded)."""
    problems, skipped = [], 0
    for i, row in enumerate(rows):
        answer = parse_number(row["answer"])
        if answer is None:
            raise ValueError(f"{source}: problem {i + 1}: answer {row['answer']!r} is not a number")
        prompt = prompt_ids(tokenizer, as_messages(row["prompt"]))
        if len(prompt) + max_new_tokens > context_length:
            skipped += 1
            continue
        problems.append(Problem(row["prompt"], prompt, answer))
    return problems, skipped


@dataclasses.dataclass(frozen=True)
class Rollout:
    completion: list[int]  # sampled tokens, with <|end|> appended when the model ended its turn
    text: str
    ended: bool


def sample(model: GPT, tokenizer, prompts: list[list[int]], sampling: Sampling, batch_size: int) -> list[Rollout]:
    """Completions of ``prompts`` (KV-cached, stopping at ``<|end|>``), batched."""
    end = tokenizer.special_tokens[END]
    return [Rollout(c.tokens + [end] if c.ended else c.tokens, tokenizer.decode(c.tokens), c.ended)
            for c in generate_batched(model, prompts, sampling, tokenizer.pad_id, batch_size)]


def group_advantages(
    rewards: torch.Tensor, std_normalize: bool, eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages [B, G] of rewards [B, G] (reward − group mean, optionally ÷ (group std + eps)),
    and which groups [B] have zero reward spread (their advantages are all exactly 0)."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    zero_spread = (rewards == rewards[:, :1]).all(dim=1)
    if std_normalize:
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return centred.masked_fill(zero_spread[:, None], 0.0), zero_spread


def grpo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    eps_low: float, eps_high: float, ref_logp: torch.Tensor | None = None, kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The token-normalised clipped surrogate (+ k3 KL) of per-token log-probs [N, T] with one
    advantage [N] per sequence; also the clip fraction (tokens whose clipped term was taken
    because it is smaller) and the mean KL estimate."""
    mask = mask.float()
    n_tokens = mask.sum().clamp(min=1)
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    unclipped, clipped = ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    stats = {"clip_fraction": float(((clipped < unclipped).float() * mask).sum() / n_tokens)}
    if ref_logp is not None and kl_coef > 0:
        # k3 (Schulman 2020): exp(q − p) − (q − p) − 1 ≥ 0, unbiased for KL(π‖π_ref) under π
        log_ratio = ref_logp - logp
        kl = torch.exp(log_ratio) - log_ratio - 1
        per_token = per_token + kl_coef * kl
        stats["kl"] = float((kl.detach() * mask).sum() / n_tokens)
    return (per_token * mask).sum() / n_tokens, stats


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k of the n samples (c of them correct) is correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def correct(text: str, answer: Number) -> bool:
    return parse_final_answer(text) == answer


def heldout_metrics(model: GPT, tokenizer, problems: list[Problem], p: dict, runtime: rt.Runtime) -> dict:
    """Greedy pass@1, and sampled pass@1 / pass@k from ``eval_pass_k`` samples at the sampling
    temperature (a fixed seed, so every measurement of a run draws the same way), decoded in the
    runtime's precision as ``evaluate`` decodes."""
    was_training = model.training
    model.eval()
    prompts = [pr.prompt for pr in problems]
    end = tokenizer.special_tokens[END]
    k = p["eval_pass_k"]
    with runtime.autocast():
        greedy = sample(
            model, tokenizer, prompts, Sampling(p["max_new_tokens"], 0.0, stop_ids=(end,)), p["eval_batch_size"]
        )
        sampled = sample(model, tokenizer, [q for q in prompts for _ in range(k)],
                         Sampling(p["max_new_tokens"], p["temperature"], stop_ids=(end,), seed=p["seed"]),
                         p["eval_batch_size"])
    model.train(was_training)
    hits = [sum(correct(r.text, pr.answer) for r in sampled[i * k : (i + 1) * k]) for i, pr in enumerate(problems)]
    greedy_hits = [correct(r.text, pr.answer) for r, pr in zip(greedy, problems)]
    n = len(problems)
    return {
        "heldout_pass_at_1": sum(greedy_hits) / n,
        "heldout_pass_at_1_sampled": sum(h / k for h in hits) / n,
        f"heldout_pass_at_{k}": sum(pass_at_k(k, h, k) for h in hits) / n,
        "heldout_answered": sum(parse_final_answer(r.text) is not None for r in greedy) / n,
        "heldout_ended": sum(r.ended for r in greedy) / n,
        "_examples": [{"prompt": pr.text, "answer": str(pr.answer), "reply": r.text, "correct": ok}
                      for pr, r, ok in list(zip(problems, greedy, greedy_hits))[:EXAMPLES]],
    }


def rl_step(
    model: GPT, optimizer: torch.optim.Optimizer, tokenizer, problems: list[Problem], p: dict,
    step_seed: int, runtime: rt.Runtime, reference: GPT | None = None,
) -> dict:
    """One GRPO step on ``problems``: sample G completions each, reward, advantages, then
    ``ppo_epochs`` clipped-surrogate updates. Returns the step's metrics."""
    G, T = p["group_size"], p["temperature"]
    model.eval()
    end = tokenizer.special_tokens[END]
    sampling = Sampling(p["max_new_tokens"], T, stop_ids=(end,), seed=step_seed)
    prompts = [pr.prompt for pr in problems for _ in range(G)]
    with runtime.autocast():
        rollouts = sample(model, tokenizer, prompts, sampling, len(prompts))
    rewards = torch.tensor(
        [reward(r.text, problems[i // G].answer, p["format_weight"]) for i, r in enumerate(rollouts)]
    ).view(len(problems), G)
    advantages, zero_spread = group_advantages(rewards, p["std_normalize"])

    pairs = [(problems[i // G].prompt, r.completion) for i, r in enumerate(rollouts)]
    # length-sorted micro-batches: the loss is a mean over every completion token of the step, so
    # each micro-batch's token mean is weighted by its share of the tokens and the gradients add up
    groups = micro_batches([len(a) + len(b) - 1 for a, b in pairs], p["micro_batch_tokens"])
    batches = [pair_batch([pairs[i] for i in g], tokenizer.pad_id, model.config.context_length).to(runtime.device)
               for g in groups]
    advantages = advantages.view(-1)
    micro_advantages = [advantages[g].to(runtime.device) for g in groups]
    counts = [int(b.mask.sum()) for b in batches]
    n_tokens = sum(counts)
    shares = [c / max(n_tokens, 1) for c in counts]
    model.train()
    old_logps: list[torch.Tensor] = []
    ref_logps: list[torch.Tensor | None] = [None] * len(batches)
    if reference is not None:
        with torch.no_grad(), runtime.autocast():
            ref_logps = [token_logprobs(reference, b, T)[0] for b in batches]
    losses, clips, kls, grad_norms, entropy = [], [], [], [], 0.0
    for epoch in range(p["ppo_epochs"]):
        loss_sum = clip_sum = kl_sum = 0.0
        for j, (b, adv, share) in enumerate(zip(batches, micro_advantages, shares)):
            with runtime.autocast():
                logp, ent = token_logprobs(model, b, T, with_entropy=epoch == 0)
            if epoch == 0:  # the weights that sampled: pi_old, for every pass over these samples
                old_logps.append(logp.detach())
                entropy += float(ent.sum()) / max(n_tokens, 1)
            loss, stats = grpo_loss(
                logp, old_logps[j], adv, b.mask, p["clip_eps_low"], p["clip_eps_high"], ref_logps[j], p["kl_coef"],
            )
            (loss * share).backward()
            loss_sum += float(loss.detach()) * share
            clip_sum += stats["clip_fraction"] * share
            kl_sum += stats.get("kl", 0.0) * share
        grad_norms.append(trainer.apply_gradients(model, optimizer, p["grad_clip"]))
        losses.append(loss_sum)
        clips.append(clip_sum)
        kls.append(kl_sum)
    correct_frac = sum(correct(r.text, problems[i // G].answer) for i, r in enumerate(rollouts)) / len(rollouts)
    row = {
        "loss": sum(losses) / len(losses), "reward": float(rewards.mean()), "accuracy": correct_frac,
        "answered": sum(parse_final_answer(r.text) is not None for r in rollouts) / len(rollouts),
        "completion_length": sum(len(r.completion) for r in rollouts) / len(rollouts),
        "ended": sum(r.ended for r in rollouts) / len(rollouts),
        "zero_spread_fraction": float(zero_spread.float().mean()),
        "clip_fraction": sum(clips) / len(clips), "entropy": entropy,
        "grad_norm": grad_norms[-1], "tokens": n_tokens,
    }
    if reference is not None:
        row["kl"] = sum(kls) / len(kls)
    return row


def train(p: dict, args: argparse.Namespace, stats: StageStats) -> None:
    base = trainer.load_base(p, args.base)
    model, tokenizer, runtime = base.model, base.tokenizer, base.runtime
    reference = base.load_frozen() if p["kl_coef"] > 0 else None
    context = model.config.context_length
    train_rows, test_rows = read_problems(args.train), read_problems(args.test)
    problems, skipped = encode_problems(tokenizer, train_rows, context, p["max_new_tokens"], str(args.train))
    test, test_skipped = encode_problems(tokenizer, test_rows, context, p["max_new_tokens"], str(args.test))
    test = test[: p["eval_problems"]] if p["eval_problems"] else test
    stats.docs_in, stats.docs_out = len(train_rows), len(problems)
    if skipped:
        stats.removed["too_long"] += skipped
    if not problems or not test:
        raise ValueError(f"{args.train if not problems else args.test}: no problem fits the context of "
                         f"{context} tokens with max_new_tokens={p['max_new_tokens']}")

    start_time = time.perf_counter()
    start_eval = heldout_metrics(model, tokenizer, test, p, runtime)
    print(f"start: {json.dumps(public(start_eval))}", flush=True)
    optimizer = trainer.make_optimizer(model, p, runtime)

    def step_fn(step: int, index: torch.Tensor) -> dict:
        batch_problems = [problems[i] for i in index.tolist()]
        return rl_step(model, optimizer, tokenizer, batch_problems, p, p["seed"] * 100_003 + step, runtime, reference)

    order = batch_order(len(problems), p["prompts_per_step"], p["steps"], p["seed"])
    history, last_eval = trainer.train_steps(
        model, optimizer, p, order, step_fn, lambda: heldout_metrics(model, tokenizer, test, p, runtime),
        "rl", {"reward": "reward", "acc": "accuracy"},
    )
    print(f"end: {json.dumps(public(last_eval))}", flush=True)
    seconds = time.perf_counter() - start_time

    trainer.save(args, base, model, "rl", history)
    tail = history[-max(1, len(history) // 5):]
    head = history[: max(1, len(history) // 5)]
    stats.extra.update({
        "steps": p["steps"], "prompts_per_step": p["prompts_per_step"], "group_size": p["group_size"],
        "temperature": p["temperature"], "ppo_epochs": p["ppo_epochs"], "kl_coef": p["kl_coef"],
        "train_problems": len(problems), "test_problems": len(test), "test_skipped": test_skipped,
        "reward_first_fifth": sum(r["reward"] for r in head) / len(head),
        "reward_last_fifth": sum(r["reward"] for r in tail) / len(tail),
        "zero_spread_fraction": sum(r["zero_spread_fraction"] for r in history) / len(history),
        **public(last_eval), **{f"{k}_start": v for k, v in public(start_eval).items()},
        "heldout_examples": last_eval["_examples"], "heldout_examples_start": start_eval["_examples"],
        **trainer.runtime_extra(runtime, seconds),
    })


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    trainer.add_arguments(parser, "model directory to start from (results/dpo)",
                          {"--train": "rl_train.jsonl ({prompt, answer} problems)",
                           "--test": "rl_test.jsonl (held-out pass@1 / pass@k)"})


def run(args: argparse.Namespace, stage: str) -> int:
    return trainer.run(args, "rl", train)
