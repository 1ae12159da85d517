"""Stage `tokenize`: one split shard of documents -> a flat token memmap with document offsets.

Each document becomes [<|bos|>] + its ids; empty documents are dropped (counted).
Outputs: ``{shard}.bin`` (little-endian uint16 when vocab_size <= 65536, else uint32),
``{shard}.idx.npy`` (int64 token offsets, n_docs + 1) and the ``{shard}.json`` header.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from llmpipe.io import atomic_path, write_json
from llmpipe.stats import StageStats
from llmpipe.tokenizer.arrow import parquet_text_batches
from llmpipe.tokenizer.bpe import Tokenizer

FORMAT = "llmpipe-tokens/1"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--tokenizer", required=True, help="our tokenizer.json")
    parser.add_argument("--input", required=True, help="a split shard (Parquet, column `text`)")
    parser.add_argument("--output", required=True, help="tokens .bin")
    parser.add_argument("--offsets", required=True, help="document offsets .idx.npy")
    parser.add_argument("--header", required=True, help="header .json (with the stage's stats)")
    parser.add_argument("--threads", type=int, default=2)


def with_bos(
    ids: np.ndarray, ends: np.ndarray, keep: np.ndarray, bos: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Prefix each kept document's ids with bos; return (tokens, offsets). Dropped
    documents must hold no ids."""
    lengths = np.diff(np.concatenate([[0], ends]))[keep] + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.empty(offsets[-1], dtype=dtype)
    is_bos = np.zeros(offsets[-1], dtype=bool)
    is_bos[offsets[:-1]] = True
    tokens[is_bos] = bos
    tokens[~is_bos] = ids
    return tokens, offsets


def tokenize_shard(
    tok: Tokenizer, path: str | os.PathLike, stats: StageStats, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    dtype = token_dtype(tok.vocab_size)
    parts, offsets_parts, shift = [], [np.zeros(1, np.int64)], 0
    for buf, offsets in parquet_text_batches(path):
        doc_bytes = np.diff(offsets)
        keep = doc_bytes > 0
        for nbytes in doc_bytes:
            stats.read(int(nbytes))
        for _ in range(int((~keep).sum())):
            stats.dropped("empty_text")
        ids, ends = tok.encode_utf8(buf, offsets, num_threads=threads)
        tokens, doc_offsets = with_bos(ids, ends, keep, tok.bos_id, dtype)
        for nbytes in doc_bytes[keep]:
            stats.kept(int(nbytes))
        parts.append(tokens)
        offsets_parts.append(doc_offsets[1:] + shift)
        shift += len(tokens)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), np.concatenate(offsets_parts)


def run(args: argparse.Namespace, stage: str) -> int:
    tok = Tokenizer.load(args.tokenizer)
    stats = StageStats(stage=stage, shard=os.path.basename(args.input).split(".", 1)[0])
    tokens, offsets = tokenize_shard(tok, args.input, stats, args.threads)
    with atomic_path(args.output) as tmp:
        tokens.tofile(tmp)
    with atomic_path(args.offsets) as tmp, open(tmp, "wb") as fh:
        np.save(fh, offsets)
    stats.extra.update(
        tokens=len(tokens), bytes_per_token=round(stats.bytes_out / max(1, len(tokens) - stats.docs_out), 4)
    )
    write_json(args.header, {
        "format": FORMAT,
        "dtype": tokens.dtype.name,  # little-endian
        "count": len(tokens),
        "n_docs": len(offsets) - 1,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "tokens": os.path.basename(args.output),
        "offsets": os.path.basename(args.offsets),
        "stats": stats.to_dict(),
    })
    return 0
