"""Stage `pack`: a split's token shards -> fixed-length rows for training (THE trainer's format).

``tokens.bin`` [n_seq, seq_len] (seq_len = context_length + 1; uint16 if vocab_size <= 65536
else uint32, little-endian), ``segments.bin`` uint16 [n_seq, seq_len] numbering the document
pieces of each row 1, 2, 3, ... with 0 at padding (which holds pad_id), and ``header.json``
{"format": "llmpipe-packed/1", dtype, n_seq, seq_len, context_length, vocab_size, bos_id,
eos_id, pad_id, method, stats}. Methods: `concat` joins the documents (each starts with
<|bos|>) and cuts windows, padding only the last row; `best_fit` places whole documents into
rows, best-fit decreasing, splitting only documents longer than a row, padding row ends.
"""
from __future__ import annotations

import argparse
import bisect
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmpipe.config import stage_params
from llmpipe.io import atomic_path, read_json, write_json
from llmpipe.stats import StageStats

FORMAT = "llmpipe-packed/1"
Piece = tuple[int, int]  # (start, end) in the concatenated token stream


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--input", nargs="+", required=True, help="token shard headers ({shard}.json)")
    parser.add_argument("--tokens", required=True, help="output tokens.bin")
    parser.add_argument("--segments", required=True, help="output segments.bin")
    parser.add_argument("--header", required=True, help="output header.json")


def concat_rows(doc_offsets: np.ndarray, seq_len: int) -> list[list[Piece]]:
    """Cut the stream into consecutive windows; a document crossing a cut becomes two pieces."""
    total = int(doc_offsets[-1])
    rows = []
    for start in range(0, total, seq_len):
        end = min(start + seq_len, total)
        first = int(np.searchsorted(doc_offsets, start, side="right")) - 1
        last = int(np.searchsorted(doc_offsets, end, side="left"))
        rows.append([(max(int(doc_offsets[d]), start), min(int(doc_offsets[d + 1]), end)) for d in range(first, last)])
    return rows


def best_fit(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of item indices: each item in turn goes into the bin it leaves the least space in
    (the earliest such bin on ties), or a new one if none has room. Items must fit a bin."""
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted; full bins leave it
    for item, size in enumerate(sizes):
        if not 0 < size <= capacity:
            raise ValueError(f"best_fit: item {item} has size {size}, outside 1..{capacity}")
        at = bisect.bisect_left(free, (size, -1))
        if at == len(free):
            bins.append([item])
            space, where = capacity - size, len(bins) - 1
        else:
            space, where = free.pop(at)
            bins[where].append(item)
            space -= size
        if space > 0:
            bisect.insort(free, (space, where))
    return bins


def best_fit_rows(doc_offsets: np.ndarray, seq_len: int) -> list[list[Piece]]:
    """Split documents longer than a row into full rows plus a remainder, then place the
    pieces longest first into the row that leaves the least space (a new row if none fits)."""
    rows: list[list[Piece]] = []
    pieces: list[Piece] = []
    for start, end in zip(doc_offsets[:-1].tolist(), doc_offsets[1:].tolist()):
        while end - start > seq_len:
            rows.append([(start, start + seq_len)])
            start += seq_len
        if end > start:
            pieces.append((start, end))
    pieces.sort(key=lambda p: (p[0] - p[1], p[0]))  # longest first, stream order on ties
    bins = best_fit([end - start for start, end in pieces], seq_len)
    return rows + [[pieces[i] for i in items] for items in bins]


def fill(rows: list[list[Piece]], stream: np.ndarray, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Materialise rows of pieces as (tokens, segments) arrays [len(rows), seq_len]."""
    tokens = np.full((len(rows), seq_len), pad_id, dtype=stream.dtype)
    segments = np.zeros((len(rows), seq_len), dtype="<u2")
    for r, row in enumerate(rows):
        at = 0
        for k, (start, end) in enumerate(row, 1):
            tokens[r, at : at + end - start] = stream[start:end]
            segments[r, at : at + end - start] = k
            at += end - start
    return tokens, segments


def load_stream(headers: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The split's tokens concatenated, document offsets into them, and the shared header."""
    streams, offsets, shift, meta = [], [np.zeros(1, np.int64)], 0, None
    for path in headers:
        header = read_json(path)
        keys = ("dtype", "vocab_size", "bos_id", "eos_id", "pad_id")
        if meta is None:
            meta = {k: header[k] for k in keys}
        elif any(header[k] != meta[k] for k in keys):
            raise ValueError(f"{path}: header {[header[k] for k in keys]} differs from the other shards' {meta}")
        base = Path(path).parent
        tokens = np.fromfile(base / header["tokens"], dtype=np.dtype(header["dtype"]).newbyteorder("<"))
        doc = np.load(base / header["offsets"])
        if len(tokens) != header["count"] or doc[-1] != len(tokens):
            raise ValueError(f"{path}: {header['tokens']} holds {len(tokens)} tokens, header says {header['count']}")
        streams.append(tokens)
        offsets.append(doc[1:] + shift)
        shift += len(tokens)
    if meta is None:
        raise ValueError("pack needs at least one token shard")
    return np.concatenate(streams), np.concatenate(offsets), meta


def pack(stream: np.ndarray, doc_offsets: np.ndarray, context_length: int, method: str, pad_id: int):
    """(tokens, segments, stats extra) for one split."""
    seq_len = context_length + 1
    rows = concat_rows(doc_offsets, seq_len) if method == "concat" else best_fit_rows(doc_offsets, seq_len)
    tokens, segments = fill(rows, stream, seq_len, pad_id)
    n_docs = len(doc_offsets) - 1
    starts = np.array([start for row in rows for start, _ in row], dtype=np.int64)
    pieces_per_doc = np.bincount(np.searchsorted(doc_offsets, starts, side="right") - 1, minlength=n_docs)
    extra = {
        "method": method,
        "n_seq": len(rows),
        "tokens": int(doc_offsets[-1]),
        "padding_tokens": int((segments == 0).sum()),
        "padding_fraction": round(float((segments == 0).mean()), 6) if len(rows) else 0.0,
        "docs_cut": int((pieces_per_doc > 1).sum()),
        "docs_cut_fraction": round(float((pieces_per_doc > 1).mean()), 6) if n_docs else 0.0,
    }
    return tokens, segments, extra


def run(args: argparse.Namespace, stage: str) -> int:
    params = stage_params(args.params, args.config, "pack")
    stats = StageStats(stage=stage, shard=Path(args.header).parent.name)
    stream, doc_offsets, meta = load_stream(args.input)
    tokens, segments, extra = pack(stream, doc_offsets, params["context_length"], params["method"], meta["pad_id"])
    stats.docs_in = stats.docs_out = len(doc_offsets) - 1
    stats.extra.update(extra)
    with atomic_path(args.tokens) as tmp:
        tokens.tofile(tmp)
    with atomic_path(args.segments) as tmp:
        segments.tofile(tmp)
    write_json(args.header, {
        "format": FORMAT,
        **meta,
        "n_seq": len(tokens),
        "seq_len": params["context_length"] + 1,
        "context_length": params["context_length"],
        "method": params["method"],
        "stats": stats.to_dict(),
    })
    return 0
