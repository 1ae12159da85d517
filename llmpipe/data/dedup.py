"""Dedup: exact (normalized-text hash) and MinHash-LSH near-duplicate removal across all shards.

Four datatrove-style steps: signatures per shard -> candidate pairs per LSH band -> union-find
clusters (one job) -> filter per shard. The hot loop is the Cython core ``llmpipe._minhash``.

Normalization: NFKC, lowercase, whitespace-separated tokens with every non-alphanumeric
character removed (``str.split`` / ``str.isalnum``), tokens left empty dropped. Shingles are the
word n-grams joined by single spaces (UTF-8); a text with fewer words than ``ngram`` is one
shingle; a text with no words has no signature and is never a duplicate.

Signatures equal datasketch's ``MinHash(num_perm=bands*rows, seed=seed, hashfunc=H)`` (its
default ``affine32`` scheme) with H = ``xxhash.xxh32_intdigest`` (``hash: xxh32``, fast, in C)
or datasketch's default ``sha1_hash32`` (``hash: sha1``, Python speed); ``to_datasketch`` turns
one into a ``LeanMinHash`` that ``MinHashLSH`` indexes.

Survivor rule: in every cluster the document first in (shard name, row) order is kept. A removed
document is an ``exact_duplicate`` when its normalized text equals the survivor's, else a
``near_duplicate``.
"""
from __future__ import annotations

import itertools
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import datasketch
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from datasketch.hashfunc import sha1_hash32

from llmpipe import _minhash
from llmpipe.config import ConfigError, stage_params
from llmpipe.data.stage import Drop, Step, _shard_name, run_shard
from llmpipe.io import atomic_path, read_documents
from llmpipe.stats import StageStats

SECTION = "dedup"
SCHEME = "affine32"  # datasketch >= 2.0's default permutation scheme
HASHFUNCS = {"xxh32": xxhash.xxh32_intdigest, "sha1": sha1_hash32}
EXACT, NEAR = "exact_duplicate", "near_duplicate"
PAIRS = pa.schema(
    [
        ("shard_a", pa.string()),
        ("row_a", pa.int64()),
        ("shard_b", pa.string()),
        ("row_b", pa.int64()),
        ("similarity", pa.float32()),  # estimated Jaccard: the fraction of equal signature values
        ("kind", pa.string()),  # "exact" (same normalized-text hash) or "near" (LSH band)
    ]
)
CLUSTERS = pa.schema(
    [
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("cluster", pa.int64()),  # clusters numbered in the order of their survivors
        ("keep", pa.bool_()),
        ("reason", pa.string()),  # null for the survivor
    ]
)


class DedupError(ValueError):
    """Inconsistent dedup inputs (mismatched settings, stale files); the message names the file."""


@dataclass(frozen=True)
class Params:
    bands: int
    rows: int
    threshold: float
    ngram: int
    seed: int
    hash: str
    exact: bool
    near: bool

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @classmethod
    def from_config(cls, section: dict) -> "Params":
        try:
            params = cls(**{name: section[name] for name in cls.__dataclass_fields__})
        except KeyError as err:
            raise ConfigError(f"config key 'dedup.{err.args[0]}' is missing") from None
        if params.hash not in HASHFUNCS:
            raise ConfigError(f"config key 'dedup.hash': {params.hash!r} is not one of {sorted(HASHFUNCS)}")
        return params

    def meta(self) -> dict:
        """The settings a signature file must share with the jobs that read it."""
        return {"num_perm": self.num_perm, "seed": self.seed, "ngram": self.ngram, "hash": self.hash}


# --- normalization and signatures ---------------------------------------------------------------


def case_fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def normalize(text: str) -> str:
    """The normalized text that is hashed (the C core computes the same bytes in one pass)."""
    tokens = ("".join(filter(str.isalnum, token)) for token in case_fold(text).split())
    return " ".join(token for token in tokens if token)


def shingles(text: str, ngram: int) -> list[bytes]:
    """Word ``ngram``-shingles of the normalized text, UTF-8 (what datasketch's ``update`` gets)."""
    words = normalize(text).split(" ")
    if words == [""]:
        return []
    if len(words) < ngram:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)]


