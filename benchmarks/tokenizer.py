"""Benchmark llmpipe's BPE against its peers on one corpus, one vocab, one split pattern.

Usage: python benchmarks/tokenizer.py [--data DIR] [--train train100.txt] [--vocab 32768]
DIR comes from ../shared/tools/build_bench_corpus.sh (train100 / heldout10 slices). Each
training runs in a child process that reports its own peak memory (max RSS).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import regex

from llmpipe.tokenizer import GPT4_PATTERN, Tokenizer

HF_PATTERN = GPT4_PATTERN.replace("{1,3}+", "{1,3}")


def train_child(peer: str, path: str, vocab: int, threads: int, out: str) -> None:
    """Runs in a child: train one peer, print its seconds; save ours for the encode runs."""
    start = time.perf_counter()
    if peer == "llmpipe":
        tok = Tokenizer.train([Path(path)], vocab, num_threads=threads)
        tok.save(out)
    else:
        import os

        os.environ["RAYON_NUM_THREADS"] = str(threads)
        import tokenizers as t

        hf = t.Tokenizer(t.models.BPE())
        hf.pre_tokenizer = t.pre_tokenizers.Sequence([
            t.pre_tokenizers.Split(t.Regex(HF_PATTERN), "isolated"),
            t.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = t.trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                        initial_alphabet=t.pre_tokenizers.ByteLevel.alphabet())
        hf.train([path], trainer)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def train(peer: str, path: Path, vocab: int, threads: int, out: Path) -> tuple[float, float]:
    """(seconds, peak MB) of one training in a fresh child process."""
    env = {**__import__("os").environ, "RAYON_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", peer, str(path), str(vocab), str(threads), str(out)],
                          capture_output=True, text=True, check=True, env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["seconds"], result["peak_mb"]


def rate(fn, nbytes: int, repeat: int = 2) -> float:
    """Best MB/s over `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bench-corpus/data")
    parser.add_argument("--train", default="train100.txt")
    parser.add_argument("--heldout", default="heldout10.txt")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--out", default="/tmp/llmpipe-bench-tokenizer.json")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peer, path, vocab, threads, out = args.child
        train_child(peer, path, int(vocab), int(threads), out)
        return
    data = Path(args.data)
    rows = []
    for threads in (2, 1):
        for peer in ("llmpipe", "hf-tokenizers"):
            seconds, peak = train(peer, data / args.train, args.vocab, threads, Path(args.out))
            rows.append((f"train {peer}, {threads} thread(s) (s, peak MB)", f"{seconds:.1f} s, {peak:.0f} MB"))

    ours = Tokenizer.load(args.out)
    text = (data / args.heldout).read_text()
    docs = text.split("\n\n")
    nbytes = len(text.encode())
    import tiktoken
    import tokenizers

    enc = tiktoken.Encoding("ours", pat_str=GPT4_PATTERN, mergeable_ranks=ours.tiktoken_ranks(), special_tokens={})
    from llmpipe.tokenizer.hf import export_hf

    export_hf(ours, "/tmp/llmpipe-bench-hf")
    hf = tokenizers.Tokenizer.from_file("/tmp/llmpipe-bench-hf/tokenizer.json")
    assert ours.encode_batch(docs[:2000]) == enc.encode_ordinary_batch(docs[:2000], num_threads=1)
    one = rate(lambda: ours.encode_batch(docs, num_threads=1), nbytes)
    two = rate(lambda: ours.encode_batch(docs, num_threads=2), nbytes)
    from llmpipe.tokenizer.bpe import pack_segments, utf8

    buf, offsets = pack_segments([utf8(d) for d in docs])
    raw1 = rate(lambda: ours.encode_utf8(buf, offsets, num_threads=1), nbytes)
    raw2 = rate(lambda: ours.encode_utf8(buf, offsets, num_threads=2), nbytes)
    rows += [
        ("encode llmpipe encode_utf8 (arrow path), 1 thread (MB/s)", f"{raw1:.1f}"),
        ("encode llmpipe encode_utf8 (arrow path), 2 threads (MB/s)", f"{raw2:.1f}  ({raw2 / raw1:.2f}x)"),
        ("encode llmpipe, 1 thread (MB/s)", f"{one:.1f}"),
        ("encode llmpipe encode_batch, 2 threads (MB/s)", f"{two:.1f}  ({two / one:.2f}x)"),
        ("encode tiktoken, 1 thread (MB/s)", f"{rate(lambda: enc.encode_ordinary_batch(docs, num_threads=1), nbytes):.1f}"),
        ("encode HF tokenizers encode_batch (MB/s)", f"{rate(lambda: hf.encode_batch(docs, add_special_tokens=False), nbytes):.1f}"),
        ("regex.findall of the split alone (MB/s)", f"{rate(lambda: [regex.findall(GPT4_PATTERN, d) for d in docs], nbytes):.1f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"corpus {data / args.train} -> vocab {args.vocab}; encode on {args.heldout} ({nbytes / 1e6:.1f} MB)")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
