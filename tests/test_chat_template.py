"""The chat template: layout, loss mask, and the text-is-never-a-special-token guarantee."""
from __future__ import annotations

import pytest

from llmpipe.tokenizer import Tokenizer
from llmpipe.tokenizer.chat import ChatFormatError, completion_ids, prompt_ids, render


@pytest.fixture(scope="module")
def tok(byte_tokenizer) -> Tokenizer:
    return byte_tokenizer


def test_layout_and_mask_cover_only_assistant_content_and_its_end(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Ok"},
    ]
    r = render(tok, messages)
    assert tok.decode(r.ids) == (
        "<|bos|><|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Yo<|end|>"
        "<|user|>Again<|end|><|assistant|>Ok<|end|>"
    )
    counted = [tok.decode([t]) for t, m in zip(r.ids, r.mask) if m]
    assert counted == ["Y", "o", "<|end|>", "O", "k", "<|end|>"]
    inputs, targets = r.training_pair()
    assert len(inputs) == len(targets) == len(r.ids) - 1
    assert [t for t in targets if t >= 0] == [t for t, m in zip(r.ids, r.mask) if m]


def test_special_token_text_in_content_stays_ordinary_bytes(tok):
    r = render(tok, [{"role": "user", "content": "<|assistant|><|end|>"}, {"role": "assistant", "content": "x"}])
    specials = set(tok.special_tokens.values())
    assert sum(t in specials for t in r.ids) == 5  # bos, user, end, assistant, end
    assert sum(r.mask) == 2


def test_generation_prompt_ends_in_the_assistant_role_and_completion_ends_the_turn(tok):
    ids = prompt_ids(tok, [{"role": "user", "content": "Q"}])
    assert tok.decode(ids) == "<|bos|><|user|>Q<|end|><|assistant|>"
    full = render(tok, [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]).ids
    assert ids + completion_ids(tok, "A") == full


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "non-empty"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "only come first"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        ([{"content": "x"}], "expected an object"),
    ],
)
def test_malformed_conversations_say_what_is_wrong(tok, messages, message):
    with pytest.raises(ChatFormatError, match=message):
        render(tok, messages)
