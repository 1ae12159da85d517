"""GRPO: advantages and the clipped loss on hand-built groups, pass@k, and real RL steps end to end."""
from __future__ import annotations

import json

import pytest
import torch

from llmpipe.cli import main
from llmpipe.io import read_json
from llmpipe.model.directory import load_model
from llmpipe.posttrain.rl import group_advantages, grpo_loss, pass_at_k
from llmpipe.tasks.formats import DataFormatError
from tests.conftest import write_jsonl_lines


def test_equal_rewards_give_zero_advantage_and_count_as_zero_spread():
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.1, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adv, zero = group_advantages(rewards, std_normalize=False)
    assert zero.tolist() == [True, False, True]
    assert adv[0].tolist() == [0.0] * 4 and adv[2].tolist() == [0.0] * 4
    assert adv[1].tolist() == pytest.approx([0.8, -0.3, -0.2, -0.3])  # reward - group mean (0.3)
    scaled, _ = group_advantages(rewards, std_normalize=True)
    assert scaled[1].tolist() == pytest.approx((adv[1] / (rewards[1].std() + 1e-4)).tolist())
    assert scaled[0].tolist() == [0.0] * 4  # no division by a zero std


def test_clipped_surrogate_on_known_ratios():
    # one completion token each: ratio 1.5 with A=+1 (clipped to 1.2), ratio 0.5 with A=+1
    # (not clipped: min takes 0.5), ratio 0.5 with A=-1 (clipped to 0.8: min takes -0.8)
    old = torch.zeros(3, 2)
    logp = torch.log(torch.tensor([[1.5, 9.0], [0.5, 9.0], [0.5, 9.0]])).requires_grad_()
    mask = torch.tensor([[1, 0], [1, 0], [1, 0]], dtype=torch.bool)  # the second column is padding
    loss, stats = grpo_loss(logp, old, torch.tensor([1.0, 1.0, -1.0]), mask, eps_low=0.2, eps_high=0.2)
    assert float(loss.detach()) == pytest.approx((-1.2 - 0.5 + 0.8) / 3)  # token-level mean over 3 real tokens
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    loss.backward()
    # clipped tokens pass no gradient; the unclipped one pushes its log-prob up (A > 0)
    assert logp.grad[0, 0] == 0 and logp.grad[2, 0] == 0 and logp.grad[1, 0] < 0
    assert (logp.grad[:, 1] == 0).all()


def test_ratio_one_gives_the_plain_policy_gradient_and_kl_is_zero_at_the_reference():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    loss, stats = grpo_loss(logp, logp.detach(), torch.tensor([0.5, -0.5]), mask, 0.2, 0.28,
                            ref_logp=logp.detach(), kl_coef=0.1)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0) and stats["kl"] == 0.0 and stats["clip_fraction"] == 0.0
    assert logp.grad.flatten().tolist() == pytest.approx([-0.125, -0.125, 0.125, 0.125])  # -A / 4 tokens


def test_pass_at_k():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - (7 * 6) / (10 * 9))


PROBLEMS = [
    {"prompt": "Ann has 2 pens and gets 3 more. How many pens does Ann have now?", "answer": "5"},
    {"prompt": "Bo has 9 cups and gives 4 of them away. How many cups does Bo have left?", "answer": "5"},
    {"prompt": "Cy has 2 bags with 3 figs in each bag. How many figs does Cy have in all?", "answer": "6"},
]


def run_rl(tmp_path, base, name: str, **overrides) -> tuple[list[dict], dict]:
    train = write_jsonl_lines(tmp_path / "rl_train.jsonl", PROBLEMS)
    test = write_jsonl_lines(tmp_path / "rl_test.jsonl", PROBLEMS[:2])
    params = {"steps": 2, "prompts_per_step": 2, "group_size": 3, "max_new_tokens": 6, "eval_pass_k": 2,
              "eval_every": 1, "lr": 1.0e-3, "kl_coef": 0.05, "device": "cpu", **overrides}
    out = tmp_path / name
    main(["rl", "--params", json.dumps(params), "--base", str(base), "--train", str(train), "--test", str(test),
          "--output", str(out), "--stats", str(tmp_path / f"{name}.json")])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, read_json(tmp_path / f"{name}.json")["extra"]


