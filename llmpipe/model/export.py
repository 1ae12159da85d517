"""``llmpipe export``: a model directory as a chat-ready Hugging Face Llama directory (Qwen3 for a
QK-norm model, see ``hf_architecture``), or a GGUF file for llama.cpp (``--format gguf --quant
f16|q8_0``, see ``llmpipe.model.gguf_export``).

Our module names already follow HF Llama's (and RoPE uses its half-split layout), so the HF
export is a ``model.`` prefix, a LlamaConfig ``config.json`` and the tokenizer files — no weight
surgery. The tokenizer files are built from the model directory's own ``tokenizer.json``
(``llmpipe.tokenizer.hf``): ``tokenizer_config.json`` carries a ``chat_template`` rendering
llmpipe's chat format, and ``generation_config.json`` ends generation at ``<|end|>`` (an
assistant turn's end) or ``<|eos|>`` (a document's), so ``generate`` stops where ``llmpipe chat``
does (which also stops at ``<|bos|>``; a model that starts a new document mid-reply is rare).

Special tokens typed inside content. llmpipe encodes message content as ordinary text: a user's
"<|user|>" is bytes. The HF tokenizer's special tokens are added tokens (``special: True``),
which `tokenizers` splits out of any input text before the BPE runs, so by default both
``tokenizer(text)`` and ``apply_chat_template(messages)`` read such text as the special id —
the behaviour of every HF chat model. What transformers (5.x) offers, and what we chose:

- ``split_special_tokens=True`` (a call argument, or a tokenizer_config.json key) encodes
  special text as ordinary text, token for token what ``Tokenizer.encode`` gives. But
  ``apply_chat_template`` tokenizes its rendered string through the same call, so the
  template's own role tokens and ``<|end|>`` are split into bytes too (with or without
  ``sanitize_control_tokens``). The export therefore leaves it off; pass it per call for
  plain text: ``tokenizer(text, split_special_tokens=True)``.
- ``apply_chat_template(..., sanitize_control_tokens=True)`` marks special text in the messages
  before rendering and encodes it as text, while the template's tokens stay single ids. The
  marked text is encoded on its own, so it always starts and ends a pre-token: where llmpipe's
  split would join it with a neighbour (``" <|user|>"``: llmpipe may have a ``" <|"`` token)
  the ids differ, the bytes never do. With special text at a pre-token boundary (start of the
  content, after a newline or a letter) the ids equal ``chat.prompt_ids``.

So: use ``sanitize_control_tokens=True`` for untrusted content. llama.cpp behaves like HF's
default (its chat path tokenizes the rendered prompt with special parsing on); its plain
``tokenize(..., special=False)`` matches llmpipe.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from safetensors.torch import save_file

from llmpipe.io import atomic_path, write_json
from llmpipe.model.gpt import GPT
from llmpipe.tokenizer import Tokenizer
from llmpipe.tokenizer.hf import chat_template, export_hf

FORMATS = ("hf", "gguf")
QUANTS = ("f16", "q8_0", "f32")


def special_ids(tokenizer: Tokenizer) -> dict[str, int | None]:
    return {name: tokenizer.special_tokens.get(f"<|{name}|>") for name in ("bos", "eos", "pad", "end")}


def hf_architecture(model: GPT) -> tuple[str, str]:
    """(architecture, model_type): Llama, or Qwen3 for a QK-norm model.

    LlamaConfig has no way to say "RMSNorm the queries and keys", so a QK-norm model exported as
    Llama would load without complaint and compute something else. Qwen3 is Llama plus exactly
    that norm (per head, with a gain, before RoPE, weights ``self_attn.q_norm`` / ``k_norm``),
    the form our ``Attention`` uses, so it describes such a model exactly.
    """
    return ("Qwen3ForCausalLM", "qwen3") if model.config.qk_norm else ("LlamaForCausalLM", "llama")


def hf_config(model: GPT, special_ids: dict[str, int | None]) -> dict:
    """The LlamaConfig (Qwen3Config with QK-norm) that describes ``model`` exactly."""
    c = model.config
    architecture, model_type = hf_architecture(model)
    extra = {"use_sliding_window": False, "attention_dropout": 0.0} if c.qk_norm else {"mlp_bias": False}
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.mlp_hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},  # 5.x
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        **extra,
        "initializer_range": c.init_std,
        "torch_dtype": "float32",
        **{f"{name}_token_id": special_ids.get(name) for name in ("bos", "eos", "pad")},
    }


def generation_config(special_ids: dict[str, int | None]) -> dict:
    """Generation ends at ``<|end|>`` (the chat's turn end) or ``<|eos|>`` (a document's end)."""
    eos = [i for i in (special_ids.get("end"), special_ids.get("eos")) if i is not None]
    return {"bos_token_id": special_ids.get("bos"), "eos_token_id": eos, "pad_token_id": special_ids.get("pad")}


def hf_state(model: GPT) -> dict:
    """Our weights under HF Llama's names (the tied head is left to ``tie_word_embeddings``)."""
    from llmpipe.model.directory import model_state

    return {
        (name if name.startswith("lm_head.") else f"model.{name}"): t.cpu()
        for name, t in model_state(model).items()
    }


def export(model: GPT, tokenizer: Tokenizer, output: str | os.PathLike) -> Path:
    """Write the HF directory: weights, config, generation config and the tokenizer files."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, the model only {model.config.vocab_size}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    ids = special_ids(tokenizer)
    with atomic_path(output / "model.safetensors") as tmp:
        save_file(hf_state(model), str(tmp), metadata={"format": "pt"})
    write_json(output / "config.json", hf_config(model, ids))
    write_json(output / "generation_config.json", generation_config(ids))
    export_hf(tokenizer, output)
    return output


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", required=True, help="llmpipe model directory")
    parser.add_argument("--output", required=True, help="HF directory (--format hf) or .gguf file to write")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="hf (default): transformers; gguf: llama.cpp")
    parser.add_argument("--quant", choices=QUANTS, default=None,
                        help="GGUF weight type, default f16 (norms stay f32); q8_0 needs rows divisible by 32")


def run(args: argparse.Namespace, stage: str) -> int:
    from llmpipe.model.directory import load_model, load_tokenizer

    if args.quant is not None and args.format != "gguf":
        raise SystemExit("llmpipe export: --quant is for --format gguf (the HF export is float32)")
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    if chat_template(tokenizer) is None:
        print("note: the tokenizer lacks the chat's special tokens: the export has no chat template")
    if args.format == "gguf":
        from llmpipe.model.gguf_export import write_gguf

        print(write_gguf(model, tokenizer, args.output, args.quant or "f16"))
    else:
        print(export(model, tokenizer, args.output))
    return 0
