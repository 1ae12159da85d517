"""Benchmark llmpipe's BPE against its peers: training on one corpus, and encoding, cold and warm.

Usage: python benchmarks/tokenizer.py [--data DIR] [--train train100.txt] [--heldout heldout10.txt]
           [--vocab 32768] [--skip-train] [--cold-runs 2] [--threads 1[,2]]
DIR comes from ../shared/tools/build_bench_corpus.sh (train100 / heldout10 slices);
``pip install -e '.[bench]'`` installs the peers.

Training: Hugging Face tokenizers, rustbpe and ours learn the same number of merges (peers get
vocab minus our special tokens) from the same units (each line of the file), each in a fresh
child process that imports only what that peer needs and reports its peak memory (max RSS).

Encoding, on the held-out documents (blank-line separated): every peer in each of its modes
(tiktoken per document and ``encode_ordinary_batch``; HF ``encode_batch`` and per document;
bpe-openai's Rust binding per document and its batch; quicktok per document and its
``encode_batch``; ours ``encode_batch``, per document, and the Arrow path ``encode_utf8``), each
mode in fresh child processes, with one thread everywhere (``num_threads=1``, quicktok
``threads=1``, ``RAYON_NUM_THREADS=1`` set before HF is imported). Every timed region ends with
the same ``list[list[int]]`` (flat arrays are turned into lists inside it), and every output is
compared document by document with tiktoken's. Cold = a fresh tokenizer object's first pass
over the data, in a fresh process (best of --cold-runs processes); warm = best of 3 passes
after it. The vocabularies: cl100k_base (shipped inside the bpe-openai wheel; every peer reads
it, quicktok and bpe-openai only it), and, after training, ours (tiktoken and HF only).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

PEERS = ("llmpipe", "hf-tokenizers", "rustbpe")
PACKAGES = ("llmpipe", "tiktoken", "tokenizers", "bpe-openai", "quicktok-v1", "rustbpe", "regex", "numpy")
# (peer, mode): the encode rows; modes of a peer differ in API only, never in ids
ENCODERS = (
    ("llmpipe", "encode_batch"), ("llmpipe", "encode_ordinary per document"), ("llmpipe", "encode_utf8 + id_lists"),
    ("tiktoken", "encode_ordinary per document"), ("tiktoken", "encode_ordinary_batch"),
    ("hf-tokenizers", "encode_batch"), ("hf-tokenizers", "encode per document"),
    ("bpe-openai", "Rust binding per document"), ("bpe-openai", "encode_ordinary_batch"),
    ("quicktok", "encode_ordinary per document"), ("quicktok", "encode_batch"),
)
FIXED_VOCAB = {"bpe-openai", "quicktok"}  # peers that only read their bundled vocabularies


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


def cl100k_path() -> Path:
    import bpe_openai

    return Path(bpe_openai.__file__).parent / "data" / "cl100k_base.tiktoken.gz"


# -------------------------------------------------------------------- training
def peak_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec, unlike ru_maxrss,
    which a child inherits from the parent that spawned it (and our parent holds the data)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    result["peak_mb"] = peak_mb()
    if peer == "llmpipe":
        tok.save(out)
    elif peer == "rustbpe":
        docs, nbytes = heldout_docs(heldout)
        encode = (lambda: [rust.encode(d) for d in docs]) if threads == 1 else (lambda: rust.batch_encode(docs))
        result["encode_mb_s"] = rate(encode, nbytes)
    print(json.dumps(result))


def child_env(threads: int) -> dict:
    return {**os.environ, "RAYON_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def run_child(argv: list[str], threads: int, what: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=child_env(threads))
    if proc.returncode:
        sys.exit(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train(peer: str, path: Path, merges: int, threads: int, out: Path, heldout: Path, pattern: str) -> dict:
    """The child's result for one training in a fresh process on `threads` threads."""
    argv = ["--child", peer, str(path), str(merges), str(threads), str(out), str(heldout), pattern]
    return run_child(argv, threads, f"training {peer} on {threads} thread(s)")