def permutations(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) for (num_perm, seed): taken from it, so the two always agree."""
    a, b = datasketch.MinHash(num_perm=params.num_perm, seed=params.seed, scheme=SCHEME).permutations
    return np.ascontiguousarray(a, dtype=np.uint32), np.ascontiguousarray(b, dtype=np.uint32)


@dataclass(frozen=True)
class Signatures:
    values: np.ndarray  # uint32 [n, num_perm]
    exact: np.ndarray  # uint64 [n]: xxh64 of the normalized UTF-8 text
    shingles: np.ndarray  # uint32 [n]: 0 means no words (never a duplicate)


def signatures(texts: Sequence[str | None], params: Params) -> Signatures:
    """MinHash signatures and exact hashes of ``texts`` (None counts as empty)."""
    a, b = permutations(params)
    texts = [text or "" for text in texts]
    if params.hash == "xxh32":
        return Signatures(*_minhash.signatures([case_fold(t) for t in texts], a, b, params.ngram))
    # The sha1 path: hash shingles in Python, permute and take minima in C.
    hashfunc = HASHFUNCS[params.hash]
    values = np.empty((len(texts), params.num_perm), dtype=np.uint32)
    counts = np.empty(len(texts), dtype=np.uint32)
    for i, text in enumerate(texts):
        hashes = np.array([hashfunc(s) for s in shingles(text, params.ngram)], dtype=np.uint32)
        values[i] = _minhash.permute_min(hashes, a, b)
        counts[i] = len(hashes)
    exact = np.array([xxhash.xxh64_intdigest(normalize(t).encode()) for t in texts], dtype=np.uint64)
    return Signatures(values, exact, counts)


def to_datasketch(values: np.ndarray, params: Params) -> datasketch.LeanMinHash:
    """One signature as a datasketch ``LeanMinHash`` (for ``MinHashLSH`` and its storages)."""
    return datasketch.LeanMinHash(seed=params.seed, hashvalues=values, scheme=SCHEME)


# --- signature files ----------------------------------------------------------------------------


def write_signatures(path: str | Path, shard: str, ids: list, sigs: Signatures, params: Params) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            shard=np.array(shard),
            ids=np.array([i or "" for i in ids], dtype=str),
            exact=sigs.exact,
            signatures=sigs.values,
            shingles=sigs.shingles,
            **{f"meta_{key}": np.array(value) for key, value in params.meta().items()},
        )


def read_signatures(path: str | Path, params: Params, fields: Sequence[str]) -> dict:
    """The named arrays of a signature file (plus ``shard``), after checking its settings."""
    with np.load(path, allow_pickle=False) as npz:
        meta = {key: npz[f"meta_{key}"].item() for key in params.meta()}
        if meta != params.meta():
            raise DedupError(f"{path}: written with {meta}, but dedup config is {params.meta()}")
        return {"shard": str(npz["shard"]), **{name: npz[name] for name in fields}}


def _shards(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(shard, path) in shard-name order, the order that decides survivors."""
    named = []
    for path in paths:
        with np.load(path, allow_pickle=False) as npz:
            named.append((str(npz["shard"]), path))
    named.sort()
    for (a, path_a), (b, path_b) in zip(named, named[1:]):
        if a == b:
            raise DedupError(f"two signature files for shard {a!r}: {path_a}, {path_b}")
    return named


# --- candidate pairs per band -------------------------------------------------------------------


def _groups(keys: np.ndarray) -> list[np.ndarray]:
    """Row indices sharing a key (rows of ``keys``), for keys held twice or more, in row order."""
    if len(keys) < 2:
        return []
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    shared = np.flatnonzero(counts[inverse] >= 2)
    shared = shared[np.argsort(inverse[shared], kind="stable")]
    bounds = np.flatnonzero(np.diff(inverse[shared])) + 1
    return np.split(shared, bounds)


