"""Atomic, resumable training checkpoints: a model directory's weights plus the optimizer,
schedule, RNG and data position (``state.pt``, loaded with ``weights_only=True``).
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

from llmpipe.io import read_json, write_json
from llmpipe.model.directory import WEIGHTS, load_weights, save_weights
from llmpipe.model.gpt import GPT

BEST = "best.safetensors"  # in a run directory: the best-validation weights so far


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
