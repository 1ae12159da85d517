"""Dedup: exact (normalized-text hash) and MinHash-LSH near-duplicate removal across all shards.

Four datatrove-style steps: signatures per shard -> candidate pairs per LSH band -> union-find
clusters (one job) -> filter per shard. The hot loop is the Cython core ``llmpipe._minhash``.

Each step is its own stage module, with its own ``add_arguments`` and ``run``: ``signatures``
(``dedup-signatures``), ``buckets`` (``dedup-buckets``), ``clusters`` (``dedup-clusters``) and
``filter`` (``dedup-filter``). What they share (settings, the files they hand each other,
union-find, the CLI wrapper) is in ``common``.

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