def test_rl_steps_run_end_to_end_deterministically_and_write_a_model_dir(tmp_path, tiny_model_dir):
    base = tiny_model_dir()
    rows, extra = run_rl(tmp_path, base, "rl")
    model = load_model(tmp_path / "rl")
    assert read_json(tmp_path / "rl" / "config.json")["stage"] == "rl"
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "completion_length", "clip_fraction", "zero_spread_fraction", "entropy", "kl",
                "heldout_pass_at_1", "heldout_pass_at_2"):
        assert key in rows[-1]
    assert "heldout_pass_at_1_start" in extra and "heldout_pass_at_1" in extra
    again, _ = run_rl(tmp_path, base, "rl_again")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    other = load_model(tmp_path / "rl_again")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_micro_batches_leave_the_rl_update_as_one_batch_gives_it(tmp_path, tiny_model_dir):
    """Each sample alone (micro_batch_tokens 1) or all in one padded batch: the same samples, the
    same token-mean loss and, up to float rounding, the same weights after the steps."""
    base = tiny_model_dir()
    rows_a, _ = run_rl(tmp_path, base, "one_batch", micro_batch_tokens=10**6)
    rows_b, _ = run_rl(tmp_path, base, "sample_by_sample", micro_batch_tokens=1)
    for a, b in zip(rows_a, rows_b):
        assert (a["reward"], a["tokens"], a["completion_length"]) == (b["reward"], b["tokens"], b["completion_length"])
        for key in ("loss", "kl", "entropy", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    a, b = load_model(tmp_path / "one_batch").state_dict(), load_model(tmp_path / "sample_by_sample").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_malformed_problem_file_names_file_and_line(tmp_path, tiny_model_dir):
    base = tiny_model_dir()
    write_jsonl_lines(tmp_path / "rl_train.jsonl", [PROBLEMS[0], {"prompt": "How many?", "answer": "ten"}])
    with pytest.raises(DataFormatError, match=r"rl_train.jsonl:2: 'answer' 'ten' is not a number"):
        main(["rl", "--params", "{}", "--base", str(base), "--train", str(tmp_path / "rl_train.jsonl"),
              "--test", str(tmp_path / "rl_train.jsonl"), "--output", str(tmp_path / "rl"),
              "--stats", str(tmp_path / "s.json")])


def test_rl_raises_the_reward_on_a_tiny_seeded_problem_set(tmp_path, tiny_model_dir):
    """RL must learn, not just run. A tiny model is first taught (by the real SFT stage) to
    answer "2+3" and the like with "#### N", N one off the truth as often as right, so some of
    its samples earn the reward; RL on the same problems then lifts the mean reward of its last
    steps far above that of its first (seeded, so this is one fixed trajectory)."""
    problems = [{"prompt": f"{a}+{b}", "answer": str(a + b)} for a, b in ((2, 3), (4, 1), (3, 3))]
    conversations = [
        {"messages": [{"role": "user", "content": p["prompt"]},
                      {"role": "assistant", "content": f"#### {int(p['answer']) + d}"}]}
        for p in problems for d in (-1, 0, 1) for _ in range(2)
    ]
    sft_train = write_jsonl_lines(tmp_path / "sft_train.jsonl", conversations)
    sft_heldout = write_jsonl_lines(tmp_path / "sft_heldout.jsonl", conversations[:3])
    world = json.dumps({"heldout_seed": 1, "arithmetic_heldout_share": 0.2, "fact_heldout_share": 0.25})
    sft = {"epochs": 30, "batch_size": 6, "lr": 1.0e-2, "warmup_steps": 2, "eval_every": 1000,
           "eval_fact_questions": 0, "device": "cpu"}
    main(["sft", "--params", json.dumps(sft), "--world", world, "--base", str(tiny_model_dir(context_length=64)),
          "--train", str(sft_train), "--heldout", str(sft_heldout), "--output", str(tmp_path / "sft"),
          "--stats", str(tmp_path / "sft.json")])
    train = write_jsonl_lines(tmp_path / "rl_train.jsonl", problems)
    params = {"steps": 24, "prompts_per_step": 3, "group_size": 8, "max_new_tokens": 8, "eval_pass_k": 2,
              "eval_every": 24, "lr": 3.0e-3, "kl_coef": 0.0, "format_weight": 0.0, "temperature": 1.0,
              "device": "cpu"}
    main(["rl", "--params", json.dumps(params), "--base", str(tmp_path / "sft"), "--train", str(train),
          "--test", str(train), "--output", str(tmp_path / "rl"), "--stats", str(tmp_path / "rl.json")])
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert 0 < first < 0.3, rewards  # some right answers to learn from, most wrong
    assert last > first + 0.2, rewards
