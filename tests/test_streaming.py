"""Bounded memory in the data stages: a shard larger than the batch comes out equal to a one-batch
run (in row groups of the batch), each stage's own peak-memory report stays small while a whole
shard would not; dedup's bucket verification stays linear on a 20k-member bucket."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llmpipe.io
from llmpipe.cli import main
from llmpipe.data.dedup import buckets
from llmpipe.data.dedup.common import Params, Signatures, write_signatures
from llmpipe.data.documents import RAW, TEXT
from llmpipe.io import DocumentWriter, read_batches, read_json
from tests.conftest import WORLD

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "config.yaml")
SHARD_STAGES = [  # (command, input stage, output stage), as workflow/rules/data.smk chains them
    ("url-filter", "ingest", "url_filter"),
    ("extract", "url_filter", "extract"),
    ("quality", "extract", "quality"),
]
VOLATILE = {"wall_seconds", "peak_rss_mb"}
DEDUP = {"bands": 14, "rows": 8, "threshold": 0.7, "ngram": 5, "seed": 1, "hash": "xxh32", "exact": True, "near": True}
PARAMS = Params.from_config(DEDUP)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def reset_peak_rss() -> float | None:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: ``clear_refs`` 5), so the
    next stage's ``peak_rss_mb`` is its own; returns that RSS (MiB), or None where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return rss_mb()
    except OSError:
        return None


def without_timings(stats: dict) -> dict:
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in stats.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def raw_shard(tmp_path_factory) -> Path:
    """One ingested toy-web shard (~100 RAW documents of every kind)."""
    root = tmp_path_factory.mktemp("web")
    warc = root / "web-0.warc.gz"
    toyweb = json.dumps({"seed": 5, "files": 1, "articles": 80})
    assert main(["toyweb", "--params", toyweb, "--world", WORLD, "--warc", str(warc),
                 "--truth", str(root / "truth.parquet"), "--stats", str(root / "toyweb.json")]) == 0
    out = root / "ingest/docs/web-0.parquet"
    assert main(["ingest", "--config", CONFIG, "--input", str(warc), "--output", str(out),
                 "--stats", str(root / "ingest.json")]) == 0
    return out


def run_chain(raw: Path, root: Path, batch_size: int, monkeypatch) -> dict[str, float | None]:
    """url-filter -> extract -> quality -> dedup (one shard) -> split with ``batch_size``; each
    stage's peak-RSS growth over its start (MiB), where the peak can be reset."""
    monkeypatch.setattr(llmpipe.io, "BATCH_SIZE", batch_size)
    (root / "ingest/docs").mkdir(parents=True)
    (root / "ingest/docs/web-0.parquet").symlink_to(raw)
    growth = {}
    for command, source, stage in SHARD_STAGES:
        start = reset_peak_rss()
        assert main([command, "--config", CONFIG, "--input", str(root / source / "docs/web-0.parquet"),
                     *(f"--{flag}={root / stage / kind / 'web-0'}.{ext}"
                       for flag, kind, ext in (("output", "docs", "parquet"), ("rejects", "rejects", "parquet"),
                                               ("stats", "stats", "json")))]) == 0
        peak = read_json(root / stage / "stats/web-0.json")["extra"]["peak_rss_mb"]
        growth[stage] = None if start is None else peak - start
    quality, sigs = root / "quality/docs/web-0.parquet", root / "dedup/web-0.npz"
    dedup = ["--config", CONFIG]
    assert main(["dedup-signatures", *dedup, "--input", str(quality), "--output", str(sigs)]) == 0
    pairs = [str(root / f"dedup/band{band}.parquet") for band in range(14)]
    for band, path in enumerate(pairs):
        assert main(["dedup-buckets", *dedup, "--band", str(band), "--input", str(sigs), "--output", path]) == 0
    clusters = root / "dedup/clusters.parquet"
    assert main(["dedup-clusters", *dedup, "--signatures", str(sigs), "--pairs", *pairs, "--output", str(clusters),
                 "--stats", str(root / "dedup/clusters.json")]) == 0
    assert main(["dedup-filter", *dedup, "--input", str(quality), "--clusters", str(clusters),
                 "--output", str(root / "dedup/docs.parquet"), "--rejects", str(root / "dedup/rejects.parquet"),
                 "--stats", str(root / "dedup/stats.json")]) == 0
    assert main(["split", "--config", CONFIG, "--input", str(root / "dedup/docs.parquet"),
                 *(f"--{name}={root / 'split' / name}.parquet" for name in ("train", "val", "test")),
                 "--stats", str(root / "split/stats.json")]) == 0
    return growth


