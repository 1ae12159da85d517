"""Run a per-document step over one shard: the shared counting, timing and writing.

A step is a pure function ``doc -> dict | Drop``: the kept (possibly changed) document, or
the reason it is dropped. This module reads the shard, applies the step, writes kept
documents, rejected documents with their reason, and the stage's ``stats.json`` — so no
step counts or writes anything itself (datatrove's pipeline-step contract).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from llmpipe.data.documents import REJECT_REASON, text_bytes, with_reason
from llmpipe.io import read_documents, read_schema, write_documents
from llmpipe.stats import StageStats


@dataclass(frozen=True)
class Drop:
    """A step's verdict that a document is removed, and why (a short snake_case reason)."""

    reason: str


Step = Callable[[dict], "dict | Drop"]


def apply_step(
    docs: list[dict], step: Step, stats: StageStats
) -> tuple[list[dict], list[dict]]:
    """Apply ``step`` to every document; return (kept, rejected-with-reason), counting both."""
    kept, rejected = [], []
    for doc in docs:
        nbytes = text_bytes(doc)
        stats.read(nbytes)
        result = step(doc)
        if isinstance(result, Drop):
            stats.dropped(result.reason, nbytes)
            rejected.append({**doc, REJECT_REASON: result.reason})
        else:
            stats.kept(text_bytes(result))
            kept.append(result)
    return kept, rejected


def run_shard(
    stage: str,
    step: Step,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    stats_path: str | os.PathLike,
    rejects_path: str | os.PathLike | None = None,
    output_schema: pa.Schema | None = None,
    shard: str | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
) -> StageStats:
    """Read a shard, apply ``step`` to each document, write kept, rejects and stats.

    ``output_schema`` defaults to the input's columns (a filter); a step that changes the
    columns (extraction) names its output schema. An empty result is still written with
    its schema, and the stats say the shard came out empty. ``extra``, called once the shard
    is done, returns a step's own counts (lines removed, languages seen) for ``stats.extra``.
    """
    stats = StageStats(stage=stage, shard=shard or _shard_name(input_path))
    input_schema = read_schema(input_path)
    docs = read_documents(input_path)
    kept, rejected = apply_step(docs, step, stats)
    write_documents(output_path, kept, output_schema or input_schema)
    if rejects_path is not None:
        write_documents(rejects_path, rejected, with_reason(input_schema))
    if extra is not None:
        stats.extra.update(extra())
    if not kept:
        stats.extra["empty_output"] = True
    stats.write(stats_path)
    return stats


def add_shard_arguments(parser, input_help: str, output_help: str) -> None:
    """The CLI flags of every per-document shard stage (the shape run_shard takes)."""
    parser.add_argument("--input", required=True, help=input_help)
    parser.add_argument("--output", required=True, help=output_help)
    parser.add_argument("--rejects", required=True, help="dropped documents with their reason")
    parser.add_argument("--stats", required=True, help="the stage's stats.json")


def _shard_name(path: str | os.PathLike) -> str:
    name = os.path.basename(os.fspath(path))
    return name.split(".", 1)[0]