# -------------------------------------------------------------------- encoding
def recovered_merges(tokens: list[bytes]) -> list[tuple[int, int]]:
    """Merges of a tiktoken vocabulary (ranks = ids, as HF needs them): each multi-byte token
    is the one merge left after BPE with the lower ranks."""
    ranks = {t: i for i, t in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min(pairs)
            if best >= rank:
                raise ValueError(f"token {rank} is not reachable by merges of lower ranks")
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append((ranks[parts[0]], ranks[parts[1]]))
    return merges


def load_ours(vocab: str):
    from llmpipe.tokenizer import Tokenizer

    return Tokenizer.from_tiktoken(cl100k_path()) if vocab == "cl100k" else Tokenizer.load(vocab)


def write_hf(vocab: str, path: str) -> None:
    """The Hugging Face tokenizer.json of a vocabulary, by our exporter, without specials."""
    from llmpipe.tokenizer import Tokenizer
    from llmpipe.tokenizer.hf import tokenizer_json

    ours = load_ours(vocab)
    plain = Tokenizer(ours.tokens, [], ours.pattern, ours.merges or recovered_merges(ours.tokens))
    Path(path).write_text(json.dumps(tokenizer_json(plain)))


def make_encoder(peer: str, mode: str, vocab: str, threads: int, hf_json: str):
    """A fresh tokenizer object of `peer` and its encode function: docs -> list[list[int]]."""
    if peer in ("llmpipe", "tiktoken"):
        from llmpipe.tokenizer import GPT4_PATTERN

        ours = load_ours(vocab)
    if peer == "llmpipe":
        if mode == "encode_batch":
            return lambda docs: ours.encode_batch(docs, num_threads=threads)
        if mode == "encode_ordinary per document":
            return lambda docs: [ours.encode_ordinary(d) for d in docs]
        from llmpipe.tokenizer.bpe import pack_segments, utf8

        def arrow(docs):  # what the tokenize stage does, lists made like the others
            buf, offsets = pack_segments([utf8(d) for d in docs])
            ids, ends = ours.encode_utf8(buf, offsets, num_threads=threads)
            return ours._core.id_lists(ids, ends)

        return arrow
    if peer == "tiktoken":
        import tiktoken

        enc = tiktoken.Encoding("bench", pat_str=GPT4_PATTERN, mergeable_ranks=ours.tiktoken_ranks(),
                                special_tokens={})
        if mode == "encode_ordinary_batch":
            return lambda docs: enc.encode_ordinary_batch(docs, num_threads=threads)
        return lambda docs: [enc.encode_ordinary(d) for d in docs]
    if peer == "hf-tokenizers":
        import tokenizers

        hf = tokenizers.Tokenizer.from_file(hf_json)
        if mode == "encode_batch":
            return lambda docs: [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
        return lambda docs: [hf.encode(d, add_special_tokens=False).ids for d in docs]
    if peer == "bpe-openai":
        import bpe_openai

        if mode == "encode_ordinary_batch":
            enc = bpe_openai.get_encoding("cl100k_base")
            return lambda docs: enc.encode_ordinary_batch(docs, num_threads=threads)
        from bpe_openai import _bindings

        rust = _bindings.tokenizer_for_encoding("cl100k_base")
        return lambda docs: [rust.encode(d) for d in docs]
    if peer == "quicktok":
        import quicktok

        enc = quicktok.Tokenizer("cl100k_base", "")  # not get_encoding(): that one is cached
        if mode == "encode_batch":

            def batch(docs):
                tokens, offsets = enc.encode_batch(docs, threads, False)
                flat, cuts = tokens.tolist(), offsets.tolist()
                return [flat[a:b] for a, b in zip(cuts, cuts[1:])]

            return batch
        return lambda docs: [enc.encode_ordinary(d) for d in docs]
    raise ValueError(peer)


def encode_child(peer: str, mode: str, vocab: str, threads: int, heldout: str, digests: str, hf_json: str) -> None:
    """Runs in a child: cold pass on a fresh object, then warm best of 3; per-document digests
    of the ids go to `digests` (one 8-byte hash per document) for the parent to compare."""
    docs, nbytes = heldout_docs(heldout)
    encode = make_encoder(peer, mode, vocab, threads, hf_json)
    start = time.perf_counter()
    ids = encode(docs)
    cold = time.perf_counter() - start
    warm = rate(lambda: encode(docs), nbytes)
    assert isinstance(ids, list) and all(isinstance(d, list) for d in ids[:100]), type(ids)
    with open(digests, "wb") as fh:
        for doc in ids:
            fh.write(hashlib.blake2b(json.dumps(list(map(int, doc))).encode(), digest_size=8).digest())
    print(json.dumps({"cold": nbytes / cold / 1e6, "warm": warm, "tokens": sum(map(len, ids))}))


def encode_rows(vocab: str, label: str, heldout: Path, threads: int, cold_runs: int) -> tuple[list, dict]:
    """Rows of the encode table for one vocabulary, and {(peer, mode): (cold, warm)}."""
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        digests, hf_json = {}, f"{tmp}/hf-tokenizer.json"
        write_hf(vocab, hf_json)
        for peer, mode in ENCODERS:
            if vocab != "cl100k" and peer in FIXED_VOCAB:
                continue
            if threads > 1 and "per document" in mode:
                continue
            runs = []
            for k in range(cold_runs):
                out = f"{tmp}/{peer}-{mode}-{k}".replace(" ", "_")
                argv = ["--encode-child", peer, mode, vocab, str(threads), str(heldout), out, hf_json]
                runs.append(run_child(argv, threads, f"encoding with {peer} ({mode})"))
                digests[peer, mode] = Path(out).read_bytes()
            results[peer, mode] = (max(r["cold"] for r in runs), max(r["warm"] for r in runs))
        reference = digests["tiktoken", "encode_ordinary per document"]
        ndocs = len(reference) // 8
        for (peer, mode), (cold, warm) in results.items():
            got = digests[peer, mode]
            differ = sum(got[i : i + 8] != reference[i : i + 8] for i in range(0, len(reference), 8))
            same = "identical" if got == reference else f"{differ} of {ndocs} documents differ"
            if peer == "llmpipe" and got != reference:  # our ids must equal tiktoken's, always
                sys.exit(f"our ids ({mode}) differ from tiktoken's on {label}: {same}")
            rows.append((f"encode {label}: {peer} {mode}, {threads} thread(s), cold / warm (MB/s)",
                         f"{cold:.1f} / {warm:.1f} (ids vs tiktoken: {same})"))
    return rows, results


def ratio_rows(label: str, results: dict, threads: int) -> list:
    ours = {m: r for (p, m), r in results.items() if p == "llmpipe"}
    peers = {(p, m): r for (p, m), r in results.items() if p != "llmpipe"}
    rows = []
    for i, phase in enumerate(("cold", "warm")):
        our_mode, our = max(ours.items(), key=lambda kv: kv[1][i])
        (peer, mode), theirs = max(peers.items(), key=lambda kv: kv[1][i])
        rows.append((f"encode {label} ratio, {phase}, {threads} thread(s): our fastest / fastest peer",
                     f"{our[i] / theirs[i]:.2f}x (ours {our_mode} {our[i]:.1f}, {peer} {mode} {theirs[i]:.1f} MB/s)"))
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def versions() -> str:
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return ", ".join([f"Python {platform.python_version()}"] + [f"{p} {version(p)}" for p in PACKAGES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bench-corpus/data")
    parser.add_argument("--train", default="train100.txt")
    parser.add_argument("--heldout", default="heldout10.txt")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--out", default="/tmp/llmpipe-bench-tokenizer.json")
    parser.add_argument("--skip-train", action="store_true", help="encode rows on cl100k only")
    parser.add_argument("--cold-runs", type=int, default=2, help="fresh processes per encode row")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts for the encode rows")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--encode-child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peer, path, merges, threads, out, heldout, pattern = args.child
        train_child(peer, path, int(merges), int(threads), out, heldout, pattern)
        return
    if args.encode_child:
        peer, mode, vocab, threads, heldout, digests, hf_json = args.encode_child
        encode_child(peer, mode, vocab, int(threads), heldout, digests, hf_json)
        return

    import regex

    from llmpipe.tokenizer import GPT4_PATTERN, SPECIAL_TOKENS

    data = Path(args.data)
    heldout = data / args.heldout
    merges = args.vocab - 256 - len(SPECIAL_TOKENS)
    docs, nbytes = heldout_docs(heldout)
    print(f"machine: {machine()}\nversions: {versions()}")
    rows: list[tuple[str, str]] = []
    trained: dict[tuple[str, int], dict] = {}
    if not args.skip_train:
        for threads in (2, 1):
            for peer in PEERS:
                r = train(peer, data / args.train, merges, threads, Path(args.out), heldout, GPT4_PATTERN)
                trained[peer, threads] = r
                rows.append((f"train {peer}, {threads} thread(s)",
                             f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB"))
        for threads in (2, 1):
            ours = trained["llmpipe", threads]
            for peer in PEERS[1:]:
                r = trained[peer, threads]
                rows.append((f"train ratio vs {peer}, {threads} thread(s) (ours/peer time, memory)",
                             f"{ours['seconds'] / r['seconds']:.2f}x, {ours['peak_mb'] / r['peak_mb']:.2f}x"))
    for threads in map(int, args.threads.split(",")):
        vocabs = [("cl100k", "cl100k")] + ([] if args.skip_train else [(args.out, "our merges")])
        for vocab, label in vocabs:
            encode, results = encode_rows(vocab, label, heldout, threads, args.cold_runs)
            rows += encode + ratio_rows(label, results, threads)
        if not args.skip_train:
            rows.append((f"encode rustbpe encode (its own merges, other ids), {threads} thread(s), warm (MB/s)",
                         f"{trained['rustbpe', threads]['encode_mb_s']:.1f}" if (("rustbpe", threads) in trained)
                         else "not measured"))
    rows.append(("regex.findall of the split alone, 1 thread, warm (MB/s)",
                 f"{rate(lambda: [regex.findall(GPT4_PATTERN, d) for d in docs], nbytes):.1f}"))
    width = max(len(name) for name, _ in rows)
    print((f"corpus {data / args.train}: {merges} merges (vocab {args.vocab} with our {len(SPECIAL_TOKENS)} "
           "specials); " if not args.skip_train else "")
          + f"encode on {args.heldout} ({nbytes / 1e6:.1f} MB, {len(docs)} documents); load after: {machine()}")
    print(f"| {'measure':<{width}} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