def test_batched_stages_equal_one_batch(raw_shard, tmp_path, monkeypatch):
    one = run_chain(raw_shard, tmp_path / "one", 1_000_000, monkeypatch)
    seven = run_chain(raw_shard, tmp_path / "seven", 7, monkeypatch)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*")
                   if p.is_file() and p.parts[len((tmp_path / "one").parts)] != "ingest")
    assert len([f for f in files if f.suffix == ".parquet"]) == 26
    for name in files:
        a, b = tmp_path / "one" / name, tmp_path / "seven" / name
        if name.suffix == ".parquet":
            assert pq.read_table(a).equals(pq.read_table(b)), name
            assert pq.read_schema(a).equals(pq.read_schema(b)), name
        elif name.suffix == ".json":
            assert without_timings(read_json(a)) == without_timings(read_json(b)), name
        elif name.suffix == ".npz":
            with np.load(a) as x, np.load(b) as y:
                assert all(np.array_equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x.files), name
    docs_in = pq.ParquetFile(raw_shard).metadata.num_rows
    assert docs_in > 7 * 10  # the shard is many batches
    kept = pq.ParquetFile(tmp_path / "seven/url_filter/docs/web-0.parquet").metadata
    assert kept.num_row_groups == -(-kept.num_rows // 7)  # written as it was read: one row group a batch
    for stage, grew in seven.items():
        stats = read_json(tmp_path / "seven" / stage / "stats/web-0.json")
        assert 0 < stats["extra"]["peak_rss_mb"]
        if grew is not None:  # the stage's own peak, over what the process held when it started
            assert grew < 256, (stage, grew, one[stage])
    for path in ("dedup/stats.json", "dedup/clusters.json", "split/stats.json"):
        assert read_json(tmp_path / "seven" / path)["extra"]["peak_rss_mb"] > 0


def test_writer_row_groups_and_reader_batches(tmp_path):
    """Row groups end at a count or a character budget; a read batch never spans two of them;
    a shard nothing was written to is a valid empty file; a failed block leaves no file."""
    path = tmp_path / "docs.parquet"
    with DocumentWriter(path, TEXT, row_group_size=4, row_group_chars=2500) as out:
        out.write([{"id": str(i), "text": "x" * (10 if i < 4 else 1000), "other": 1} for i in range(10)])
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 3, 3]
    assert [len(b) for b in read_batches(path, batch_size=3)] == [3, 1, 3, 3]
    assert pq.read_table(path).column("id").to_pylist() == [str(i) for i in range(10)]
    with DocumentWriter(tmp_path / "empty.parquet", TEXT):
        pass
    assert pq.read_table(tmp_path / "empty.parquet").equals(TEXT.empty_table())
    with pytest.raises(KeyError):
        with DocumentWriter(tmp_path / "failed.parquet", TEXT) as out:
            out.write([{"id": "a"}])
            raise KeyError("the stage failed")
    with pytest.raises(pa.ArrowTypeError):  # the last row group cannot be written
        with DocumentWriter(tmp_path / "bad.parquet", TEXT) as out:
            out.write([{"id": 5}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.parquet", "empty.parquet"]


def fat_raw_shard(path: Path, docs: int, html_bytes: int) -> None:
    """A RAW shard of big pages, written a few at a time (this process never holds it whole)."""
    filler = "<p>The river runs past the old mill and into the town.</p>\n"
    with DocumentWriter(path, RAW, row_group_size=25) as out:
        for i in range(docs):
            html = f"<html><body><h1>Page {i}</h1>" + filler * (html_bytes // len(filler)) + "</body></html>"
            out.write([{"id": f"id-{i}", "url": f"http://river.example/{i}", "html": html, "charset": "utf-8",
                        "http_status": 200, "warc_file": "fat.warc.gz"}])


def test_url_filter_memory_is_a_batch_not_the_shard(tmp_path, monkeypatch):
    """A 100 MB shard: with batches of 20 documents (5 MB) the stage's own peak grows by a batch,
    with the whole shard as one batch by the shard (what every stage did before streaming)."""
    if reset_peak_rss() is None:
        pytest.skip("no /proc/self/clear_refs: cannot measure one stage's own peak in-process")
    fat = tmp_path / "fat.parquet"
    fat_raw_shard(fat, docs=400, html_bytes=250_000)
    growth = {}
    for batch_size in (20, 1_000_000):
        monkeypatch.setattr(llmpipe.io, "BATCH_SIZE", batch_size)
        out = tmp_path / str(batch_size)
        start = reset_peak_rss()
        assert main(["url-filter", "--config", CONFIG, "--input", str(fat), "--output", str(out / "docs.parquet"),
                     "--rejects", str(out / "rejects.parquet"), "--stats", str(out / "stats.json")]) == 0
        growth[batch_size] = read_json(out / "stats.json")["extra"]["peak_rss_mb"] - start
    assert pq.read_table(tmp_path / "20/docs.parquet").equals(pq.read_table(tmp_path / "1000000/docs.parquet"))
    assert growth[20] < 64, growth
    assert growth[1_000_000] > 150, growth  # the measurement sees a whole shard held


# --- dedup: verification against representatives ------------------------------------------------


def planted_bucket(groups: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``groups`` x ``size`` signatures, all sharing band 0 (one bucket of groups x size): each
    group is near copies of one page (5% of its values changed), the groups otherwise unrelated.
    Members are interleaved (group of row i is i % groups); returns (signatures, group)."""
    rng = np.random.default_rng(seed)
    n = groups * size
    group = np.arange(n) % groups
    pages = rng.integers(0, 2**32, (groups, PARAMS.num_perm), dtype=np.uint32)
    sigs = np.where(rng.random((n, PARAMS.num_perm)) < 0.05,
                    rng.integers(0, 2**32, (n, PARAMS.num_perm), dtype=np.uint32), pages[group])
    sigs[:, : PARAMS.rows] = pages[0, : PARAMS.rows]
    return sigs, group


def components(n: int, edges: list[tuple[int, int, float]]) -> np.ndarray:
    parent = list(range(n))
    for i, j, _ in edges:
        ri, rj = buckets._find(parent, i), buckets._find(parent, j)
        parent[max(ri, rj)] = min(ri, rj)
    return np.array([buckets._find(parent, x) for x in range(n)])


def test_a_20k_member_bucket_clusters_with_linear_comparisons():
    sigs, group = planted_bucket(groups=5, size=4000)
    n = len(sigs)
    edges, comparisons = buckets._bucket_edges(sigs, PARAMS.threshold)
    roots = components(n, edges)
    assert np.array_equal(roots, group)  # every group joined, at its first member, and no two groups
    assert len(edges) == n - 5  # a spanning forest
    assert all(s >= PARAMS.threshold for _, _, s in edges)
    # each member is compared with the 5 representatives, twice at most: linear (all pairs: 2e8)
    assert comparisons <= 2 * 5 * n


def test_a_20k_member_bucket_through_the_commands(tmp_path):
    sigs, group = planted_bucket(groups=5, size=4000, seed=1)
    paths = []
    for shard, rows in enumerate(np.array_split(np.arange(len(sigs)), 2)):
        paths.append(str(tmp_path / f"s{shard}.npz"))
        exact = np.arange(len(rows), dtype=np.uint64) + 10_000 * shard  # no exact copies
        write_signatures(paths[-1], f"s{shard}", [f"d{r}" for r in rows],
                         Signatures(sigs[rows], exact, np.full(len(rows), 50, dtype=np.uint32)), PARAMS)
    params = ["--params", json.dumps(DEDUP)]
    pairs = [str(tmp_path / f"band{band}.parquet") for band in range(PARAMS.bands)]
    for band, path in enumerate(pairs):
        assert main(["dedup-buckets", *params, "--band", str(band), "--input", *paths, "--output", path]) == 0
    assert main(["dedup-clusters", *params, "--signatures", *paths, "--pairs", *pairs,
                 "--output", str(tmp_path / "clusters.parquet"), "--stats", str(tmp_path / "stats.json")]) == 0
    table = pq.read_table(tmp_path / "clusters.parquet").to_pydict()
    assert table["id"] == [f"d{i}" for i in range(len(sigs))]  # every document is in a cluster
    assert table["cluster"] == group.tolist()
    assert [i for i, keep in enumerate(table["keep"]) if keep] == [0, 1, 2, 3, 4]
    assert set(table["reason"]) == {None, "near_duplicate"}
    stats = read_json(tmp_path / "stats.json")
    assert stats["extra"]["cluster_sizes"] == {"4000": 5} and stats["removed"] == {"near_duplicate": len(sigs) - 5}


def test_bucket_pairs_go_through_representatives():
    """The documented trade-off: members are verified against representatives, not each other.

    A chain a ~ m1 ~ m2 ~ b (each hop 32 of 112 values changed: similarity 0.71), no other pair
    similar. In the order a, b, m1, m2 both ends are representatives and the chain's middle link
    m1 ~ m2 (two non-representatives) is not verified; in the order a, m1, m2, b m2 is one, and
    the whole chain is joined."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**32, PARAMS.num_perm, dtype=np.uint32)
    hops = np.arange(16, PARAMS.num_perm).reshape(3, 32)  # values 0..15 (band 0 and more) are shared
    m1, m2, b = a.copy(), None, None
    m1[hops[0]] = rng.integers(0, 2**32, 32, dtype=np.uint32)
    m2 = m1.copy()
    m2[hops[1]] = rng.integers(0, 2**32, 32, dtype=np.uint32)
    b = m2.copy()
    b[hops[2]] = rng.integers(0, 2**32, 32, dtype=np.uint32)
    ends_first = np.stack([a, b, m1, m2])
    edges, _ = buckets._bucket_edges(ends_first, PARAMS.threshold)
    assert sorted((i, j) for i, j, _ in edges) == [(0, 2), (1, 3)]  # a-m1, b-m2: two parts
    in_order = np.stack([a, m1, m2, b])
    edges, _ = buckets._bucket_edges(in_order, PARAMS.threshold)
    assert sorted((i, j) for i, j, _ in edges) == [(0, 1), (1, 2), (2, 3)]
    assert all(abs(s - 80 / 112) < 1e-9 for _, _, s in edges)
