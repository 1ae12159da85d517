"""``llmpipe dedup-buckets``: the verified duplicate pairs of one LSH band (plus the exact pairs,
in band 0), in time and memory linear in the documents.

**Candidates.** Documents whose signatures agree on the band's ``rows`` values share a bucket;
buckets are runs of equal keys after one stable sort of the band's keys, so no step compares keys
pairwise.
In band 0 documents with the same normalized-text hash are candidates too (kind ``exact``).

**What is verified, against whom.** Inside a bucket, members are taken in (shard, row) order:

1. *identical signatures*: each member is paired with the first member holding the same full
   signature (similarity 1.0), in one pass over a hash map. An ``exact`` group is paired this way
   and nothing else.
2. *representatives*: the bucket's distinct signatures are verified against a bounded set of
   representatives, not against each other. The first distinct signature is a representative,
   and so is each next one whose estimated Jaccard similarity (the fraction of equal signature
   values) is below ``threshold`` with every earlier representative, up to
   ``MAX_REPRESENTATIVES``; representatives are thus pairwise below the threshold. Every distinct
   member is compared with every representative (earlier or later than it), and a member and a
   representative at or above ``threshold`` are a verified pair.
3. *spanning forest*: clustering needs connectivity, not every pair, so the verified pairs are
   taken in (later member, earlier member) order and one is written only when it joins two
   parts of the bucket not yet joined.

A member costs at most 2 x ``MAX_REPRESENTATIVES`` signature comparisons (choosing the
representatives, then verifying), so a bucket of ``n`` costs ``O(n * MAX_REPRESENTATIVES *
num_perm)``: a 100k-member bucket of near-copies is about two comparisons per member (they all
match the first representative); 100k unrelated pages that collide on one band (a shared
template) cost 128 each and give no pair. Two-member buckets, most of them on real data, are
verified all at once (one vectorized comparison per pair), with the same result.

**What this gives up against comparing every pair** (this stage's algorithm until it was made
linear, quadratic in a bucket's size): two non-representatives at or above the threshold with each
other but attached to different, otherwise unjoined representatives are not paired here, nor is a
member unlike all of a full set of representatives paired with anyone. Such pairs may still be
found in another band, where they share a bucket with one of them a representative. On the
default toy web every band's pairs, and so the clusters, are identical to all-pairs
verification's (and so on benchmarks/dedup.py's corpora; on chains of near-copies drifting away
from their first page the pairs chosen differ, the clusters did not).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmpipe.data.dedup.common import PAIRS, DedupError, Params, _find, _shards, read_signatures, run_stage
from llmpipe.io import atomic_path
from llmpipe.stats import peak_rss_mb

MAX_REPRESENTATIVES = 64  # distinct signatures a bucket member is verified against, at most


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buckets of equal keys (rows of ``keys``) held twice or more: (order, starts, ends), bucket k
    being rows ``order[starts[k]:ends[k]]``, in row order; buckets in ascending key order (values
    compared column by column). One stable sort: the keys are compared as big-endian bytes."""
    if len(keys) < 2:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    if keys.ndim == 1:
        order = np.argsort(keys, kind="stable")
    else:
        big_endian = np.ascontiguousarray(keys.astype(keys.dtype.newbyteorder(">")))
        order = np.argsort(big_endian.view(np.dtype((np.void, big_endian[0].nbytes))).ravel(), kind="stable")
    ordered = keys[order]
    differs = ordered[1:] != ordered[:-1]
    bounds = np.flatnonzero(differs if differs.ndim == 1 else differs.any(axis=1)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(keys)]])
    shared = ends - starts >= 2
    return order, starts[shared], ends[shared]


