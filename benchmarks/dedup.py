"""Dedup throughput: MinHash signature docs/s of llmpipe's Cython core vs datasketch, plus LSH + clustering.

One run, the same documents (~600 words each, 112 permutations, xxh32), single process:
llmpipe from raw text; datasketch one ``update()`` per shingle (on a subset: it is slow);
datasketch ``MinHash.bulk`` with and without the Python shingling it needs; then the band,
cluster jobs over the signature files, and datasketch's ``MinHashLSH`` insert + query for scale.

    python benchmarks/dedup.py [--docs 3000] [--words 600] [--repeat 3]

``--scale`` instead times the LSH half at scale: synthetic signatures (no text) for 100k, 300k
and 1M documents in shards of 100k, with planted buckets that grow with the corpus (a tenth of
the documents each: exact copies of one page, near copies of one page, unrelated pages sharing
one band's values, a "template"; at 1M each is a 100k-member bucket), near-copy pairs, and
unique pages. Every band job and the cluster job run as ``llmpipe`` subprocesses; each prints
its wall time and peak RSS (``/usr/bin/time``), and the clusters are checked against the plan.

    python benchmarks/dedup.py --scale [--sizes 100000,300000,1000000]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasketch
import numpy as np
import pyarrow.parquet as pq
import xxhash

from llmpipe.data.dedup.buckets import band_pairs
from llmpipe.data.dedup.clusters import clusters
from llmpipe.data.dedup.common import Params, Signatures, write_signatures
from llmpipe.data.dedup.signatures import shingles, signatures, to_datasketch
from llmpipe.io import read_json
from llmpipe.stats import StageStats

PARAMS = Params(bands=14, rows=8, threshold=0.7, ngram=5, seed=1, hash="xxh32", exact=True, near=True)
SHARDS = 4


def documents(n: int, words: int, seed: int) -> list[str]:
    """Zipf-distributed words in sentences; a tenth are exact copies and a tenth near copies."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(20000)
    ]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    docs = []
    for i in range(n):
        if i >= 10 and i % 10 == 0:
            docs.append(docs[rng.randrange(len(docs))].upper())
        elif i >= 10 and i % 10 == 5:
            tokens = docs[rng.randrange(len(docs))].split()
            start = rng.randrange(len(tokens) - 12)
            tokens[start : start + 12] = rng.choices(vocab, k=12)
            docs.append(" ".join(tokens))
        else:
            tokens = rng.choices(vocab, weights, k=words)
            docs.append(" ".join(t + "." if rng.random() < 0.08 else t for t in tokens).capitalize())
    return docs


def best_rate(fn: Callable[[], object], count: int, repeat: int) -> tuple[float, object]:
    """Items per second of the fastest of ``repeat`` runs (the machine is shared), and a result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return count / best, result


def per_shingle(texts: list[str]) -> list[np.ndarray]:
    out = []
    for text in texts:
        minhash = datasketch.MinHash(num_perm=PARAMS.num_perm, seed=PARAMS.seed, hashfunc=xxhash.xxh32_intdigest)
        for shingle in shingles(text, PARAMS.ngram):
            minhash.update(shingle)
        out.append(minhash.hashvalues)
    return out


def bulk(shingle_lists: list[list[bytes]]) -> list[np.ndarray]:
    minhashes = datasketch.MinHash.bulk(
        shingle_lists, num_perm=PARAMS.num_perm, seed=PARAMS.seed, hashfunc=xxhash.xxh32_intdigest
    )
    return [m.hashvalues for m in minhashes]


def lsh_and_clusters(workdir: Path, texts: list[str], sigs: Signatures) -> dict:
    """Every band job and the cluster job over ``SHARDS`` signature files; returns the stats."""
    paths = []
    for shard, rows in enumerate(np.array_split(np.arange(len(texts)), SHARDS)):
        part = Signatures(sigs.values[rows], sigs.exact[rows], sigs.shingles[rows])
        paths.append(str(workdir / f"s{shard}.npz"))
        write_signatures(paths[-1], f"s{shard}", [str(r) for r in rows], part, PARAMS)
    pair_paths = []
    for band in range(PARAMS.bands):
        pair_paths.append(str(workdir / f"band{band}.parquet"))
        pq.write_table(band_pairs(paths, band, PARAMS), pair_paths[-1])
    stats = StageStats(stage="dedup-clusters")
    clusters(paths, pair_paths, PARAMS, stats)
    return stats.to_dict()


def datasketch_lsh(sigs: Signatures) -> int:
    """Insert every signature into datasketch's MinHashLSH and query it; documents with a match."""
    lsh = datasketch.MinHashLSH(
        threshold=PARAMS.threshold, num_perm=PARAMS.num_perm, params=(PARAMS.bands, PARAMS.rows)
    )
    matched = 0
    for i, values in enumerate(sigs.values):
        minhash = to_datasketch(values, PARAMS)
        matched += bool(lsh.query(minhash))
        lsh.insert(i, minhash)
    return matched


