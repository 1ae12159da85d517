"""``llmpipe dedup-filter``: drop one shard's non-survivors (matched by row, checked by id)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow.parquet as pq

from llmpipe.data.dedup.common import CLUSTERS, SECTION, DedupError, Params, run_stage
from llmpipe.data.stage import Drop, Step, _shard_name, run_shard


def duplicate_step(clusters_path: str | Path, shard: str) -> Step:
    """A step dropping the shard's non-survivors; rows are matched by position and checked by id."""
    table = pq.read_table(clusters_path, schema=CLUSTERS, filters=[("shard", "=", shard), ("keep", "=", False)])
    drops = {
        row: (doc_id, reason)
        for row, doc_id, reason in zip(*(table.column(c).to_pylist() for c in ("row", "id", "reason")))
    }
    rows = itertools.count()

    def step(doc: dict) -> dict | Drop:
        row = next(rows)
        if row not in drops:
            return doc
        doc_id, reason = drops[row]
        if (doc.get("id") or "") != doc_id:
            raise DedupError(
                f"{clusters_path}: shard {shard!r} row {row} has id {doc.get('id')!r}, "
                f"clusters say {doc_id!r} (stale?)"
            )
        return Drop(reason)

    return step


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--input", required=True, help="a TEXT Parquet shard")
    parser.add_argument("--clusters", required=True, help="the clusters Parquet")
    parser.add_argument("--output", required=True, help="the deduplicated shard")
    parser.add_argument("--rejects", required=True, help="removed documents with their reason")
    parser.add_argument("--stats", required=True, help="the shard's stats.json")


def run(args, stage: str) -> int:
    return run_stage(args, stage, _run)


def _run(args, stage: str, params: Params) -> None:
    shard = _shard_name(args.input)
    stats = run_shard(
        SECTION, duplicate_step(args.clusters, shard), args.input, args.output, args.stats, args.rejects, shard=shard
    )
    print(f"{stage} {args.input}: kept {stats.docs_out} of {stats.docs_in}, removed {dict(stats.removed)}")
