"""The chat template: conversations <-> token ids, with the loss mask for training.

A conversation renders as ``<|bos|>`` then, per message, the role's special token, the
content (ordinary text: a ``<|user|>`` typed by a user stays bytes) and ``<|end|>``:

    <|bos|><|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>

One function renders for training (``mask[i] = 1`` where token ``i`` is a target the loss
counts: assistant content and its ``<|end|>``, nothing else) and for generation
(``add_generation_prompt`` ends the ids with ``<|assistant|>`` for the model to continue).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
END = "<|end|>"


class ChatFormatError(ValueError):
    """A conversation that cannot be rendered; the message says which message and why."""


@dataclass(frozen=True)
class Rendered:
    ids: list[int]
    mask: list[int]  # 1 = a target the training loss counts (assistant content + <|end|>)

    def training_pair(self) -> tuple[list[int], list[int]]:
        """(inputs, targets) for next-token loss: targets are -1 where the mask is 0."""
        targets = [t if m else -1 for t, m in zip(self.ids[1:], self.mask[1:])]
        return self.ids[:-1], targets


def role_token(role: str) -> str:
    return f"<|{role}|>"


def check_messages(messages: Sequence[dict]) -> None:
    """Raise ChatFormatError unless ``messages`` is a list of {role, content} dicts with known
    roles, a system message only first, and text content."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatFormatError("messages must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise ChatFormatError(f"message {i}: expected an object with 'role' and 'content', got {message!r:.80}")
        if message["role"] not in ROLES:
            raise ChatFormatError(f"message {i}: role {message['role']!r} is not one of {ROLES}")
        if message["role"] == "system" and i != 0:
            raise ChatFormatError(f"message {i}: a system message may only come first")
        if not isinstance(message.get("content"), str):
            raise ChatFormatError(f"message {i}: content must be a string")


def render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> Rendered:
    """Token ids and loss mask of a conversation (see the module docstring for the layout)."""
    check_messages(messages)
    special = tokenizer.special_tokens
    missing = [t for t in (*map(role_token, ROLES), END) if t not in special]
    if missing:
        raise ChatFormatError(f"the tokenizer lacks the chat special tokens {missing}")
    ids, mask = [tokenizer.bos_id], [0]
    for message in messages:
        counted = int(message["role"] == "assistant")
        content = tokenizer.encode_ordinary(message["content"])
        ids += [special[role_token(message["role"])], *content, special[END]]
        mask += [0, *[counted] * len(content), counted]
    if add_generation_prompt:
        ids.append(special[role_token("assistant")])
        mask.append(0)
    return Rendered(ids, mask)


def prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """The ids a model continues to answer ``messages``: the conversation + ``<|assistant|>``."""
    return render(tokenizer, messages, add_generation_prompt=True).ids


def completion_ids(tokenizer, text: str) -> list[int]:
    """An assistant reply as the model should produce it after ``prompt_ids``: text + ``<|end|>``."""
    return [*tokenizer.encode_ordinary(text), tokenizer.special_tokens[END]]


def as_messages(prompt: str | Sequence[dict]) -> list[dict]:
    """A prompt given as plain text (one user turn) or as a message list."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)
