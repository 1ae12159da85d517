"""``llmpipe dedup-signatures``: normalization, shingles, the MinHash signatures and exact hashes
of one shard, written as its signature file.

The shard's texts are streamed (``llmpipe.io.BATCH_SIZE`` at a time); what is held is the
signatures (``num_perm`` x 4 bytes per document) and the ids, never the shard's text."""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import datasketch
import numpy as np
import xxhash

from llmpipe import _minhash
from llmpipe.data.dedup.common import HASHFUNCS, DedupError, Params, Signatures, run_stage, write_signatures
from llmpipe.data.stage import _shard_name
from llmpipe.io import open_parquet, read_document_batches
from llmpipe.stats import peak_rss_mb

SCHEME = "affine32"  # datasketch >= 2.0's default permutation scheme


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


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--input", required=True, help="a TEXT Parquet shard")
    parser.add_argument("--output", required=True, help="the shard's signatures (.npz)")


def run(args, stage: str) -> int:
    return run_stage(args, stage, _run)


def _run(args, stage: str, params: Params) -> None:
    with open_parquet(args.input) as file:
        total = file.metadata.num_rows
    # filled batch by batch: the signatures are held once, not once per batch plus a concatenation
    sigs = Signatures(
        np.empty((total, params.num_perm), dtype=np.uint32), np.empty(total, dtype=np.uint64),
        np.empty(total, dtype=np.uint32),
    )
    ids: list = []
    for docs in read_document_batches(args.input, columns=["id", "text"]):
        part = signatures([d["text"] for d in docs], params)
        rows = slice(len(ids), len(ids) + len(docs))
        sigs.values[rows], sigs.exact[rows], sigs.shingles[rows] = part.values, part.exact, part.shingles
        ids += [d["id"] for d in docs]
    if len(ids) != total:
        raise DedupError(f"{args.input}: read {len(ids)} documents, its metadata says {total}")
    write_signatures(args.output, _shard_name(args.input), ids, sigs, params)
    print(
        f"{stage} {args.input}: {len(ids)} documents, {int((sigs.shingles == 0).sum())} without words;"
        f" peak RSS {peak_rss_mb():.0f} MiB"
    )
