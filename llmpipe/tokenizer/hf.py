"""Export a trained Tokenizer as Hugging Face files: tokenizer.json for `tokenizers`, plus
tokenizer_config.json and special_tokens_map.json for `transformers.PreTrainedTokenizerFast`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from llmpipe.io import write_json
from llmpipe.tokenizer.bpe import Tokenizer, TokenizerError


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


def tokenizer_json(tok: Tokenizer) -> dict:
    if tok.merges is None:
        raise TokenizerError("Hugging Face export needs merges; this vocabulary was loaded from ranks")
    chars = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(chars[b] for b in token)

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
            "merges": [[text(tok.tokens[a]), text(tok.tokens[b])] for a, b in tok.merges],
        },
    }


def export_hf(tok: Tokenizer, directory: str | os.PathLike) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return the dir."""
    directory = Path(directory)
    write_json(directory / "tokenizer.json", tokenizer_json(tok))
    names = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
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
        },
    )
    return directory
