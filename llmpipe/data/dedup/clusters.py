"""``llmpipe dedup-clusters``: the connected components of every band's pairs, one survivor per
cluster (the one job that sees all shards). Components come from scipy's ``connected_components``
(linear in documents + pairs); a cluster's survivor is its first document in (shard, row) order."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from llmpipe.data.dedup.common import (
    CLUSTERS,
    EXACT,
    NEAR,
    PAIRS,
    DedupError,
    Params,
    _shards,
    read_signatures,
    run_stage,
)
from llmpipe.io import atomic_path
from llmpipe.stats import StageStats


def clusters(signature_paths: Sequence[str], pair_paths: Sequence[str], params: Params, stats: StageStats) -> pa.Table:
    """Connected components of all pairs; one row per member of every cluster of two or more documents.

    Documents are numbered in (shard name, row) order and a cluster's root is its smallest number,
    so the root is the survivor. Memory: per document, its exact hash and a few integers (plus the
    ids of cluster members); per pair, two integers. Texts and full signatures are never read.
    """
    shards = _shards(signature_paths)
    names = [name for name, _ in shards]
    data = [read_signatures(path, params, ["exact", "shingles"]) for _, path in shards]
    sizes = np.array([len(d["exact"]) for d in data], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    exact = np.concatenate([d["exact"] for d in data]) if data else np.empty(0, np.uint64)
    without_words = int(sum((d["shingles"] == 0).sum() for d in data))
    del data
    total = int(sizes.sum())
    kinds: Counter = Counter()
    xs, ys = [], []
    for path in pair_paths:
        table = pq.read_table(path, schema=PAIRS)
        for entry in pc.value_counts(table.column("kind")).to_pylist():
            kinds[entry["values"]] += entry["counts"]
        xs.append(_numbers(table, "a", names, starts, sizes, path))
        ys.append(_numbers(table, "b", names, starts, sizes, path))
        del table
    roots = _component_roots(total, np.concatenate(xs) if xs else np.empty(0, np.int64),
                             np.concatenate(ys) if ys else np.empty(0, np.int64))
    members = np.flatnonzero(np.bincount(roots, minlength=len(roots))[roots] >= 2)
    survivors, cluster = np.unique(roots[members], return_inverse=True)
    keep = roots[members] == members
    reasons = np.where(exact[members] == exact[roots[members]], EXACT, NEAR)
    shard_of = np.repeat(np.arange(len(shards)), sizes)[members]
    rows = members - starts[shard_of]

    stats.docs_in = len(roots)
    stats.docs_out = len(roots) - int((~keep).sum())
    stats.removed.update(reasons[~keep].tolist())
    cluster_sizes = Counter(np.bincount(cluster.reshape(-1)).tolist()) if len(members) else Counter()
    stats.extra.update(
        shards=len(shards),
        clusters=len(survivors),
        cluster_sizes={str(size): count for size, count in sorted(cluster_sizes.items())},
        largest_cluster=max(cluster_sizes, default=0),
        pairs=dict(sorted(kinds.items())),
        docs_without_words=without_words,
    )
    return pa.table(
        {
            "shard": pa.array(names, pa.string()).take(pa.array(shard_of)),
            "row": rows,
            "id": _member_ids(shards, params, shard_of, rows),
            "cluster": cluster.reshape(-1).astype(np.int64),
            "keep": keep,
            "reason": [None if k else str(r) for k, r in zip(keep, reasons)],
        },
        schema=CLUSTERS,
    )


def _component_roots(n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For each of ``n`` documents, the smallest document joined to it by the pairs (x[k], y[k])."""
    if not n:
        return np.empty(0, np.int64)
    graph = coo_matrix((np.ones(len(x), dtype=np.int8), (x, y)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n, dtype=np.int64))
    return first[labels]


def _member_ids(shards: list[tuple[str, str]], params: Params, shard_of: np.ndarray, rows: np.ndarray) -> list[str]:
    """The ids of the given (shard index, row) documents, read one shard's ids at a time."""
    ids: list[str | None] = [None] * len(rows)
    for shard_index in np.unique(shard_of):
        where = np.flatnonzero(shard_of == shard_index)
        shard_ids = read_signatures(shards[shard_index][1], params, ["ids"])["ids"]
        for k, value in zip(where.tolist(), shard_ids[rows[where]].tolist()):
            ids[k] = str(value)
    return ids


def _numbers(
    table: pa.Table, side: str, names: list[str], starts: np.ndarray, sizes: np.ndarray, path: str
) -> np.ndarray:
    """Document numbers of one side of a pairs table, checked against the signature files."""
    shard_column = table.column(f"shard_{side}")
    rows = table.column(f"row_{side}").to_numpy()
    index = pc.index_in(shard_column, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)
    known = ~np.isnan(index) if index.dtype.kind == "f" else np.ones(len(index), bool)
    index = np.where(known, index, 0).astype(np.int64)
    bad = ~known | (rows < 0) | (rows >= np.where(known, sizes[index] if len(sizes) else 0, 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        shard, row = shard_column[k].as_py(), int(rows[k])
        raise DedupError(f"{path}: a pair names shard {shard!r} row {row}, which no signature file has (stale?)")
    return (starts[index] if len(starts) else index) + rows


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--signatures", required=True, nargs="+", help="every shard's signatures")
    parser.add_argument("--pairs", required=True, nargs="+", help="every band's pairs")
    parser.add_argument("--output", required=True, help="clusters Parquet (shard, row, id, cluster, keep, reason)")
    parser.add_argument("--stats", required=True, help="the clustering's stats.json")


def run(args, stage: str) -> int:
    return run_stage(args, stage, _run)


def _run(args, stage: str, params: Params) -> None:
    stats = StageStats(stage=stage)
    table = clusters(args.signatures, args.pairs, params, stats)
    with atomic_path(args.output) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    stats.record_peak_rss()
    data = stats.write(args.stats)
    print(f"{stage}: {data['extra']['clusters']} clusters, removed {data['removed']}")
