"""Stage `tokenizer`: train the BPE tokenizer on the train split, export it, measure it on val.

Writes our tokenizer.json, the Hugging Face files beside ``--hf``, and stats (training time,
vocabulary, bytes per token on the validation split).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.parquet as pq

from llmpipe.config import stage_params
from llmpipe.stats import StageStats
from llmpipe.tokenizer.arrow import parquet_text_batches
from llmpipe.tokenizer.bpe import GPT4_PATTERN, Tokenizer
from llmpipe.tokenizer.hf import export_hf

# config `tokenizer.pattern` names a preset or is a regex of its own
PATTERNS = {
    "gpt4": GPT4_PATTERN,
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--train", nargs="+", required=True, help="train split Parquet shards")
    parser.add_argument("--val", nargs="*", default=[], help="val split shards (for bytes/token)")
    parser.add_argument("--output", required=True, help="our tokenizer.json")
    parser.add_argument("--hf", required=True, help="Hugging Face tokenizer.json (siblings beside it)")
    parser.add_argument("--stats", required=True)
    parser.add_argument("--threads", type=int, default=2)


def bytes_per_token(tok: Tokenizer, paths: list[str], threads: int) -> tuple[int, int]:
    """(UTF-8 bytes, tokens) of the documents in `paths`."""
    nbytes = ntokens = 0
    for path in paths:
        for buf, offsets in parquet_text_batches(path):
            ids, _ = tok.encode_utf8(buf, offsets, num_threads=threads)
            nbytes += int(offsets[-1] - offsets[0])
            ntokens += len(ids)
    return nbytes, ntokens


def run(args: argparse.Namespace, stage: str) -> int:
    params = stage_params(args.params, args.config, "tokenizer")
    stats = StageStats(stage=stage)
    pattern = PATTERNS.get(params["pattern"], params["pattern"])
    stats.docs_in = stats.docs_out = sum(pq.ParquetFile(p).metadata.num_rows for p in args.train)
    started = time.perf_counter()
    tok = Tokenizer.train(
        [Path(p) for p in args.train], params["vocab_size"], pattern, params["special_tokens"],
        num_threads=args.threads, progress=True,
    )
    train_seconds = time.perf_counter() - started
    tok.save(args.output)
    export_hf(tok, Path(args.hf).parent)
    val_bytes, val_tokens = bytes_per_token(tok, args.val, args.threads)
    stats.extra.update(
        training_seconds=round(train_seconds, 3),
        vocab_size=tok.vocab_size,
        vocab_size_requested=params["vocab_size"],
        merges=len(tok.merges),
        pattern=params["pattern"],
        val_bytes=val_bytes,
        val_tokens=val_tokens,
        val_bytes_per_token=round(val_bytes / val_tokens, 4) if val_tokens else None,
    )
    stats.write(args.stats)
    return 0
