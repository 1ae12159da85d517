"""What the dedup steps share: the settings (``Params``), the files they hand each other
(signature files, the ``PAIRS`` and ``CLUSTERS`` tables), union-find's ``_find`` and ``run_stage``,
the body of every step's ``run``."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash
from datasketch.hashfunc import sha1_hash32

from llmpipe.config import ConfigError, stage_params
from llmpipe.io import atomic_path

SECTION = "dedup"
HASHFUNCS = {"xxh32": xxhash.xxh32_intdigest, "sha1": sha1_hash32}
EXACT, NEAR = "exact_duplicate", "near_duplicate"
PAIRS = pa.schema(
    [
        ("shard_a", pa.string()),
        ("row_a", pa.int64()),
        ("shard_b", pa.string()),
        ("row_b", pa.int64()),
        ("similarity", pa.float32()),  # estimated Jaccard: the fraction of equal signature values
        ("kind", pa.string()),  # "exact" (same normalized-text hash) or "near" (LSH band)
    ]
)
CLUSTERS = pa.schema(
    [
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("cluster", pa.int64()),  # clusters numbered in the order of their survivors
        ("keep", pa.bool_()),
        ("reason", pa.string()),  # null for the survivor
    ]
)


class DedupError(ValueError):
    """Inconsistent dedup inputs (mismatched settings, stale files); the message names the file."""


@dataclass(frozen=True)
class Params:
    bands: int
    rows: int
    threshold: float
    ngram: int
    seed: int
    hash: str
    exact: bool
    near: bool

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @classmethod
    def from_config(cls, section: dict) -> Params:
        try:
            params = cls(**{name: section[name] for name in cls.__dataclass_fields__})
        except KeyError as err:
            raise ConfigError(f"config key 'dedup.{err.args[0]}' is missing") from None
        if params.hash not in HASHFUNCS:
            raise ConfigError(f"config key 'dedup.hash': {params.hash!r} is not one of {sorted(HASHFUNCS)}")
        return params

    def meta(self) -> dict:
        """The settings a signature file must share with the jobs that read it."""
        return {"num_perm": self.num_perm, "seed": self.seed, "ngram": self.ngram, "hash": self.hash}


@dataclass(frozen=True)
class Signatures:
    values: np.ndarray  # uint32 [n, num_perm]
    exact: np.ndarray  # uint64 [n]: xxh64 of the normalized UTF-8 text
    shingles: np.ndarray  # uint32 [n]: 0 means no words (never a duplicate)


# --- signature files ----------------------------------------------------------------------------


def write_signatures(path: str | Path, shard: str, ids: list, sigs: Signatures, params: Params) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            shard=np.array(shard),
            ids=np.array([i or "" for i in ids], dtype=str),
            exact=sigs.exact,
            signatures=sigs.values,
            shingles=sigs.shingles,
            **{f"meta_{key}": np.array(value) for key, value in params.meta().items()},
        )


def read_signatures(path: str | Path, params: Params, fields: Sequence[str]) -> dict:
    """The named arrays of a signature file (plus ``shard``), after checking its settings."""
    with np.load(path, allow_pickle=False) as npz:
        meta = {key: npz[f"meta_{key}"].item() for key in params.meta()}
        if meta != params.meta():
            raise DedupError(f"{path}: written with {meta}, but dedup config is {params.meta()}")
        return {"shard": str(npz["shard"]), **{name: npz[name] for name in fields}}


def _shards(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(shard, path) in shard-name order, the order that decides survivors."""
    named = []
    for path in paths:
        with np.load(path, allow_pickle=False) as npz:
            named.append((str(npz["shard"]), path))
    named.sort()
    for (a, path_a), (b, path_b) in zip(named, named[1:]):
        if a == b:
            raise DedupError(f"two signature files for shard {a!r}: {path_a}, {path_b}")
    return named


# --- union-find ---------------------------------------------------------------------------------


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


# --- CLI ----------------------------------------------------------------------------------------


def run_stage(args, stage: str, body: Callable[[object, str, Params], None]) -> int:
    """A step's ``run``: ``body(args, stage, params)`` with the dedup settings; a ``DedupError``
    is printed (it names the file) and exits 1."""
    params = Params.from_config(stage_params(args.params, args.config, SECTION))
    try:
        body(args, stage, params)
    except DedupError as err:
        print(f"{stage}: {err}", file=sys.stderr)
        return 1
    return 0
