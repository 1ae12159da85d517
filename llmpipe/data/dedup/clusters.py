"""``llmpipe dedup-clusters``: union-find over every band's pairs, one survivor per cluster
(the one job that sees all shards)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmpipe.data.dedup.common import (
    CLUSTERS,
    EXACT,
    NEAR,
    PAIRS,
    DedupError,
    Params,
    _find,
    _shards,
    read_signatures,
    run_stage,
)
from llmpipe.io import atomic_path
from llmpipe.stats import StageStats


def clusters(signature_paths: Sequence[str], pair_paths: Sequence[str], params: Params, stats: StageStats) -> pa.Table:
    """Union-find over all pairs; one row per member of every cluster of two or more documents.

    Documents are numbered in (shard name, row) order and a set's root is its smallest number,
    so the root is the survivor.
    """
    shards = _shards(signature_paths)
    data = [read_signatures(path, params, ["ids", "exact", "shingles"]) for _, path in shards]
    sizes = np.array([len(d["ids"]) for d in data], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    layout = {name: (int(start), int(size)) for (name, _), start, size in zip(shards, starts, sizes)}
    exact = np.concatenate([d["exact"] for d in data])
    parent = list(range(int(sizes.sum())))
    kinds: Counter = Counter()
    for path in pair_paths:
        table = pq.read_table(path, schema=PAIRS)
        kinds.update(table.column("kind").to_pylist())
        for x, y in zip(_numbers(table, "a", layout, path), _numbers(table, "b", layout, path)):
            rx, ry = _find(parent, x), _find(parent, y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)
    roots = np.array([_find(parent, x) for x in range(len(parent))], dtype=np.int64)
    members = np.flatnonzero(np.bincount(roots, minlength=len(roots))[roots] >= 2)
    survivors, cluster = np.unique(roots[members], return_inverse=True)
    keep = roots[members] == members
    reasons = np.where(exact[members] == exact[roots[members]], EXACT, NEAR)
    shard_of = np.repeat(np.arange(len(shards)), sizes)[members]

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
        docs_without_words=int(sum((d["shingles"] == 0).sum() for d in data)),
    )
    return pa.table(
        {
            "shard": [shards[i][0] for i in shard_of],
            "row": members - starts[shard_of],
            "id": [str(data[i]["ids"][r]) for i, r in zip(shard_of, members - starts[shard_of])],
            "cluster": cluster.reshape(-1).astype(np.int64),
            "keep": keep,
            "reason": [None if k else str(r) for k, r in zip(keep, reasons)],
        },
        schema=CLUSTERS,
    )


def _numbers(table: pa.Table, side: str, layout: dict[str, tuple[int, int]], path: str) -> list[int]:
    """Document numbers of one side of a pairs table, checked against the signature files."""
    out = []
    for shard, row in zip(table.column(f"shard_{side}").to_pylist(), table.column(f"row_{side}").to_pylist()):
        start, size = layout.get(shard, (0, 0))
        if not 0 <= row < size:
            raise DedupError(f"{path}: a pair names shard {shard!r} row {row}, which no signature file has (stale?)")
        out.append(start + row)
    return out


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
    data = stats.write(args.stats)
    print(f"{stage}: {data['extra']['clusters']} clusters, removed {data['removed']}")
