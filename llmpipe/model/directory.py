"""Model directories: ``model.safetensors`` + ``config.json`` + ``tokenizer.json``.

What every training stage writes and every consumer (evaluation, chat, export) loads; no
pickle anywhere in it. Resumable training checkpoints build on it in ``llmpipe.train.checkpoint``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmpipe import layout
from llmpipe.io import atomic_path, read_json, write_json
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.tokenizer import Tokenizer

MODEL_FORMAT = "llmpipe-model/1"
WEIGHTS, CONFIG, TOKENIZER = layout.MODEL_FILES


def model_state(model: GPT) -> dict[str, torch.Tensor]:
    """The weights to save: the tied output head is the embedding, so it is stored once."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        del state["lm_head.weight"]
    return state


def save_weights(path: str | os.PathLike, model: GPT, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        state = {k: v.cpu() for k, v in model_state(model).items()}
        save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})


def load_weights(model: GPT, path: str | os.PathLike) -> None:
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"{path}: missing weights {sorted(set(missing) - allowed)}, unexpected {unexpected}")


def save_model_dir(
    directory: str | os.PathLike, model: GPT, tokenizer: str | os.PathLike, meta: dict[str, Any] | None = None
) -> None:
    """Write ``model.safetensors``, ``config.json`` and a copy of the tokenizer file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory / WEIGHTS, model)
    with atomic_path(directory / TOKENIZER) as tmp:
        shutil.copyfile(tokenizer, tmp)
    config = getattr(model, "_orig_mod", model).config
    write_json(directory / CONFIG, {"format": MODEL_FORMAT, "model": config.to_dict(), **(meta or {})})


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> GPT:
    """The model of a model directory, in eval mode."""
    directory = Path(directory)
    config = read_json(directory / CONFIG)
    if config.get("format") != MODEL_FORMAT:
        raise ValueError(f"{directory / CONFIG}: format {config.get('format')!r}, expected {MODEL_FORMAT!r}")
    model = GPT(GPTConfig.from_dict(config["model"]))
    load_weights(model, directory / WEIGHTS)
    return model.to(device).eval()


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    return Tokenizer.load(Path(directory) / TOKENIZER)