# --- --scale ------------------------------------------------------------------------------------

SHARD_DOCS = 100_000
CONFIG = {"bands": PARAMS.bands, "rows": PARAMS.rows, "threshold": PARAMS.threshold, "ngram": PARAMS.ngram,
          "seed": PARAMS.seed, "hash": PARAMS.hash, "exact": PARAMS.exact, "near": PARAMS.near}


def scale_shard(start: int, count: int, seed: int) -> Signatures:
    """Signatures of documents ``start .. start+count``, by ``i % 10``: 0 exact copies of one page,
    1 near copies of one page (5% of values changed), 2 unrelated pages sharing band 0 (a template),
    3 and 4 a near-copy pair, 5..9 unique pages. The same for any shard split."""
    planted = np.random.default_rng(seed)
    exact_page, near_page, template = (planted.integers(0, 2**32, PARAMS.num_perm, dtype=np.uint32) for _ in range(3))
    exact_hash = planted.integers(0, 2**63, dtype=np.uint64)
    rng = np.random.default_rng([seed, start])
    values = rng.integers(0, 2**32, (count, PARAMS.num_perm), dtype=np.uint32)
    exact = rng.integers(0, 2**63, count, dtype=np.uint64)
    kind = (start + np.arange(count)) % 10
    edits = rng.random((count, PARAMS.num_perm)) < 0.05
    values[kind == 0] = exact_page
    exact[kind == 0] = exact_hash
    near = kind == 1
    values[near] = np.where(edits[near], values[near], near_page)
    values[kind == 2, : PARAMS.rows] = template[: PARAMS.rows]
    second = np.flatnonzero(kind == 4)
    second = second[second > 0]  # a shard starts on a multiple of 10, so its pair's first half is in it
    values[second] = np.where(edits[second], values[second], values[second - 1])
    return Signatures(values, exact, np.full(count, 100, dtype=np.uint32))


