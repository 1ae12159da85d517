"""The generation engine (the KV cache changes speed, never tokens; batching, stops, sampling)
and the evaluation that uses it, on a model trained on a tiny world of facts."""
from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest
import torch

from llmpipe.eval.evaluate import probe_metrics, split_metrics
from llmpipe.eval.sets import arithmetic_problems
from llmpipe.model.directory import load_model
from llmpipe.model.generate import Sampling, generate, sample_next
from llmpipe.model.gpt import GPT
from llmpipe.tasks.arithmetic import stated_facts
from llmpipe.train.data import PackedData
from llmpipe.train.loss import mean_loss
from llmpipe.train.runtime import start
from tests.conftest import HELD, make_tiny_model, pretrain_settings, run_pretrain

PROMPTS = [[1, 5, 7, 9, 3], [1, 2], [1, 8, 8, 8, 8, 8, 8, 8, 8, 4, 4]]


def model(**overrides) -> GPT:
    return make_tiny_model(**{"vocab_size": 211, "n_layer": 2, "n_head": 4, "n_embd": 64, **overrides})


def test_cached_and_uncached_greedy_decoding_give_identical_tokens():
    m = model()
    greedy = Sampling(max_new_tokens=40, temperature=0)
    cached = generate(m, PROMPTS, greedy, use_cache=True)
    uncached = generate(m, PROMPTS, greedy, use_cache=False)
    assert cached == uncached
    assert [len(c) for c in cached] == [40, 40, 40]
    assert len({tuple(c) for c in cached}) == 3  # the prompts really steer the output


def test_a_batch_equals_each_prompt_alone():
    m = model(n_kv_head=4)
    greedy = Sampling(max_new_tokens=20, temperature=0)
    assert generate(m, PROMPTS, greedy) == [generate(m, [p], greedy)[0] for p in PROMPTS]


def test_seeded_sampling_is_reproducible_and_cache_independent():
    m = model()
    s = Sampling(max_new_tokens=30, temperature=1.2, top_k=40, top_p=0.9, seed=5)
    first = generate(m, PROMPTS, s)
    assert first == generate(m, PROMPTS, s) == generate(m, PROMPTS, s, use_cache=False)
    assert first != generate(m, PROMPTS, Sampling(30, 1.2, 40, 0.9, seed=6))


def test_stop_token_ends_only_its_row():
    m = model()
    greedy = Sampling(max_new_tokens=12, temperature=0)
    full = generate(m, PROMPTS, greedy)
    stop = full[0][3]
    stopped = generate(m, PROMPTS, Sampling(12, 0, stop_ids=(stop,)))
    assert stopped[0] == full[0][: full[0].index(stop)]
    for row, out in zip(full[1:], stopped[1:]):
        assert out == (row[: row.index(stop)] if stop in row else row)


def test_generation_stops_at_the_context_length():
    m = model(context_length=16)
    out = generate(m, [[1] * 10, [1] * 3], Sampling(max_new_tokens=50, temperature=0))
    assert [len(o) for o in out] == [6, 6]  # the longest prompt + new tokens fill the context


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, Sampling(temperature=1.0, top_k=2), g).tolist()) == {0, 1}
    # p(0) = 0.64, p(0)+p(1) = 0.88: top_p 0.8 keeps exactly tokens 0 and 1
    assert set(sample_next(logits, Sampling(temperature=1.0, top_p=0.8), g).tolist()) == {0, 1}
    assert set(sample_next(logits, Sampling(temperature=1.0, top_p=0.5), g).tolist()) == {0}
    assert sample_next(logits, Sampling(temperature=0), None).eq(0).all()


def batch_sizes(m: GPT, prompts, sampling, **engine) -> tuple[list[list[int]], list[int]]:
    """The generated tokens and the batch size of every forward pass that made them."""
    sizes: list[int] = []
    hook = m.embed_tokens.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].size(0)))
    try:
        return generate(m, prompts, sampling, **engine), sizes
    finally:
        hook.remove()


def test_sampling_draws_each_token_at_its_probability_and_never_an_impossible_one():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])  # impossible first, inside and last
    logits = probs.log().expand(40_000, -1)
    tokens = sample_next(logits, Sampling(temperature=1.0), torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=6).float() / len(tokens)
    assert freq[[0, 2, 5]].sum() == 0
    assert torch.allclose(freq, probs, atol=0.01), freq


def test_repeated_prompts_are_prefilled_once_and_give_the_same_tokens():
    m = model(n_kv_head=2)
    group = [p for p in PROMPTS for _ in range(4)]  # RL's layout: each prompt's samples together
    greedy = Sampling(max_new_tokens=10, temperature=0)
    shared, sizes = batch_sizes(m, group, greedy)
    plain, plain_sizes = batch_sizes(m, group, greedy, share_prompts=False, compact=False)
    assert shared == plain == [generate(m, [p], greedy)[0] for p in group]
    assert sizes[0] == 3 and set(sizes[1:]) == {12}  # the prefill ran on the 3 distinct prompts
    assert plain_sizes[0] == 12
    s = Sampling(max_new_tokens=10, temperature=1.0, seed=3)
    sampled = generate(m, group, s)
    assert sampled == generate(m, group, s, share_prompts=False)  # the first step's logits are equal
    assert len({tuple(x) for x in sampled}) > 3  # and the samples of one prompt still differ


