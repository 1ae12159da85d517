"""Ingest streams: documents are written as Parquet row groups of ``batch_docs`` documents (or
``batch_bytes`` of HTML) without changing the table, and the stage's own peak memory (its
``extra.peak_rss_mb``) stays a batch's worth on a shard far larger than one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from llmpipe.cli import main
from llmpipe.data.documents import RAW
from tests.warc_fixtures import big_shard, members, page, response, warcinfo, write

PAGE_BYTES = 2_500_000


def run_ingest(warc: Path, out: Path, own_process: bool = False, **params) -> dict:
    """``llmpipe ingest`` (in its own process: its peak memory is then its own); its stats."""
    stats = out.with_suffix(".json")
    args = ["ingest", "--params", json.dumps(params), "--input", str(warc), "--output", str(out),
            "--stats", str(stats)]
    if own_process:
        subprocess.run([sys.executable, "-m", "llmpipe.cli", *args], check=True, capture_output=True, text=True)
    else:
        assert main(args) == 0
    return json.loads(stats.read_text())


def without_timings(stats: dict) -> dict:
    extra = {k: v for k, v in stats["extra"].items() if k != "peak_rss_mb"}
    return {**{k: v for k, v in stats.items() if k != "wall_seconds"}, "extra": extra}


def test_row_groups_do_not_change_the_contents(tmp_path: Path):
    warc = write(tmp_path / "fifty.warc.gz",
                 members([warcinfo(), *(response(f"http://b.example/{i}", page(i)) for i in range(50))]))
    one = run_ingest(warc, tmp_path / "one.parquet")
    runs = {"seven": {"batch_docs": 7}, "bytes": {"batch_bytes": 20_000}}
    for name, params in runs.items():
        stats = run_ingest(warc, tmp_path / f"{name}.parquet", **params)
        assert without_timings(stats) == without_timings(one)
        assert pq.read_table(tmp_path / f"{name}.parquet").equals(pq.read_table(tmp_path / "one.parquet"))
        assert pq.read_schema(tmp_path / f"{name}.parquet").equals(RAW)
    meta = {name: pq.ParquetFile(tmp_path / f"{name}.parquet").metadata for name in ("one", "seven", "bytes")}
    assert meta["one"].num_rows == 50 and meta["one"].num_row_groups == 1
    assert meta["seven"].num_row_groups == 8  # 7 x 7 + 1
    assert 1 < meta["bytes"].num_row_groups < 50  # pages of ~2.6 kB: 8 a row group


def test_peak_memory_is_a_batch_not_the_shard(tmp_path: Path):
    """160 MB of HTML in 64 pages: with batches of 4 pages (10 MB) the stage's peak is that of
    a run on 8 pages; holding the shard (one batch of everything) costs hundreds of MB more."""
    small, big = tmp_path / "small.warc", tmp_path / "big.warc"
    big_shard(small, 8, PAGE_BYTES)
    total = big_shard(big, 64, PAGE_BYTES)
    assert total > 150_000_000

    base = run_ingest(small, tmp_path / "small.parquet", True, batch_docs=4)
    streamed = run_ingest(big, tmp_path / "big.parquet", True, batch_docs=4)
    whole = run_ingest(big, tmp_path / "whole.parquet", True, batch_docs=1000, batch_bytes=10**12)

    assert streamed["docs_out"] == whole["docs_out"] == 64
    assert pq.ParquetFile(tmp_path / "big.parquet").metadata.num_row_groups == 16
    peak = {name: stats["extra"]["peak_rss_mb"] for name, stats in
            (("base", base), ("streamed", streamed), ("whole", whole))}
    assert peak["streamed"] < peak["base"] + 48, peak  # a shard 8x the small one costs no more
    assert peak["whole"] > peak["base"] + 150, peak  # the bound does measure holding the shard
