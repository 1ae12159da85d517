"""SFT on tiny models: the assistant-only mask, no cross-example leakage, real steps that learn."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from llmpipe.model.directory import load_model, save_model_dir
from llmpipe.posttrain import sft
from llmpipe.stats import StageStats
from llmpipe.tokenizer import Tokenizer
from llmpipe.train import runtime as rt
from llmpipe.train.schedule import batch_order
from tests.conftest import WORLD

CONTEXT = 96


@pytest.fixture(scope="module")
def tok(byte_tokenizer) -> Tokenizer:
    return byte_tokenizer


@pytest.fixture(scope="module")
def model_of(tiny_model):
    """The tiny 2-layer GPT these tests train (seeded, in train mode)."""
    return lambda: tiny_model(n_layer=2, context_length=CONTEXT).train()


CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Capital of Kenya?"}, {"role": "assistant", "content": "Nairobi."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"},
                  {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 2+4?"},
                  {"role": "assistant", "content": "6"}]},
    {"messages": [{"role": "user", "content": "Say <|user|> please"}, {"role": "assistant", "content": "<|user|>"}]},
]


def test_targets_are_exactly_assistant_content_and_end(tok):
    examples, skipped = sft.to_examples(tok, CONVERSATIONS, CONTEXT)
    assert skipped == {"too_long": 0}
    end = tok.special_tokens["<|end|>"]
    expected = ["Nairobi." + "<|end|>", "5<|end|>6<|end|>", "<|user|><|end|>"]
    for ex, text in zip(examples, expected):
        counted = [t for t in ex.targets if t >= 0]
        assert tok.decode(counted) == text
        assert counted.count(end) == text.count("<|end|>")
    # the user's literal "<|user|>" is ordinary bytes, never the special token, in the targets
    assert tok.special_tokens["<|user|>"] not in [t for t in examples[2].targets if t >= 0]


def test_too_long_conversations_are_skipped_and_counted(tok):
    long = {"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "y"}]}
    examples, skipped = sft.to_examples(tok, CONVERSATIONS + [long], CONTEXT)
    assert len(examples) == 3 and skipped["too_long"] == 1


def test_an_examples_loss_is_the_same_alone_and_packed(tok, model_of):
    model = model_of().eval()
    runtime = rt.Runtime(torch.device("cpu"), torch.float32)
    examples, _ = sft.to_examples(tok, CONVERSATIONS, CONTEXT)
    packed = sft.pack(examples, CONTEXT, tok.pad_id)
    assert len(packed) == 1 and packed.segments.max() == 3
    with torch.no_grad():
        together = float(sft.loss_sum(model, packed, runtime))
        alone = sum(float(sft.loss_sum(model, sft.pack([ex], CONTEXT, tok.pad_id), runtime)) for ex in examples)
        reordered = float(sft.loss_sum(model, sft.pack(examples[::-1], CONTEXT, tok.pad_id), runtime))
    assert together == pytest.approx(alone, rel=1e-5)
    assert together == pytest.approx(reordered, rel=1e-5)


def test_packing_keeps_examples_whole_and_fills_rows(tok):
    examples, _ = sft.to_examples(tok, CONVERSATIONS * 10, CONTEXT)
    rows = sft.pack(examples, CONTEXT, tok.pad_id)
    assert int((rows.targets >= 0).sum()) == sum(sum(t >= 0 for t in ex.targets) for ex in examples)
    assert int((rows.segments > 0).sum()) == sum(len(ex.inputs) for ex in examples)
    assert len(rows) == -(-sum(len(ex.inputs) for ex in examples) // CONTEXT)  # no wasted row here


def test_sft_stage_lowers_the_masked_loss_and_writes_a_model_dir(tok, model_of, tmp_path):
    base = tmp_path / "base"
    tok.save(tmp_path / "tokenizer.json")
    save_model_dir(base, model_of(), tmp_path / "tokenizer.json", meta={"stage": "pretrain"})
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS * 8))
    params = {"epochs": 6, "batch_size": 2, "lr": 3.0e-3, "warmup_steps": 2, "eval_every": 1000,
              "eval_fact_questions": 4, "eval_max_new_tokens": 8, "device": "cpu"}
    from llmpipe.config import validate_config

    config = {"sft": params}
    validate_config(config)
    args = argparse.Namespace(base=str(base), train=str(train), heldout=str(train), output=str(tmp_path / "sft"),
                              metrics=None, stats=str(tmp_path / "sft" / "stats.json"), world=WORLD, config=None)
    stats = StageStats("sft")
    sft.train(config["sft"], args, stats)
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").open()]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    assert {"heldout_loss", "heldout_answer_accuracy", "heldout_ends_properly"} <= set(rows[-1])
    assert stats.extra["heldout_loss"] < stats.extra["base_heldout_loss"]
    assert stats.extra["base_heldout_answer_accuracy"] is not None
    model = load_model(tmp_path / "sft")
    assert model.config.context_length == CONTEXT
    config_json = json.loads((tmp_path / "sft" / "config.json").read_text())
    assert config_json["stage"] == "sft" and config_json["base_model"] == str(base)


def test_sft_is_deterministic_on_cpu(tok, model_of, tmp_path):
    runtime = rt.Runtime(torch.device("cpu"), torch.float32)
    examples, _ = sft.to_examples(tok, CONVERSATIONS * 4, CONTEXT)
    rows = sft.pack(examples, CONTEXT, tok.pad_id)
    losses = []
    for _ in range(2):
        model = model_of()
        opt = model.optimizer(1e-3, 0.0, (0.9, 0.95))
        for index in batch_order(len(rows), 1, 3, seed=5):
            batch = rows.select(index)
            loss = sft.loss_sum(model, batch, runtime) / (batch.targets >= 0).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1]
