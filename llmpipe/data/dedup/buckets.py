"""``llmpipe dedup-buckets``: the candidate pairs of one LSH band (plus the exact pairs, in
band 0), each verified against the full signatures."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmpipe.data.dedup.common import PAIRS, DedupError, Params, _find, _shards, read_signatures, run_stage
from llmpipe.io import atomic_path


def _groups(keys: np.ndarray) -> list[np.ndarray]:
    """Row indices sharing a key (rows of ``keys``), for keys held twice or more, in row order."""
    if len(keys) < 2:
        return []
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    shared = np.flatnonzero(counts[inverse] >= 2)
    shared = shared[np.argsort(inverse[shared], kind="stable")]
    bounds = np.flatnonzero(np.diff(inverse[shared])) + 1
    return np.split(shared, bounds)


def _identical(sigs: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Edges from each member to the first one with the same signature; the distinct members."""
    first: dict[bytes, int] = {}
    edges = []
    for j, values in enumerate(sigs):
        holder = first.setdefault(values.tobytes(), j)
        if holder != j:
            edges.append((holder, j))
    return edges, list(first.values())


def _similar(sigs: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Verified edges among distinct signatures, as a spanning forest (connectivity, not all pairs)."""
    parent = list(range(len(sigs)))
    edges = []
    for j in range(1, len(sigs)):
        similarity = (sigs[:j] == sigs[j]).mean(axis=1)
        for i in np.flatnonzero(similarity >= threshold):
            ri, rj = _find(parent, int(i)), _find(parent, j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
                edges.append((int(i), j, float(similarity[i])))
    return edges


def _bucket_edges(sigs: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Verified duplicate edges among the members (rows of ``sigs``) of one LSH bucket."""
    edges, distinct = _identical(sigs)
    near = _similar(sigs[distinct], threshold)
    return [(i, j, 1.0) for i, j in edges] + [(int(distinct[i]), int(distinct[j]), s) for i, j, s in near]


def band_pairs(paths: Sequence[str], band: int, params: Params) -> pa.Table:
    """Verified duplicate pairs whose signatures agree on ``band`` (plus exact pairs in band 0).

    Two passes keep memory at one band per document: band values (and exact hashes) first, then
    full signatures only of the documents that share a bucket with another.
    """
    if not 0 <= band < params.bands:
        raise DedupError(f"band {band} out of range: dedup.bands is {params.bands}")
    lo, hi = band * params.rows, (band + 1) * params.rows
    shards = _shards(paths)
    names = [name for name, _ in shards]
    shard_parts, row_parts, key_parts, exact_parts = [], [], [], []
    for shard_index, (_, path) in enumerate(shards):
        data = read_signatures(path, params, ["signatures", "exact", "shingles"])
        present = np.flatnonzero(data["shingles"] > 0)
        shard_parts.append(np.full(len(present), shard_index))
        row_parts.append(present)
        key_parts.append(data["signatures"][present, lo:hi])
        exact_parts.append(data["exact"][present])
    shard_of, row_of = np.concatenate(shard_parts), np.concatenate(row_parts)
    groups = []
    if params.exact and band == 0:
        groups += [("exact", g) for g in _groups(np.concatenate(exact_parts))]
    if params.near:
        groups += [("near", g) for g in _groups(np.concatenate(key_parts, axis=0))]
    needed = np.unique(np.concatenate([g for _, g in groups])) if groups else np.empty(0, int)
    full = _load_rows(shards, params, shard_of[needed], row_of[needed])
    out = []
    for kind, members in groups:
        sigs = full[np.searchsorted(needed, members)]
        edges = (
            [(i, j, 1.0) for i, j in _identical(sigs)[0]]
            if kind == "exact"
            else _bucket_edges(sigs, params.threshold)
        )
        for i, j, similarity in edges:
            a, b = members[i], members[j]
            out.append((names[shard_of[a]], int(row_of[a]), names[shard_of[b]], int(row_of[b]), similarity, kind))
    return pa.Table.from_pylist([dict(zip(PAIRS.names, row)) for row in out], schema=PAIRS)


def _load_rows(shards: list[tuple[str, str]], params: Params, shard_of: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """Full signatures of the given (shard index, row) documents, in the given order."""
    full = np.empty((len(row_of), params.num_perm), dtype=np.uint32)
    for shard_index in np.unique(shard_of):
        where = np.flatnonzero(shard_of == shard_index)
        data = read_signatures(shards[shard_index][1], params, ["signatures"])
        full[where] = data["signatures"][row_of[where]]
    return full


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--band", required=True, type=int, help="the LSH band, 0 .. bands-1")
    parser.add_argument("--input", required=True, nargs="+", help="every shard's signatures")
    parser.add_argument("--output", required=True, help="the band's pairs (Parquet)")


def run(args, stage: str) -> int:
    return run_stage(args, stage, _run)


def _run(args, stage: str, params: Params) -> None:
    table = band_pairs(args.input, args.band, params)
    with atomic_path(args.output) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    print(f"{stage} band {args.band}: {table.num_rows} pairs {dict(Counter(table.column('kind').to_pylist()))}")
