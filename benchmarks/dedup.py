"""Dedup throughput: MinHash signature docs/s of llmpipe's Cython core vs datasketch, plus LSH + clustering.

One run, the same documents (~600 words each, 112 permutations, xxh32), single process:
llmpipe from raw text; datasketch one ``update()`` per shingle (on a subset: it is slow);
datasketch ``MinHash.bulk`` with and without the Python shingling it needs; then the band,
cluster jobs over the signature files, and datasketch's ``MinHashLSH`` insert + query for scale.

    python benchmarks/dedup.py [--docs 3000] [--words 600] [--repeat 3]
"""
from __future__ import annotations

import argparse
import random
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--words", type=int, default=600)
    parser.add_argument("--update-docs", type=int, default=30, help="subset for the per-shingle update() run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

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
