"""Benchmark llmpipe's BPE against its peers on one corpus, one vocab, one split pattern.

Usage: python benchmarks/tokenizer.py [--data DIR] [--train train100.txt] [--vocab 32768]
DIR comes from ../shared/tools/build_bench_corpus.sh (train100 / heldout10 slices). Peers:
Hugging Face tokenizers, rustbpe (train + its own encoder) and tiktoken (encode with our
merges); ``pip install -e '.[bench]'`` installs them. Every trainer learns the same number of
merges (peers get vocab minus our special tokens) from the same units: each line of the file.
Each training runs in a fresh child process that imports only what that peer needs and
reports its own peak memory (max RSS), so one peer's imports never weigh on another.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PEERS = ("llmpipe", "hf-tokenizers", "rustbpe")


def rate(fn, nbytes: int, repeat: int = 3) -> float:
    """Best MB/s over `repeat` runs (the machine is shared: the best run is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e6


def heldout_docs(path: str) -> tuple[list[str], int]:
    """The held-out slice as documents (blank-line separated) and its size in bytes."""
    text = Path(path).read_text()
    return text.split("\n\n"), len(text.encode())


def train_child(peer: str, path: str, merges: int, threads: int, out: str, heldout: str, pattern: str) -> None:
    """Runs in a child: train one peer and print a JSON line with its seconds and peak MB.

    Ours is saved to `out` for the encode runs; rustbpe, whose trained tokenizer lives only
    here, also reports its encode MB/s: `encode` per document on 1 thread, else `batch_encode`."""
    result = {}
    start = time.perf_counter()
    if peer == "llmpipe":
        from llmpipe.tokenizer import SPECIAL_TOKENS, Tokenizer

        tok = Tokenizer.train([Path(path)], merges + 256 + len(SPECIAL_TOKENS), pattern, num_threads=threads)
    elif peer == "hf-tokenizers":
        import tokenizers as t

        hf = t.Tokenizer(t.models.BPE())
        hf.pre_tokenizer = t.pre_tokenizers.Sequence([
            t.pre_tokenizers.Split(t.Regex(pattern.replace("{1,3}+", "{1,3}")), "isolated"),
            t.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = t.trainers.BpeTrainer(vocab_size=merges + 256, show_progress=False,
                                        initial_alphabet=t.pre_tokenizers.ByteLevel.alphabet())
        hf.train([path], trainer)
    else:
        import rustbpe

        rust = rustbpe.Tokenizer()
        with open(path, encoding="utf-8") as lines:
            rust.train_from_iterator(lines, merges + 256, pattern=pattern)
    result["seconds"] = time.perf_counter() - start
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if peer == "llmpipe":
        tok.save(out)
    elif peer == "rustbpe":
        docs, nbytes = heldout_docs(heldout)
        encode = (lambda: [rust.encode(d) for d in docs]) if threads == 1 else (lambda: rust.batch_encode(docs))
        result["encode_mb_s"] = rate(encode, nbytes)
    print(json.dumps(result))


def train(peer: str, path: Path, merges: int, threads: int, out: Path, heldout: Path, pattern: str) -> dict:
    """The child's result for one training in a fresh process on `threads` threads."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    argv = [sys.executable, __file__, "--child", peer, str(path), str(merges), str(threads), str(out), str(heldout),
            pattern]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"training {peer} on {threads} thread(s) failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bench-corpus/data")
    parser.add_argument("--train", default="train100.txt")
    parser.add_argument("--heldout", default="heldout10.txt")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--out", default="/tmp/llmpipe-bench-tokenizer.json")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peer, path, merges, threads, out, heldout, pattern = args.child
        train_child(peer, path, int(merges), int(threads), out, heldout, pattern)
        return

    import regex
    import tiktoken
    import tokenizers

    from llmpipe.tokenizer import GPT4_PATTERN, SPECIAL_TOKENS, Tokenizer
    from llmpipe.tokenizer.bpe import pack_segments, utf8
    from llmpipe.tokenizer.hf import export_hf

    data = Path(args.data)
    merges = args.vocab - 256 - len(SPECIAL_TOKENS)
    rows: list[tuple[str, str]] = []
    trained: dict[tuple[str, int], dict] = {}
    for threads in (2, 1):
        for peer in PEERS:
            r = train(peer, data / args.train, merges, threads, Path(args.out), data / args.heldout, GPT4_PATTERN)
            trained[peer, threads] = r
            rows.append((f"train {peer}, {threads} thread(s)", f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB"))
    for threads in (2, 1):
        ours = trained["llmpipe", threads]
        for peer in PEERS[1:]:
            r = trained[peer, threads]
            rows.append((f"train ratio vs {peer}, {threads} thread(s) (ours/peer time, memory)",
                         f"{ours['seconds'] / r['seconds']:.2f}x, {ours['peak_mb'] / r['peak_mb']:.2f}x"))

    ours = Tokenizer.load(args.out)
    docs, nbytes = heldout_docs(data / args.heldout)
    enc = tiktoken.Encoding("ours", pat_str=GPT4_PATTERN, mergeable_ranks=ours.tiktoken_ranks(), special_tokens={})
    export_hf(ours, "/tmp/llmpipe-bench-hf")
    hf = tokenizers.Tokenizer.from_file("/tmp/llmpipe-bench-hf/tokenizer.json")
    if ours.encode_batch(docs) != enc.encode_ordinary_batch(docs, num_threads=1):
        sys.exit("our ids differ from tiktoken's on the held-out documents")
    buf, offsets = pack_segments([utf8(d) for d in docs])
    speed = {
        "ours 1": rate(lambda: ours.encode_batch(docs, num_threads=1), nbytes),
        "ours 2": rate(lambda: ours.encode_batch(docs, num_threads=2), nbytes),
        "raw 1": rate(lambda: ours.encode_utf8(buf, offsets, num_threads=1), nbytes),
        "raw 2": rate(lambda: ours.encode_utf8(buf, offsets, num_threads=2), nbytes),
        "tiktoken 1": rate(lambda: enc.encode_ordinary_batch(docs, num_threads=1), nbytes),
        "tiktoken 2": rate(lambda: enc.encode_ordinary_batch(docs, num_threads=2), nbytes),
        "hf": rate(lambda: hf.encode_batch(docs, add_special_tokens=False), nbytes),
        "rustbpe 1": trained["rustbpe", 1]["encode_mb_s"],
        "rustbpe 2": trained["rustbpe", 2]["encode_mb_s"],
        "regex": rate(lambda: [regex.findall(GPT4_PATTERN, d) for d in docs], nbytes),
    }
    rows += [
        ("encode llmpipe encode_batch, 1 thread (MB/s)", f"{speed['ours 1']:.1f}"),
        (
            "encode llmpipe encode_batch, 2 threads (MB/s)",
            f"{speed['ours 2']:.1f} ({speed['ours 2'] / speed['ours 1']:.2f}x of 1 thread)",
        ),
        ("encode llmpipe encode_utf8 (arrow path), 1 thread (MB/s)", f"{speed['raw 1']:.1f}"),
        (
            "encode llmpipe encode_utf8 (arrow path), 2 threads (MB/s)",
            f"{speed['raw 2']:.1f} ({speed['raw 2'] / speed['raw 1']:.2f}x)",
        ),
        ("encode tiktoken (our merges, same ids), 1 thread (MB/s)", f"{speed['tiktoken 1']:.1f}"),
        ("encode tiktoken (our merges, same ids), 2 threads (MB/s)", f"{speed['tiktoken 2']:.1f}"),
        ("encode HF tokenizers encode_batch, 2 threads (MB/s)", f"{speed['hf']:.1f}"),
        ("encode rustbpe encode (own merges), 1 thread (MB/s)", f"{speed['rustbpe 1']:.1f}"),
        ("encode rustbpe batch_encode (own merges), 2 threads (MB/s)", f"{speed['rustbpe 2']:.1f}"),
        ("regex.findall of the split alone, 1 thread (MB/s)", f"{speed['regex']:.1f}"),
        ("encode ratio vs tiktoken, 1 / 2 threads (ours/peer MB/s)",
         f"{speed['ours 1'] / speed['tiktoken 1']:.2f}x / {speed['ours 2'] / speed['tiktoken 2']:.2f}x"),
        ("encode ratio vs rustbpe, 1 / 2 threads (ours/peer MB/s)",
         f"{speed['ours 1'] / speed['rustbpe 1']:.2f}x / {speed['ours 2'] / speed['rustbpe 2']:.2f}x"),
        ("encode ratio vs HF tokenizers, 2 threads (ours/peer MB/s)", f"{speed['ours 2'] / speed['hf']:.2f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"corpus {data / args.train}: {merges} merges (vocab {args.vocab} with our {len(SPECIAL_TOKENS)} specials);"
          f" encode on {args.heldout} ({nbytes / 1e6:.1f} MB, {len(docs)} documents)")
    print(f"| {'measure':<{width}} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
