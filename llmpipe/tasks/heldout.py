"""The world's held-out share: facts that no training input states and evaluation asks about.

A fact is an arithmetic operand pair (``("add", 3, 7)``; for addition and multiplication
both operand orders are the same fact) or a country / animal (every fact about a held-out
subject is held out of post-training). Membership is a pure function of the ``world`` config
section (seed + share) by a hash of the fact itself, so the toy web, the post-training data
and the evaluation agree without sharing any random stream, and a fact's side never depends
on how many problems a stage draws or in which order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

OPERATIONS = ("add", "sub", "mul")
SYMBOLS = {"add": "+", "sub": "-", "mul": "*"}
WORDS = {"add": "plus", "sub": "minus", "mul": "times"}


def arithmetic_fact(op: str, a: int, b: int) -> tuple[str, int, int]:
    """The canonical key of ``a op b``: the operand order of + and × does not make a new fact."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r} (one of {OPERATIONS})")
    return (op, min(a, b), max(a, b)) if op in ("add", "mul") else (op, a, b)


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from the seed and a fact's key (stable across runs and stages)."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class HeldOut:
    seed: int
    arithmetic_share: float
    fact_share: float

    def arithmetic(self, op: str, a: int, b: int) -> bool:
        """Whether the fact ``a op b`` is held out of every training input."""
        op, a, b = arithmetic_fact(op, a, b)
        return _unit(self.seed, f"arithmetic/{op}/{a}/{b}") < self.arithmetic_share

    def subject(self, subject: str) -> bool:
        """Whether a country or animal is held out of post-training (SFT, DPO, RL data)."""
        return _unit(self.seed, f"subject/{subject}") < self.fact_share


def from_config(world: dict) -> HeldOut:
    """The held-out share the ``world`` config section describes."""
    return HeldOut(world["heldout_seed"], world["arithmetic_heldout_share"], world["fact_heldout_share"])