def expected_clusters(n: int) -> dict:
    copies = len(range(0, n, 10))
    near = len(range(1, n, 10))
    pairs = len(range(4, n, 10))
    return {"clusters": int(copies > 1) + int(near > 1) + pairs,
            "removed": {"exact_duplicate": copies - 1, "near_duplicate": near - 1 + pairs}}


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one subprocess. /usr/bin/time measures the command
    itself; os.wait4's ru_maxrss would include this process's own peak, inherited across exec."""
    timer = shutil.which("time") or "/usr/bin/time"
    start = time.perf_counter()
    if os.path.exists(timer):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
            done = subprocess.run([timer, "-o", out.name, "-f", "%M", *cmd], capture_output=True, text=True)
            peak = int(out.read().split()[-1]) / 1024 if done.returncode == 0 else float("nan")
    else:  # no GNU time: fall back to the child's rusage (an upper bound, see above)
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        done = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), process.stdout.read(),
                                           process.stderr.read())
        peak = usage.ru_maxrss / 1024
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return wall, peak, done.stdout


def scale_run(n: int, workdir: Path, seed: int) -> dict:
    """Write the signature shards of ``n`` documents, run the band jobs and the cluster job."""
    paths = []
    for shard, start in enumerate(range(0, n, SHARD_DOCS)):
        count = min(SHARD_DOCS, n - start)
        paths.append(str(workdir / f"s{shard:03d}.npz"))
        write_signatures(paths[-1], f"s{shard:03d}", [str(i) for i in range(start, start + count)],
                         scale_shard(start, count, seed), PARAMS)
    llmpipe = [sys.executable, "-m", "llmpipe.cli"]
    params = ["--params", json.dumps(CONFIG)]
    bands = []
    for band in range(PARAMS.bands):
        out = str(workdir / f"band{band}.parquet")
        bands.append(measured([*llmpipe, "dedup-buckets", *params, "--band", str(band), "--input", *paths,
                               "--output", out]))
    pair_paths = [str(workdir / f"band{band}.parquet") for band in range(PARAMS.bands)]
    stats_path = workdir / "clusters.stats.json"
    cluster = measured([*llmpipe, "dedup-clusters", *params, "--signatures", *paths, "--pairs", *pair_paths,
                        "--output", str(workdir / "clusters.parquet"), "--stats", str(stats_path)])
    stats = read_json(stats_path)
    want = expected_clusters(n)
    got = {"clusters": stats["extra"]["clusters"], "removed": stats["removed"]}
    if got != want:
        raise SystemExit(f"{n} documents: clusters {got}, planted {want}")
    return {"bands": bands, "clusters": cluster, "stats": stats}


def scale(sizes: list[int], seed: int) -> None:
    startup, _, _ = measured([sys.executable, "-m", "llmpipe.cli", "dedup-buckets", "--help"])
    print(f"synthetic signatures, {PARAMS.bands} bands x {PARAMS.rows} rows, shards of {SHARD_DOCS:,};"
          f" one subprocess per job (Python start + imports: {startup:.1f} s each)")
    print(f"{'documents':>10} {'buckets: 14 jobs':>17} {'slowest':>8} {'peak RSS':>9} {'clusters job':>13}"
          f" {'peak RSS':>9} {'largest bucket':>15}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            result = scale_run(n, Path(tmp), seed)
        walls = [wall for wall, _, _ in result["bands"]]
        peaks = [peak for _, peak, _ in result["bands"]]
        largest = max(int(out.split("(largest ")[1].split(")")[0]) for _, _, out in result["bands"])
        wall, peak, _ = result["clusters"]
        print(f"{n:>10,} {sum(walls):>15.1f} s {max(walls):>6.1f} s {max(peaks):>6.0f} MiB {wall:>11.1f} s"
              f" {peak:>6.0f} MiB {largest:>15,}", flush=True)
    print("clusters equal the planted ones at every size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--words", type=int, default=600)
    parser.add_argument("--update-docs", type=int, default=30, help="subset for the per-shingle update() run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", action="store_true", help="the LSH half on synthetic signatures at scale")
    parser.add_argument("--sizes", default="100000,300000,1000000", help="--scale: documents per run")
    args = parser.parse_args()
    if args.scale:
        scale([int(n) for n in args.sizes.split(",")], args.seed)
        return

    texts = documents(args.docs, args.words, args.seed)
    n = len(texts)
    ours, sigs = best_rate(lambda: signatures(texts, PARAMS), n, args.repeat)
    shingling, shingle_lists = best_rate(lambda: [shingles(t, PARAMS.ngram) for t in texts], n, args.repeat)
    bulk_only, bulk_values = best_rate(lambda: bulk(shingle_lists), n, args.repeat)
    bulk_total = 1 / (1 / shingling + 1 / bulk_only)
    subset = texts[: args.update_docs]
    update, update_values = best_rate(lambda: per_shingle(subset), len(subset), 1)
    assert np.array_equal(np.array(bulk_values), sigs.values), "signatures differ from datasketch's"
    assert np.array_equal(np.array(update_values), sigs.values[: len(subset)])
    with tempfile.TemporaryDirectory() as tmp:
        clustering, stats = best_rate(lambda: lsh_and_clusters(Path(tmp), texts, sigs), n, args.repeat)
    reference_lsh, matched = best_rate(lambda: datasketch_lsh(sigs), n, 1)

    words = np.mean([len(t.split()) for t in texts])
    print(f"{n} documents, {words:.0f} words each on average, {PARAMS.num_perm} permutations, xxh32, 1 process")
    rows = [
        ("datasketch update() per shingle", update),
        ("datasketch MinHash.bulk incl. shingling", bulk_total),
        ("datasketch MinHash.bulk (shingles given)", bulk_only),
        ("llmpipe signatures (from raw text)", ours),
    ]
    print(f"{'signatures':<44}{'docs/s':>10}{'vs bulk':>10}")
    for name, rate in rows:
        print(f"{name:<44}{rate:>10,.0f}{rate / bulk_only:>9.2f}x")
    print(f"{'LSH + clusters':<44}{'docs/s':>10}")
    print(f"{'llmpipe 14 band jobs + cluster job':<44}{clustering:>10,.0f}")
    print(f"{'datasketch MinHashLSH insert + query':<44}{reference_lsh:>10,.0f}")
    print(
        f"llmpipe found {stats['extra']['clusters']} clusters, removed {stats['removed']};"
        f" datasketch LSH matched {matched} documents to an earlier one"
    )


if __name__ == "__main__":
    main()
