"""``llmpipe export``: a model directory as a Hugging Face Llama directory, loadable offline.

Our module names already follow HF Llama's (and RoPE uses its half-split layout), so the export
is a ``model.`` prefix, a LlamaConfig ``config.json`` and the tokenizer files — no weight surgery.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from safetensors.torch import save_file

from llmpipe.io import atomic_path, read_json, write_json
from llmpipe.model.gpt import GPT


def hf_config(model: GPT, special_ids: dict[str, int | None]) -> dict:
    """The LlamaConfig that describes ``model`` exactly."""
    c = model.config
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
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
        "mlp_bias": False,
        "initializer_range": c.init_std,
        "torch_dtype": "float32",
        **{f"{name}_token_id": special_ids.get(name) for name in ("bos", "eos", "pad")},
    }


def hf_state(model: GPT) -> dict:
    """Our weights under HF Llama's names (the tied head is left to ``tie_word_embeddings``)."""
    from llmpipe.model.directory import model_state

    return {
        (name if name.startswith("lm_head.") else f"model.{name}"): t.cpu()
        for name, t in model_state(model).items()
    }


def export(model: GPT, output: str | os.PathLike, special_ids: dict, hf_tokenizer: str | os.PathLike | None) -> Path:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(output / "model.safetensors") as tmp:
        save_file(hf_state(model), str(tmp), metadata={"format": "pt"})
    write_json(output / "config.json", hf_config(model, special_ids))
    write_json(output / "generation_config.json", {
        "bos_token_id": special_ids.get("bos"), "eos_token_id": special_ids.get("eos"),
        "pad_token_id": special_ids.get("pad"),
    })
    if hf_tokenizer is not None:
        for f in sorted(Path(hf_tokenizer).iterdir()):
            if f.is_file():
                shutil.copyfile(f, output / f.name)
    return output


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", required=True, help="llmpipe model directory")
    parser.add_argument("--output", required=True, help="Hugging Face directory to write")
    parser.add_argument("--hf-tokenizer", help="directory of the tokenizer's HF files (results/tokenizer/hf)")


def run(args: argparse.Namespace, stage: str) -> int:
    from llmpipe.model.directory import CONFIG, load_model

    model = load_model(args.model)
    data = read_json(Path(args.model) / CONFIG).get("data", {})
    special_ids = {name: data.get(f"{name}_id") for name in ("bos", "eos", "pad")}
    print(export(model, args.output, special_ids, args.hf_tokenizer))
    return 0
