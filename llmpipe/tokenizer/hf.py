"""Export a trained Tokenizer as Hugging Face files: tokenizer.json for `tokenizers`, plus
tokenizer_config.json and special_tokens_map.json for `transformers.PreTrainedTokenizerFast`.

tokenizer_config.json carries a Jinja ``chat_template`` that renders ``llmpipe.tokenizer.chat``'s
format exactly (``apply_chat_template(messages, add_generation_prompt=True)`` gives
``chat.prompt_ids``). The special tokens are added tokens with ``special: True``, which
`tokenizers` splits out of any text before the BPE runs: unlike ``Tokenizer.encode``, the HF
tokenizer reads a "<|user|>" typed inside content as the special token unless told not to
(``llmpipe.model.export``'s docstring has what transformers offers for that, and why the
export leaves ``split_special_tokens`` off).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from llmpipe.io import write_json
from llmpipe.tokenizer.bpe import Tokenizer, TokenizerError
from llmpipe.tokenizer.chat import END, ROLES, role_token

BOS = "<|bos|>"


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte (what ByteLevel uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def hf_byte_order() -> list[int]:
    """Byte b's id in a vocabulary Hugging Face's BpeTrainer builds (its alphabet sorted by
    stand-in character); pass as `byte_order` to train with HF's tie-breaking."""
    chars = byte_to_unicode()
    ranked = sorted(range(256), key=lambda b: chars[b])
    order = [0] * 256
    for rank, b in enumerate(ranked):
        order[b] = rank
    return order


def _hf_pattern(pattern: str) -> str:
    # Oniguruma (HF's regex engine) reads `{1,3}+` as a repeated repeat, not a possessive
    # quantifier; the possessive form changes nothing at the end of an alternative anyway.
    return pattern.replace("{1,3}+", "{1,3}")


def bpe_merges(tok: Tokenizer) -> list[tuple[int, int]]:
    """The merges as (left id, right id) in priority order: the learned ones, or for a vocabulary
    given as ranks (tiktoken files, a byte vocabulary) the pair each multi-byte token is built
    from by BPE over the tokens ranked below it (how tiktoken vocabularies reach Hugging Face)."""
    if tok.merges is not None:
        return list(tok.merges)
    rank = {t: i for i, t in enumerate(tok.tokens)}
    merges = []
    for i, token in enumerate(tok.tokens):
        if len(token) < 2:
            continue
        parts = [token[j : j + 1] for j in range(len(token))]
        while len(parts) > 2:
            best, j = min((rank.get(parts[j] + parts[j + 1], i), j) for j in range(len(parts) - 1))
            if best >= i:
                break
            parts[j : j + 2] = [parts[j] + parts[j + 1]]
        if len(parts) != 2 or parts[0] not in rank or parts[1] not in rank:
            raise TokenizerError(f"token {i} ({token!r}) is not a merge of two lower-ranked tokens")
        merges.append((rank[parts[0]], rank[parts[1]]))
    return merges


def hf_token_text(token: bytes) -> str:
    """A token's bytes as ByteLevel's printable characters (how HF and GGUF vocabularies spell it)."""
    chars = byte_to_unicode()
    return "".join(chars[b] for b in token)


def chat_template(tok: Tokenizer) -> str | None:
    """Jinja that renders ``llmpipe.tokenizer.chat.render`` exactly (None when the tokenizer lacks
    the chat's special tokens): <|bos|>, per message the role token, the content and <|end|>, and
    <|assistant|> for ``add_generation_prompt``. It raises on what ``chat.check_messages`` rejects.
    The role tokens are literals (not built from the role name), so transformers'
    ``sanitize_control_tokens`` and llama.cpp's template checks see them."""
    if any(t not in tok.special_tokens for t in (BOS, END, *map(role_token, ROLES))):
        return None
    roles = "".join(
        f"{{%- {'if' if i == 0 else 'elif'} message['role'] == '{role}' -%}}{role_token(role)}"
        for i, role in enumerate(ROLES)
    )
    return (
        f"{{{{- '{BOS}' -}}}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' and not loop.first -%}"
        "{{- raise_exception('a system message may only come first') -}}{%- endif -%}"
        "{%- if message['content'] is not string -%}"
        "{{- raise_exception('message content must be a string') -}}{%- endif -%}"
        f"{roles}"
        f"{{%- else -%}}{{{{- raise_exception('role must be one of {', '.join(ROLES)}') -}}}}{{%- endif -%}}"
        f"{{{{- message['content'] -}}}}{END}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{role_token('assistant')}{{%- endif -%}}"
    )


def tokenizer_json(tok: Tokenizer) -> dict:
    text = hf_token_text
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for s, i in tok.special_tokens.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": _hf_pattern(tok.pattern)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,  # a pre-token that is a whole token maps to it, as in tiktoken
            "vocab": {text(t): i for i, t in enumerate(tok.tokens)},
            "merges": [[text(tok.tokens[a]), text(tok.tokens[b])] for a, b in bpe_merges(tok)],
        },
    }


def export_hf(tok: Tokenizer, directory: str | os.PathLike) -> Path:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and
    special_tokens_map.json; return the dir."""
    directory = Path(directory)
    write_json(directory / "tokenizer.json", tokenizer_json(tok))
    names = {"bos_token": BOS, "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
    present = {k: v for k, v in names.items() if v in tok.special_tokens}
    others = [s for s in tok.special_tokens if s not in present.values()]
    write_json(directory / "special_tokens_map.json", {**present, "additional_special_tokens": others})
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 1 << 30,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
            **present,
            "additional_special_tokens": others,
            **({"chat_template": template} if (template := chat_template(tok)) else {}),
        },
    )
    return directory
