"""DPO: the loss on hand-built log-probs, one real step's direction, and the stage end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch

from llmpipe.cli import main
from llmpipe.io import read_json
from llmpipe.model.directory import load_model
from llmpipe.posttrain.dpo import PreferencePair, dpo_loss, reference_scores, reward_metrics, score
from llmpipe.tasks.formats import DataFormatError
from llmpipe.train import runtime as rt
from llmpipe.train.logprobs import (
    micro_batches,
    option_logprobs,
    pair_batch,
    sequence_logprobs,
    summed_logprobs,
    token_logprobs,
)
from tests.conftest import WORLD, write_jsonl_lines


def test_sigmoid_loss_and_rewards_on_known_log_probs():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-2.0])
    rc, rr = torch.tensor([-1.5]), torch.tensor([-1.5])
    # beta * ((pc - rc) - (pr - rr)) = 0.1 * (0.5 + 0.5) = 0.1
    assert float(dpo_loss(pc, pr, rc, rr, beta=0.1)) == pytest.approx(math.log1p(math.exp(-0.1)))
    assert float(dpo_loss(rc, rr, rc, rr, beta=0.1)) == pytest.approx(math.log(2))  # policy == reference
    m = reward_metrics(pc, pr, rc, rr, beta=0.1)
    assert m["rewards_chosen"] == pytest.approx(0.05) and m["rewards_rejected"] == pytest.approx(-0.05)
    assert m["reward_margin"] == pytest.approx(0.1) and m["reward_accuracy"] == 1.0


def test_ipo_loss_uses_length_normalised_log_ratios():
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]),
                    beta=0.5, loss_type="ipo", chosen_len=torch.tensor([2.0]), rejected_len=torch.tensor([4.0]))
    # h = 0.5 / 2 - (-0.5) / 4 = 0.375; target 1 / (2 * 0.5) = 1
    assert float(loss) == pytest.approx((0.375 - 1) ** 2)
    with pytest.raises(ValueError, match="not one of"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.1, "hinge")


def test_a_tie_counts_half_so_the_reference_scores_chance():
    same = torch.tensor([-3.0, -1.0])
    assert reward_metrics(same, same - 1, same, same - 1, beta=0.1)["reward_accuracy"] == 0.5


def test_one_step_raises_chosen_relative_to_rejected(tiny_model):
    torch.manual_seed(0)
    model = tiny_model(vocab_size=32, context_length=16, n_embd=16)
    runtime = rt.start("cpu", "float32")
    prompt, chosen, rejected = [1, 2, 3], [4, 5, 6], [7, 8, 9]
    pairs = [(prompt, chosen), (prompt, rejected)]
    ref = summed_logprobs(model, pairs, pad_id=0, max_tokens=64, runtime=runtime)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    logps = sequence_logprobs(model, pair_batch(pairs, pad_id=0))
    assert torch.allclose(logps.detach(), ref)  # padding-safe and identical with or without grad
    dpo_loss(logps[:1], logps[1:], ref[:1], ref[1:], beta=0.1).mean().backward()
    optimizer.step()
    after = summed_logprobs(model, pairs, pad_id=0, max_tokens=64, runtime=runtime)
    assert (after[0] - after[1]) > (ref[0] - ref[1])


def test_option_scores_from_a_shared_prompt_equal_the_pairs_scores(tiny_model):
    """Multiple-choice scoring runs each prompt once and its options from the cached prefix;
    every score must be the (prompt, option) pair's, whatever the batching (prompts of different
    lengths, options of one to three tokens, batches split by the row bound)."""
    torch.manual_seed(0)
    model = tiny_model(vocab_size=32, context_length=16, n_embd=16)
    runtime = rt.start("cpu", "float32")
    prompts = [[1, 2, 3, 4], [5], [6, 7]]
    options = [[[8], [9, 10], [11, 12, 13]], [[14, 15]], [[16], [17], [18, 19, 20], [21]]]
    pairs = [(p, o) for p, opts in zip(prompts, options) for o in opts]
    expected = summed_logprobs(model, pairs, pad_id=0, max_tokens=1000, runtime=runtime)
    for max_tokens in (1, 9):  # each pair alone; length-sorted groups, returned in the pairs' order
        assert torch.allclose(summed_logprobs(model, pairs, 0, max_tokens, runtime), expected, atol=1e-5)
    for max_rows in (1, 4, 100):
        got = torch.cat(option_logprobs(model, prompts, options, 0, max_rows, runtime))
        assert torch.allclose(got, expected, atol=1e-5), (max_rows, got, expected)
    assert [len(s) for s in option_logprobs(model, prompts, options, 0, 4, runtime)] == [3, 1, 4]
    with pytest.raises(ValueError, match="non-empty"):
        option_logprobs(model, [[1]], [[[]]], 0, 4, runtime)


def test_completion_logprobs_equal_those_of_the_full_logits(tiny_model):
    """``token_logprobs`` projects only completion positions; log-probs, entropies and
    gradients must be those of the full [B, T, V] logits."""
    torch.manual_seed(0)
    model = tiny_model(vocab_size=32, context_length=16, n_embd=16)
    batch = pair_batch([([1, 2, 3], [4, 5]), ([6], [7, 8, 9, 10]), ([11, 12], [13])], pad_id=0)
    logp, entropy = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
    logp.sum().backward()
    fast = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(batch.inputs)[0].float() / 0.7
    full = logits.log_softmax(-1)
    expected = full.gather(-1, batch.targets.clamp(min=0)[..., None])[..., 0] * batch.mask
    expected.sum().backward()
    assert torch.allclose(logp, expected, atol=1e-6) and (logp[~batch.mask] == 0).all()
    assert torch.allclose(entropy, -(full.exp() * full).sum(-1).detach() * batch.mask, atol=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(fast, model.parameters()))


def test_reference_scores_only_the_pairs_training_uses(tiny_model):
    torch.manual_seed(0)
    model = tiny_model(vocab_size=32, context_length=16, n_embd=16)
    runtime = rt.start("cpu", "float32")
    pairs = [PreferencePair([1, i], [4, i], [7, 8, i]) for i in range(1, 5)]
    chosen, rejected = reference_scores(model, pairs, torch.tensor([1, 3]), 0, 2, runtime)
    full_chosen, full_rejected = score(model, pairs, 0, 3, runtime)
    assert torch.isnan(chosen[[0, 2]]).all() and torch.isnan(rejected[[0, 2]]).all()
    assert torch.allclose(chosen[[1, 3]], full_chosen[[1, 3]]) and torch.allclose(
        rejected[[1, 3]], full_rejected[[1, 3]]
    )


def test_micro_batches_group_rows_by_length_within_the_token_budget():
    lengths = [5, 2, 9, 2, 4, 30, 3]
    groups = micro_batches(lengths, max_tokens=10)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row once
    assert groups == [[1, 3, 6], [4, 0], [2], [5]]  # ascending; rows x longest <= 10; 30 alone
    assert all(len(g) * max(lengths[i] for i in g) <= 10 for g in groups if len(g) > 1)
    assert micro_batches([], 10) == []
    with pytest.raises(ValueError, match="max_tokens"):
        micro_batches([1], 0)


def test_pair_batch_targets_only_the_completion():
    batch = pair_batch([([1, 2], [3]), ([4], [5, 6, 7])], pad_id=0)
    assert batch.inputs.tolist() == [[1, 2, 0], [4, 5, 6]]
    assert batch.targets.tolist() == [[-1, 3, -1], [5, 6, 7]]
    with pytest.raises(ValueError, match="pair 0: 5 tokens do not fit the context of 3"):
        pair_batch([([1, 2, 3], [4, 5])], pad_id=0, context_length=3)


PAIRS = [
    {"prompt": "Capital of France?", "chosen": "The capital of France is Paris.", "rejected": "Rome."},
    {"prompt": "Ann has 2 pens and gets 3 more. How many?", "chosen": "2 + 3 = 5.\nThe answer is 5.",
     "rejected": "2 + 3 = 6.\nThe answer is 6.", "system": "Be brief."},
    {"prompt": "What does the cat eat?", "chosen": "The cat eats fish.", "rejected": "Fish. Easy one."},
]


def test_dpo_stage_writes_a_model_dir_metrics_and_start_vs_end_stats(tmp_path, tiny_model_dir):
    base = tiny_model_dir()
    train, heldout = (
        write_jsonl_lines(tmp_path / "dpo_train.jsonl", PAIRS),
        write_jsonl_lines(tmp_path / "dpo_heldout.jsonl", PAIRS[1:]),
    )
    params = {"epochs": 2, "batch_size": 2, "lr": 1.0e-3, "eval_every": 1, "eval_fact_questions": 2,
              "eval_max_new_tokens": 4, "device": "cpu"}
    out = tmp_path / "dpo"
    main(["dpo", "--params", json.dumps(params), "--world", WORLD, "--base", str(base), "--train", str(train),
          "--heldout", str(heldout), "--output", str(out), "--stats", str(tmp_path / "stats.json")])
    model = load_model(out)
    assert model.config.n_layer == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("heldout_reward_accuracy" in r and "rewards_chosen" in r for r in rows)
    extra = read_json(tmp_path / "stats.json")["extra"]
    assert extra["heldout_reward_accuracy_start"] == 0.5 and extra["heldout_reward_margin_start"] == 0.0
    assert extra["heldout_reward_margin"] > 0  # the held-out pairs are training pairs here
    assert {"heldout_answer_accuracy", "heldout_answer_accuracy_start", "heldout_arithmetic_accuracy"} <= set(extra)
    assert read_json(out / "config.json")["stage"] == "dpo"


def test_micro_batches_leave_the_dpo_update_as_one_batch_gives_it(tmp_path, tiny_model_dir):
    """A step's pairs split into length-sorted micro-batches (here: each pair alone) accumulate the
    gradient one batch of all of them gives: the same losses and, up to float rounding, weights."""
    base = tiny_model_dir()
    train, heldout = (write_jsonl_lines(tmp_path / "train.jsonl", PAIRS),
                      write_jsonl_lines(tmp_path / "heldout.jsonl", PAIRS[1:]))
    runs = {}
    for name, micro in (("one_batch", 10**6), ("pair_by_pair", 1)):
        params = {"epochs": 2, "batch_size": 3, "lr": 1.0e-3, "eval_every": 1, "eval_fact_questions": 2,
                  "eval_max_new_tokens": 4, "device": "cpu", "micro_batch_tokens": micro}
        main(["dpo", "--params", json.dumps(params), "--world", WORLD, "--base", str(base), "--train", str(train),
              "--heldout", str(heldout), "--output", str(tmp_path / name), "--stats", str(tmp_path / f"{name}.json")])
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = (rows, load_model(tmp_path / name).state_dict())
    (rows_a, weights_a), (rows_b, weights_b) = runs["one_batch"], runs["pair_by_pair"]
    assert [r["loss"] for r in rows_a] == pytest.approx([r["loss"] for r in rows_b], rel=1e-5)
    assert [r["heldout_reward_margin"] for r in rows_a] == pytest.approx([r["heldout_reward_margin"] for r in rows_b],
                                                                        rel=1e-4, abs=1e-6)
    assert all(torch.allclose(weights_a[k], weights_b[k], atol=1e-6) for k in weights_a)


def test_malformed_preference_file_names_file_and_line(tmp_path, tiny_model_dir):
    base = tiny_model_dir()
    bad = write_jsonl_lines(tmp_path / "dpo_train.jsonl", [PAIRS[0], {"prompt": "x", "chosen": "y"}])
    with pytest.raises(DataFormatError, match=r"dpo_train.jsonl:2: missing key\(s\) \['rejected'\]"):
        main(["dpo", "--params", "{}", "--world", WORLD, "--base", str(base), "--train", str(bad),
              "--heldout", str(bad), "--output", str(tmp_path / "dpo"), "--stats", str(tmp_path / "stats.json")])
