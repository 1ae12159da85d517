"""The one reader of packed sequences (``results/pack/{split}/``): memmapped, never loaded whole.

Rows are seq_len = context_length + 1 tokens; inputs are the first context_length, targets the
last, with padding targets set to -1 (ignored). A seeded, resumable order serves training.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llmpipe.io import read_json

FORMAT = "llmpipe-packed/1"
HEADER_KEYS = ("dtype", "n_seq", "seq_len", "context_length", "vocab_size", "bos_id", "eos_id", "pad_id")


class PackedDataError(ValueError):
    """A packed split that does not match its header; the message names the file."""


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # [B, T] int64
    targets: torch.Tensor  # [B, T] int64, -1 at padding
    segments: torch.Tensor  # [B, T] int64, document piece ids of the inputs, 0 = padding

    def to(self, device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (self.inputs, self.targets, self.segments)))


class PackedData:
    """One split: ``tokens.bin`` and ``segments.bin`` [n_seq, seq_len] plus ``header.json``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        header_path = self.directory / "header.json"
        if not header_path.exists():
            raise PackedDataError(f"{header_path}: missing (is this a results/pack/<split> directory?)")
        header = read_json(header_path)
        if header.get("format") != FORMAT:
            raise PackedDataError(f"{header_path}: format {header.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in HEADER_KEYS if k not in header]
        if missing:
            raise PackedDataError(f"{header_path}: missing keys {missing}")
        self.header = header
        self.n_seq, self.seq_len = int(header["n_seq"]), int(header["seq_len"])
        self.context_length = int(header["context_length"])
        self.vocab_size, self.pad_id = int(header["vocab_size"]), int(header["pad_id"])
        if self.seq_len != self.context_length + 1:
            raise PackedDataError(f"{header_path}: seq_len {self.seq_len} != context_length + 1")
        self.tokens = self._memmap("tokens.bin", np.dtype(header["dtype"]).newbyteorder("<"))
        self.segments = self._memmap("segments.bin", np.dtype("<u2"))

    def _memmap(self, name: str, dtype: np.dtype) -> np.ndarray:
        path = self.directory / name
        expected = self.n_seq * self.seq_len * dtype.itemsize
        size = path.stat().st_size if path.exists() else None
        if size != expected:
            raise PackedDataError(f"{path}: {size} bytes, header.json implies {expected}")
        if self.n_seq == 0:
            return np.zeros((0, self.seq_len), dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(self.n_seq, self.seq_len))

    def __len__(self) -> int:
        return self.n_seq

    def batch(self, indices: np.ndarray) -> Batch:
        """The rows at ``indices`` (sorted reads are fastest but any order works)."""
        tokens = torch.from_numpy(self.tokens[indices].astype(np.int64))
        segments = torch.from_numpy(self.segments[indices].astype(np.int64))
        targets = tokens[:, 1:].clone()
        targets[segments[:, 1:] == 0] = -1
        return Batch(tokens[:, :-1], targets, segments[:, :-1])

    def sequential(self, batch_size: int, limit: int | None = None, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """The first ``limit`` rows in order (all if None), this rank's share of each batch."""
        n = self.n_seq if limit is None else min(limit, self.n_seq)
        for start in range(0, n, batch_size * world):
            stop = min(start + batch_size * world, n)
            mine = np.arange(start, stop)[rank::world]
            if len(mine):
                yield self.batch(mine)


def target_counts(data: PackedData, chunk_rows: int = 4096) -> np.ndarray:
    """How often each token id is a (non-padding) target: the set every loss averages over.

    Read in chunks of rows, so a split far larger than memory is counted from its memmap.
    """
    counts = np.zeros(data.vocab_size, dtype=np.int64)
    for start in range(0, data.n_seq, chunk_rows):
        tokens = data.tokens[start : start + chunk_rows, 1:]
        valid = data.segments[start : start + chunk_rows, 1:] != 0
        chunk = np.bincount(tokens[valid].astype(np.int64), minlength=data.vocab_size)
        if len(chunk) > data.vocab_size:
            raise PackedDataError(
                f"{data.directory / 'tokens.bin'}: token id {len(chunk) - 1} >= vocab_size {data.vocab_size}"
            )
        counts += chunk
    return counts


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the token distribution ``counts``: the loss of the best model that
    ignores context, so a language model's loss far below it shows what context buys."""
    total = counts.sum()
    if total == 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


class TrainOrder:
    """Endless shuffled order over a split: one seeded permutation per epoch.

    The whole state is ``position`` (rows consumed across all ranks), so resuming is exact.
    Each step takes batch_size * world rows; rank r gets the r-th slice of them.
    """

    def __init__(self, data: PackedData, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if len(data) == 0:
            raise PackedDataError(f"{data.directory}: no sequences to train on")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world = rank, world
        self.position = 0
        self._perm: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.int64))

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:  # recomputed once per epoch, not per batch
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.data)))
        return self._perm[1]

    def _indices(self, start: int, count: int) -> np.ndarray:
        n = len(self.data)
        out, pos = [], start
        while len(out) < count:
            epoch, offset = divmod(pos, n)
            take = self._permutation(epoch)[offset : offset + count - len(out)]
            out.extend(take.tolist())
            pos += len(take)
        return np.asarray(out, dtype=np.int64)

    def next_batch(self) -> Batch:
        start = self.position + self.rank * self.batch_size
        self.position += self.batch_size * self.world
        return self.data.batch(self._indices(start, self.batch_size))

    @property
    def epoch(self) -> float:
        return self.position / len(self.data)

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"data order seed {state['seed']} in checkpoint != {self.seed}")
        self.position = int(state["position"])
