"""Model directories (safetensors + config + tokenizer) and atomic, resumable training checkpoints.

A model directory is what every training stage writes and every consumer loads; a checkpoint
adds the optimizer, schedule, RNG and data position, loaded with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from llmpipe.io import atomic_path, read_json, write_json
from llmpipe.model.gpt import GPT, GPTConfig

MODEL_FORMAT = "llmpipe-model/1"
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
BEST = "best.safetensors"  # in a run directory: the best-validation weights so far


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


def load_tokenizer(directory: str | os.PathLike):
    from llmpipe.tokenizer import Tokenizer

    return Tokenizer.load(Path(directory) / TOKENIZER)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: GPT, state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``ckpt-<step>/`` (weights + ``state.pt``) whole, then point ``latest.json`` at it.

    The directory is built under a temporary name and renamed, and ``latest.json`` is replaced
    atomically, so a kill at any instant leaves the previous checkpoint intact and current.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run_dir))
    try:
        save_weights(tmp / WEIGHTS, model)
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(run_dir / "latest.json", {"step": step, "dir": final.name})
    for old in sorted(run_dir.glob("ckpt-*"))[:-keep]:
        if old != final:
            shutil.rmtree(old)
    return final


def save_best(run_dir: str | os.PathLike, model: GPT, step: int, fingerprint: str) -> None:
    """Keep ``model`` as the run's best weights; the file names its step and run, and is
    replaced atomically, so it is always one whole model of a known step."""
    save_weights(Path(run_dir) / BEST, model, {"step": str(step), "fingerprint": fingerprint})


def load_best(run_dir: str | os.PathLike, model: GPT, step: int, fingerprint: str) -> None:
    """Load the best weights of ``step`` into ``model``; refuse a file of another step or run."""
    path = Path(run_dir) / BEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; the best weights of step {step} were never written")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("step") != str(step) or meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path}: holds step {meta.get('step')} of run {meta.get('fingerprint')}, "
            f"expected step {step} of run {fingerprint}"
        )
    load_weights(getattr(model, "_orig_mod", model), path)


def load_checkpoint(run_dir: str | os.PathLike, model: GPT) -> dict[str, Any] | None:
    """Load the latest checkpoint's weights into ``model``; return its state (None if none)."""
    latest = Path(run_dir) / "latest.json"
    if not latest.exists():
        return None
    ckpt = Path(run_dir) / read_json(latest)["dir"]
    load_weights(getattr(model, "_orig_mod", model), ckpt / WEIGHTS)
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
