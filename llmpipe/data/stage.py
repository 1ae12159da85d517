"""Run a per-document step over one shard: the shared counting, timing and writing.

A step is a pure function ``doc -> dict | Drop``: the kept (possibly changed) document, or
the reason it is dropped. This module reads the shard, applies the step, writes kept
documents, rejected documents with their reason, and the stage's ``stats.json`` — so no
step counts or writes anything itself (datatrove's pipeline-step contract).

The shard is streamed: read ``llmpipe.io.BATCH_SIZE`` documents at a time, each batch stepped and
written out as row groups of the kept and rejects files before the next is read, so a job's
memory is one batch (plus the step's own state), whatever the shard's size. The outputs equal a
whole-shard run's row for row; only their row-group layout depends on the batch size. The
stats report the job's peak memory as ``extra.peak_rss_mb``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from llmpipe.data.documents import REJECT_REASON, text_bytes, with_reason
from llmpipe.io import DocumentWriter, read_document_batches, read_schema
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
    batch_size: int | None = None,
) -> StageStats:
    """Read a shard, apply ``step`` to each document, write kept, rejects and stats.

    ``output_schema`` defaults to the input's columns (a filter); a step that changes the
    columns (extraction) names its output schema. An empty result is still written with
    its schema, and the stats say the shard came out empty. ``extra``, called once the shard
    is done, returns a step's own counts (lines removed, languages seen) for ``stats.extra``.
    ``batch_size`` (default ``llmpipe.io.BATCH_SIZE``) is the documents held at once.
    """
    stats = StageStats(stage=stage, shard=shard or _shard_name(input_path))
    input_schema = read_schema(input_path)
    with contextlib.ExitStack() as outputs:  # both files appear only if the whole shard is done
        kept_out = outputs.enter_context(DocumentWriter(output_path, output_schema or input_schema, batch_size))
        rejects_out = (
            outputs.enter_context(DocumentWriter(rejects_path, with_reason(input_schema), batch_size))
            if rejects_path is not None
            else None
        )
        for docs in read_document_batches(input_path, batch_size=batch_size):
            kept, rejected = apply_step(docs, step, stats)
            kept_out.write(kept)
            if rejects_out is not None:
                rejects_out.write(rejected)
    if extra is not None:
        stats.extra.update(extra())
    if not stats.docs_out:
        stats.extra["empty_output"] = True
    stats.record_peak_rss()
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