def test_finished_rows_leave_the_batch_with_unchanged_greedy_tokens():
    m = model()
    greedy = Sampling(max_new_tokens=16, temperature=0)
    prompts = [[1, t] for t in range(3, 23)]
    full = generate(m, prompts, greedy, compact=False)
    # a token of every other row's completion, at varying steps: those rows end early (or sooner)
    stops = tuple({full[i][2 + i % 9] for i in range(0, 20, 2)})
    stopping = Sampling(16, 0, stop_ids=stops)
    compacted, sizes = batch_sizes(m, prompts, stopping)
    kept, kept_sizes = batch_sizes(m, prompts, stopping, compact=False)
    assert compacted == kept == generate(m, prompts, stopping, use_cache=False)
    assert sum(len(c) < 16 for c in compacted) >= 5  # enough rows stopped for a compaction
    assert sizes[-1] < 20 and set(kept_sizes) == {20}
    assert sum(sizes) < sum(kept_sizes)
    # seeded sampling with compaction: reproducible, and the cache still changes nothing
    s = Sampling(16, 1.0, stop_ids=stops, seed=1)
    assert generate(m, prompts, s) == generate(m, prompts, s) == generate(m, prompts, s, use_cache=False)


# --- evaluation on a model that really learned a toy world (real tokenizer, real training) ---

COUNTRIES = ["Avalia", "Borduna", "Cestria", "Dumarck", "Elvania", "Fenwick", "Galdor", "Hestia"]
CAPITALS = ["Ostra", "Pellam", "Quorin", "Rastov", "Selmar", "Tirrel", "Umbrin", "Vostok"]


def test_evaluation_scores_a_trained_model_above_chance(tmp_path):
    from llmpipe.tokenizer import Tokenizer  # issue 3's compiled tokenizer

    docs = [f"The capital of {c} is {k}. {c} is a country." for c, k in zip(COUNTRIES, CAPITALS)]
    tokenizer = Tokenizer.train(docs * 4, 360)
    tokenizer.save(tmp_path / "tokenizer.json")
    ctx = 32
    stream = [t for d in docs for t in [tokenizer.bos_id, *tokenizer.encode(d)]]
    for split, n_seq in (("train", 64), ("val", 8)):
        rng = np.random.default_rng(len(split))
        rows = []
        for _ in range(n_seq):
            start_at = int(rng.integers(0, len(stream) - ctx - 1))
            rows.append(stream[start_at : start_at + ctx + 1])
        tokens = np.asarray(rows, dtype="<u2")
        segments = np.cumsum(tokens == tokenizer.bos_id, axis=1).astype("<u2") + 1  # pieces numbered 1, 2, ...
        (tmp_path / split).mkdir()
        tokens.tofile(tmp_path / split / "tokens.bin")
        segments.tofile(tmp_path / split / "segments.bin")
        (tmp_path / split / "header.json").write_text(json.dumps({
            "format": "llmpipe-packed/1", "dtype": "uint16", "n_seq": n_seq, "seq_len": ctx + 1,
            "context_length": ctx, "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id, "method": "concat",
        }))
    out = tmp_path / "model"
    cfg = pretrain_settings(max_steps=120, eval_every=120, lr=1e-2)
    run_pretrain(tmp_path, out, cfg)
    model, runtime = load_model(out), start("cpu")

    val = PackedData(tmp_path / "val")
    metrics = split_metrics(model, val, tokenizer, runtime, 8, True)
    assert metrics["loss"] == pytest.approx(mean_loss(model, val, runtime, 8, None, True))
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]))
    torch.manual_seed(0)
    untrained = split_metrics(GPT(model.config).eval(), val, tokenizer, runtime, 8, True)
    # training must pay off: well under the same architecture's figure at initialisation
    assert 0 < metrics["bits_per_byte"] < 0.5 * untrained["bits_per_byte"], (metrics, untrained)

    Probe = namedtuple("Probe", "prompt answer kind")
    probes = [Probe(f"The capital of {c} is", k, "capital") for c, k in zip(COUNTRIES, CAPITALS)]
    facts = probe_metrics(model, tokenizer, probes, runtime, 16)
    assert facts["n"] == 8 and facts["choice_chance"] == pytest.approx(1 / 8)
    assert facts["choice_accuracy"] >= 0.75, facts["examples"]
    assert facts["greedy_accuracy"] >= 0.5, facts["examples"]

    for heldout in (False, True):
        items = arithmetic_problems(20, shots=2, max_operand=9, seed=0, held=HELD, heldout=heldout)
        assert all(it["prompt"].count("\n") == 2 and it["prompt"].startswith("What is ") for it in items)
        for item in items:  # the stated answers are right; shots are training facts, the question is on its side
            *shots, question = item["prompt"].splitlines()
            a, op, b = question.removeprefix("What is ").rstrip("?").split()
            assert int(item["answer"]) == (int(a) + int(b) if op == "plus" else int(a) - int(b)) >= 0
            assert item["held_out"] is heldout and HELD.arithmetic(item["kind"], int(a), int(b)) is heldout
            assert not [f for shot in shots for f in stated_facts(shot) if HELD.arithmetic(*f)]