def _identical(sigs: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Edges from each member to the first one with the same signature; the distinct members."""
    first: dict[bytes, int] = {}
    edges = []
    for j, values in enumerate(sigs):
        holder = first.setdefault(values.tobytes(), j)
        if holder != j:
            edges.append((holder, j))
    return edges, list(first.values())


def _equal_counts(sigs: np.ndarray, one: np.ndarray) -> np.ndarray:
    """How many signature values each row of ``sigs`` shares with the signature ``one``."""
    return np.count_nonzero(sigs == one, axis=1)


def _representatives(sigs: np.ndarray, threshold: float, limit: int = MAX_REPRESENTATIVES) -> tuple[list[int], int]:
    """The greedy representatives (row indices, ascending) and the signature comparisons made.

    Row 0 is one; each next row below ``threshold`` with every earlier representative is one,
    up to ``limit``. One round per representative compares the rows not yet matched with it.
    """
    num_perm = sigs.shape[1]
    reps = [0]
    open_rows = np.arange(1, len(sigs))  # rows that matched no representative so far
    comparisons = 0
    while len(open_rows) and len(reps) < limit:
        similarity = _equal_counts(sigs[open_rows], sigs[reps[-1]]) / num_perm
        comparisons += len(open_rows)
        open_rows = open_rows[similarity < threshold]
        if len(open_rows):
            reps.append(int(open_rows[0]))
            open_rows = open_rows[1:]
    return reps, comparisons


def _similar(sigs: np.ndarray, threshold: float) -> tuple[list[tuple[int, int, float]], int]:
    """Verified edges among distinct signatures, as a spanning forest; and the comparisons made.

    Every row is compared with every representative; an edge (i, j, similarity), i < j, joins a
    row and a representative at or above ``threshold``. Edges are taken in (j, i) order, kept
    when they join two parts not yet joined.
    """
    n, num_perm = sigs.shape
    if n < 2:
        return [], 0
    reps, comparisons = _representatives(sigs, threshold)
    rows, cols, sims = [], [], []
    for r in reps:
        similarity = _equal_counts(sigs, sigs[r]) / num_perm
        comparisons += n
        hits = np.flatnonzero(similarity >= threshold)
        hits = hits[hits != r]
        rows.append(hits)
        cols.append(np.full(len(hits), r))
        sims.append(similarity[hits])
    member, rep, similarity = np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)
    # representatives are pairwise below the threshold, so an edge is (non-representative, representative)
    i, j = np.minimum(member, rep), np.maximum(member, rep)
    order = np.lexsort((i, j))
    i, j, similarity, member = i[order], j[order], similarity[order], member[order]
    # A member with one edge is a leaf: its edge always joins it and never links anything else,
    # so only the edges of members linking several representatives need the union-find.
    degree = np.bincount(member, minlength=n)
    keep = degree[member] == 1
    parent = list(range(n))
    for e in np.flatnonzero(~keep):
        ri, rj = _find(parent, int(i[e])), _find(parent, int(j[e]))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
            keep[e] = True
    return [(int(a), int(b), float(s)) for a, b, s in zip(i[keep], j[keep], similarity[keep])], comparisons


def _bucket_edges(sigs: np.ndarray, threshold: float) -> tuple[list[tuple[int, int, float]], int]:
    """Verified duplicate edges among the members (rows of ``sigs``) of one LSH bucket, and the
    signature comparisons made (at most members x ``MAX_REPRESENTATIVES`` x 2)."""
    edges, distinct = _identical(sigs)
    near, comparisons = _similar(sigs[distinct], threshold)
    return (
        [(i, j, 1.0) for i, j in edges] + [(int(distinct[i]), int(distinct[j]), s) for i, j, s in near],
        comparisons,
    )


def band_pairs(paths: Sequence[str], band: int, params: Params, counts: Counter | None = None) -> pa.Table:
    """Verified duplicate pairs whose signatures agree on ``band`` (plus exact pairs in band 0).

    Two passes keep memory at one band per document: band values (and exact hashes) first, then
    full signatures only of the documents that share a bucket with another. ``counts``, if
    given, gets the buckets, their largest size and the signature comparisons made.
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
        del data
    shard_of, row_of = np.concatenate(shard_parts), np.concatenate(row_parts)
    segments = []  # (kind, order, starts, ends): exact buckets first, then the band's, as before
    if params.exact and band == 0:
        segments.append(("exact", *_segments(np.concatenate(exact_parts))))
    if params.near:
        segments.append(("near", *_segments(np.concatenate(key_parts, axis=0))))
    del key_parts, exact_parts
    members = [order[_in_buckets(order, starts, ends)] for _, order, starts, ends in segments]
    needed = np.unique(np.concatenate(members)) if members else np.empty(0, np.int64)
    full = _load_rows(shards, params, shard_of[needed], row_of[needed])
    # edges as (bucket number, a, b, similarity, is_near); buckets numbered in output order
    parts: list[tuple[np.ndarray, ...]] = []
    comparisons = buckets_seen = largest = 0
    for kind, order, starts, ends in segments:
        sizes = ends - starts
        number = buckets_seen + np.arange(len(starts))
        buckets_seen += len(starts)
        largest = max(largest, int(sizes.max(initial=0)))
        two = sizes == 2  # most buckets: one candidate pair, verified for all of them at once
        a, b = order[starts[two]], order[starts[two] + 1]
        equal = _pair_counts(full[np.searchsorted(needed, a)], full[np.searchsorted(needed, b)])
        similarity = equal / params.num_perm
        ok = equal == params.num_perm  # identical signatures (the only exact pairs)
        if kind == "near":
            ok |= similarity >= params.threshold
        comparisons += int(two.sum()) if kind == "near" else 0
        parts.append((number[two][ok], a[ok], b[ok], similarity[ok], np.full(int(ok.sum()), kind == "near")))
        for k in np.flatnonzero(~two):
            bucket = order[starts[k] : ends[k]]
            sigs = full[np.searchsorted(needed, bucket)]
            if kind == "exact":
                edges = [(i, j, 1.0) for i, j in _identical(sigs)[0]]
            else:
                edges, made = _bucket_edges(sigs, params.threshold)
                comparisons += made
            if edges:
                i, j, sim = (np.array(column) for column in zip(*edges))
                parts.append((np.full(len(edges), number[k]), bucket[i], bucket[j], sim.astype(np.float64),
                              np.full(len(edges), kind == "near")))
    if counts is not None:
        counts.update(buckets=buckets_seen, comparisons=comparisons)
        counts["largest_bucket"] = largest
    if not parts or not sum(len(p[0]) for p in parts):
        return PAIRS.empty_table()
    number, a, b, similarity, near = (np.concatenate(column) for column in zip(*parts))
    by_bucket = np.argsort(number, kind="stable")  # each bucket's edges keep their order
    a, b, similarity, near = a[by_bucket], b[by_bucket], similarity[by_bucket], near[by_bucket]
    shard_names = pa.array(names, pa.string())
    return pa.table(
        {
            "shard_a": shard_names.take(pa.array(shard_of[a])),
            "row_a": pa.array(row_of[a], pa.int64()),
            "shard_b": shard_names.take(pa.array(shard_of[b])),
            "row_b": pa.array(row_of[b], pa.int64()),
            "similarity": pa.array(similarity, pa.float64()).cast(pa.float32()),
            "kind": pa.array(["exact", "near"], pa.string()).take(pa.array(near.astype(np.int8))),
        },
        schema=PAIRS,
    )


def _in_buckets(order: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which positions of ``order`` fall in one of the buckets [starts, ends)."""
    inside = np.zeros(len(order) + 1, dtype=np.int64)
    np.add.at(inside, starts, 1)
    np.add.at(inside, ends, -1)
    return np.cumsum(inside[:-1]) > 0


def _pair_counts(x: np.ndarray, y: np.ndarray, block: int = 65536) -> np.ndarray:
    """Equal signature values of each row pair (x[k], y[k]), a block of rows at a time."""
    out = np.empty(len(x), dtype=np.int64)
    for lo in range(0, len(x), block):
        out[lo : lo + block] = np.count_nonzero(x[lo : lo + block] == y[lo : lo + block], axis=1)
    return out


def _load_rows(shards: list[tuple[str, str]], params: Params, shard_of: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """Full signatures of the given (shard index, row) documents, in the given order."""
    full = np.empty((len(row_of), params.num_perm), dtype=np.uint32)
    for shard_index in np.unique(shard_of):
        where = np.flatnonzero(shard_of == shard_index)
        data = read_signatures(shards[shard_index][1], params, ["signatures"])
        full[where] = data["signatures"][row_of[where]]
        del data
    return full


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--band", required=True, type=int, help="the LSH band, 0 .. bands-1")
    parser.add_argument("--input", required=True, nargs="+", help="every shard's signatures")
    parser.add_argument("--output", required=True, help="the band's pairs (Parquet)")


def run(args, stage: str) -> int:
    return run_stage(args, stage, _run)


def _run(args, stage: str, params: Params) -> None:
    counts: Counter = Counter()
    table = band_pairs(args.input, args.band, params, counts)
    with atomic_path(args.output) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    kinds = dict(Counter(table.column("kind").to_pylist()))
    print(
        f"{stage} band {args.band}: {table.num_rows} pairs {kinds}; {counts['buckets']} buckets"
        f" (largest {counts['largest_bucket']}), {counts['comparisons']} signature comparisons;"
        f" peak RSS {peak_rss_mb():.0f} MiB"
    )
