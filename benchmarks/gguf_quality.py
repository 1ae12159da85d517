"""What GGUF quantization costs: bits per byte on a packed split for the f32 model (llmpipe) and
its f16 and q8_0 GGUF exports run by llama.cpp (llama-cpp-python; ``pip install -e .[gguf]``).

    python benchmarks/gguf_quality.py results/rl results/pack/val [--rows 64]

Bits per byte as ``llmpipe evaluate`` counts them: nats of the ordinary-text targets (special
tokens carry no bytes and are left out) over their UTF-8 bytes, / ln 2. A packed row holds
pieces of several documents; with the model's document mask (the default) each piece is scored
as its own sequence, which is what the mask computes (RoPE is relative: the offset changes
nothing), and what llama.cpp, which has no document mask, can reproduce. All three formats
score the same pieces; the f32 figure also comes out of ``llmpipe evaluate``'s masked rows.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmpipe.io import read_json
from llmpipe.model.directory import CONFIG, load_model, load_tokenizer
from llmpipe.model.gguf_export import write_gguf
from llmpipe.train.data import PackedData


def pieces(data: PackedData, rows: int | None, document_mask: bool):
    """(inputs, targets) per scored sequence: targets are -1 at padding."""
    n = len(data) if rows is None else min(rows, len(data))
    for r in range(n):
        batch = data.batch(np.array([r]))
        inputs, targets, segments = batch.inputs[0], batch.targets[0], batch.segments[0]
        ids = segments.tolist()
        start = 0
        while start < len(ids):
            stop = start + 1
            while stop < len(ids) and (ids[stop] == ids[start] or not document_mask) and ids[stop] != 0:
                stop += 1
            if ids[start] != 0:
                yield inputs[start:stop].tolist(), targets[start:stop].tolist()
            start = stop


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def bits_per_byte(score, seqs, tokenizer) -> tuple[float, int, int]:
    """(bits per byte, tokens, bytes) with ``score(inputs) -> [T, V] logits``."""
    special = set(tokenizer.special_tokens.values())
    nats = n_bytes = n_tokens = 0
    for inputs, targets in seqs:
        logp = log_softmax(score(inputs))
        keep = [i for i, t in enumerate(targets) if t >= 0 and t not in special]
        nats -= sum(logp[i, targets[i]] for i in keep)
        n_bytes += len(tokenizer.decode_bytes([targets[i] for i in keep]))
        n_tokens += len(keep)
    return nats / max(n_bytes, 1) / math.log(2), n_tokens, n_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="llmpipe model directory (results/rl)")
    parser.add_argument("val", help="packed split directory (results/pack/val)")
    parser.add_argument("--rows", type=int, default=None, help="score only the first ROWS rows")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--work", help="directory for the GGUF files (default: a temporary one)")
    args = parser.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("needs llama-cpp-python: pip install -e .[gguf]", file=sys.stderr)
        return 2
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    document_mask = bool(read_json(Path(args.model) / CONFIG).get("document_mask", True))
    data = PackedData(args.val)
    seqs = list(pieces(data, args.rows, document_mask))
    print(f"{args.model} on {args.val}: {min(args.rows or len(data), len(data))} rows, {len(seqs)} sequences, "
          f"document mask {'on' if document_mask else 'off'}")

    @torch.no_grad()
    def score_f32(inputs: list[int]) -> np.ndarray:
        return model(torch.tensor([inputs]))[0][0].numpy()

    results = []
    started = time.perf_counter()
    results.append(("f32 (llmpipe)", *bits_per_byte(score_f32, seqs, tokenizer), None, time.perf_counter() - started))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for quant in ("f16", "q8_0"):
            path = write_gguf(model, tokenizer, work / f"model-{quant}.gguf", quant)
            llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=model.config.context_length,
                                  n_batch=model.config.context_length, n_threads=args.threads, verbose=False)

            def score_gguf(inputs: list[int], llm=llm) -> np.ndarray:
                llm.reset()
                llm.eval(inputs)
                return np.asarray(llm.scores[: len(inputs)])

            started = time.perf_counter()
            bpb = bits_per_byte(score_gguf, seqs, tokenizer)
            results.append((f"{quant} (llama.cpp)", *bpb, path.stat().st_size, time.perf_counter() - started))
            del llm
    base = results[0][1]
    print(f"{'format':<18} {'bits/byte':>10} {'vs f32':>10} {'tokens':>8} {'bytes':>8} {'file MB':>8} {'seconds':>8}")
    for name, bpb, tokens, nbytes, size, seconds in results:
        mb = f"{size / 1e6:.2f}" if size else "-"
        print(f"{name:<18} {bpb:>10.6f} {bpb - base:>+10.6f} {tokens:>8} {nbytes:>8} {mb:>8} {seconds:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