def _identical(sigs: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Edges from each member to the first one with the same signature; the distinct members."""
    first: dict[bytes, int] = {}
    edges = []
    for j, values in enumerate(sigs):
        holder = first.setdefault(values.tobytes(), j)
        if holder != j:
            edges.append((holder, j))
    return edges, list(first.values())


def _similar(sigs: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Verified edges among distinct signatures, as a spanning forest (connectivity, not all pairs)."""
    parent = list(range(len(sigs)))
    edges = []
    for j in range(1, len(sigs)):
        similarity = (sigs[:j] == sigs[j]).mean(axis=1)
        for i in np.flatnonzero(similarity >= threshold):
            ri, rj = _find(parent, int(i)), _find(parent, j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
                edges.append((int(i), j, float(similarity[i])))
    return edges


def _bucket_edges(sigs: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Verified duplicate edges among the members (rows of ``sigs``) of one LSH bucket."""
    edges, distinct = _identical(sigs)
    near = _similar(sigs[distinct], threshold)
    return [(i, j, 1.0) for i, j in edges] + [(int(distinct[i]), int(distinct[j]), s) for i, j, s in near]


def band_pairs(paths: Sequence[str], band: int, params: Params) -> pa.Table:
    """Verified duplicate pairs whose signatures agree on ``band`` (plus exact pairs in band 0).

    Two passes keep memory at one band per document: band values (and exact hashes) first, then
    full signatures only of the documents that share a bucket with another.
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
    shard_of, row_of = np.concatenate(shard_parts), np.concatenate(row_parts)
    groups = []
    if params.exact and band == 0:
        groups += [("exact", g) for g in _groups(np.concatenate(exact_parts))]
    if params.near:
        groups += [("near", g) for g in _groups(np.concatenate(key_parts, axis=0))]
    needed = np.unique(np.concatenate([g for _, g in groups])) if groups else np.empty(0, int)
    full = _load_rows(shards, params, shard_of[needed], row_of[needed])
    out = []
    for kind, members in groups:
        sigs = full[np.searchsorted(needed, members)]
        edges = (
            [(i, j, 1.0) for i, j in _identical(sigs)[0]]
            if kind == "exact"
            else _bucket_edges(sigs, params.threshold)
        )
        for i, j, similarity in edges:
            a, b = members[i], members[j]
            out.append((names[shard_of[a]], int(row_of[a]), names[shard_of[b]], int(row_of[b]), similarity, kind))
    return pa.Table.from_pylist([dict(zip(PAIRS.names, row)) for row in out], schema=PAIRS)


def _load_rows(shards: list[tuple[str, str]], params: Params, shard_of: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """Full signatures of the given (shard index, row) documents, in the given order."""
    full = np.empty((len(row_of), params.num_perm), dtype=np.uint32)
    for shard_index in np.unique(shard_of):
        where = np.flatnonzero(shard_of == shard_index)
        data = read_signatures(shards[shard_index][1], params, ["signatures"])
        full[where] = data["signatures"][row_of[where]]
    return full


# --- clusters -----------------------------------------------------------------------------------


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


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


# --- filter -------------------------------------------------------------------------------------


def duplicate_step(clusters_path: str | Path, shard: str) -> Step:
    """A step dropping the shard's non-survivors; rows are matched by position and checked by id."""
    table = pq.read_table(clusters_path, schema=CLUSTERS, filters=[("shard", "=", shard), ("keep", "=", False)])
    drops = {row: (doc_id, reason) for row, doc_id, reason in zip(*(table.column(c).to_pylist() for c in ("row", "id", "reason")))}
    rows = itertools.count()

    def step(doc: dict) -> dict | Drop:
        row = next(rows)
        if row not in drops:
            return doc
        doc_id, reason = drops[row]
        if (doc.get("id") or "") != doc_id:
            raise DedupError(
                f"{clusters_path}: shard {shard!r} row {row} has id {doc.get('id')!r}, clusters say {doc_id!r} (stale?)"
            )
        return Drop(reason)

    return step


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser, stage: str) -> None:
    if stage == "dedup-signatures":
        parser.add_argument("--input", required=True, help="a TEXT Parquet shard")
        parser.add_argument("--output", required=True, help="the shard's signatures (.npz)")
    elif stage == "dedup-buckets":
        parser.add_argument("--band", required=True, type=int, help="the LSH band, 0 .. bands-1")
        parser.add_argument("--input", required=True, nargs="+", help="every shard's signatures")
        parser.add_argument("--output", required=True, help="the band's pairs (Parquet)")
    elif stage == "dedup-clusters":
        parser.add_argument("--signatures", required=True, nargs="+", help="every shard's signatures")
        parser.add_argument("--pairs", required=True, nargs="+", help="every band's pairs")
        parser.add_argument("--output", required=True, help="clusters Parquet (shard, row, id, cluster, keep, reason)")
        parser.add_argument("--stats", required=True, help="the clustering's stats.json")
    else:
        parser.add_argument("--input", required=True, help="a TEXT Parquet shard")
        parser.add_argument("--clusters", required=True, help="the clusters Parquet")
        parser.add_argument("--output", required=True, help="the deduplicated shard")
        parser.add_argument("--rejects", required=True, help="removed documents with their reason")
        parser.add_argument("--stats", required=True, help="the shard's stats.json")


def run(args, stage: str) -> int:
    params = Params.from_config(stage_params(args.params, args.config, SECTION))
    try:
        _run(args, stage, params)
    except DedupError as err:
        print(f"{stage}: {err}", file=sys.stderr)
        return 1
    return 0


def _run(args, stage: str, params: Params) -> None:
    if stage == "dedup-signatures":
        docs = read_documents(args.input, columns=["id", "text"])
        sigs = signatures([d["text"] for d in docs], params)
        write_signatures(args.output, _shard_name(args.input), [d["id"] for d in docs], sigs, params)
        print(f"{stage} {args.input}: {len(docs)} documents, {int((sigs.shingles == 0).sum())} without words")
    elif stage == "dedup-buckets":
        table = band_pairs(args.input, args.band, params)
        with atomic_path(args.output) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        print(f"{stage} band {args.band}: {table.num_rows} pairs {dict(Counter(table.column('kind').to_pylist()))}")
    elif stage == "dedup-clusters":
        stats = StageStats(stage=stage)
        table = clusters(args.signatures, args.pairs, params, stats)
        with atomic_path(args.output) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        data = stats.write(args.stats)
        print(f"{stage}: {data['extra']['clusters']} clusters, removed {data['removed']}")
    else:
        shard = _shard_name(args.input)
        stats = run_shard(SECTION, duplicate_step(args.clusters, shard), args.input, args.output, args.stats, args.rejects, shard=shard)
        print(f"{stage} {args.input}: kept {stats.docs_out} of {stats.docs_in}, removed {dict(stats.removed)}")
