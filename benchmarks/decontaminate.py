"""Decontamination throughput: docs/s of the decontaminate scan on a large toy-web-like input, against
peers measured in the same run on the same documents, single process.

The evaluation sets are the default run's (fact probes, chat questions, few-shot arithmetic — built by
``llmpipe.eval.sets`` — and the generated rl_test). The documents are either Parquet shards you give
(``--input 'results/split/train/*.parquet'``, repeated until ``--docs``) or synthetic toy-web pages:
world fact sentences and worksheet problems (``llmpipe.tasks.world``), with one page in 50 printing
an rl_test problem, as the toy web's worksheets do.

Peers: ``words only`` (reading the batch and normalising its words: the floor any n-gram scan pays);
``naive`` (every n-gram of the document, of every entry length, built as a set and intersected with
the index: the straightforward implementation); ``llmpipe`` (``Decontaminator.find``: a lookup only
where a word starts some entry); and the whole stage on one shard (read, scan, write Parquet).

    python benchmarks/decontaminate.py [--docs 50000] [--ngram 13] [--input GLOB]
"""
from __future__ import annotations

import argparse
import glob
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from llmpipe.config import load_config
from llmpipe.data.decontaminate import Decontaminator, Findings, Item, scan_documents, words
from llmpipe.eval.sets import build
from llmpipe.io import read_document_batches, read_documents, write_documents
from llmpipe.stats import StageStats
from llmpipe.tasks.arithmetic import rl_test_problems
from llmpipe.tasks.world import arithmetic_problems, fact_items, fact_sentence

REPO = Path(__file__).resolve().parents[1]
SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])


def eval_items(config: dict) -> list[Item]:
    sets = build(config["evaluate"])
    sets["rl_test"] = rl_test_problems(config["posttrain_data"]["seed"], config["posttrain_data"]["rl_test_problems"])
    report_only = set(config["decontaminate"]["report_only"])
    items = []
    for name, rows in sets.items():
        for i, row in enumerate(rows):
            set_name = f"{name}/{row['phrasing']}" if "phrasing" in row else name
            items.append(Item(set_name, i, row, set_name not in report_only))
    return items


def synthetic_docs(n: int, tests: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    facts = fact_items()
    docs = []
    for i in range(n):
        lines = [fact_sentence(*rng.choice(facts), rng) for _ in range(rng.randint(8, 20))]
        lines += [f"{q} The answer is {a}." for q, a in arithmetic_problems(rng, rng.randint(0, 4))]
        if i % 50 == 0:
            test = rng.choice(tests)
            lines.insert(rng.randrange(len(lines) + 1), f"{test['prompt']} The answer is {test['answer']}.")
        rng.shuffle(lines)
        docs.append({"id": f"doc-{i}", "title": f"Page {i}", "text": " ".join(lines)})
    return docs


def given_docs(pattern: str, n: int) -> list[dict]:
    base = [d for path in sorted(glob.glob(pattern)) for d in read_documents(path, ["id", "title", "text"])]
    if not base:
        raise SystemExit(f"--input {pattern!r} matches no documents")
    return [{**base[i % len(base)], "id": f"{base[i % len(base)]['id']}-{i // len(base)}"} for i in range(n)]


def naive_find(dec: Decontaminator, text: str) -> set[int]:
    w = words(text)
    lengths = {len(e) for e in dec.index.entries}
    grams = {tuple(w[i : i + n]) for n in lengths for i in range(len(w) - n + 1)}
    found: set[int] = set()
    for g in grams & dec.index.entries.keys():
        found.update(dec.index.entries[g])
    return found


def timed(label: str, fn, docs: list[dict], reference: float | None = None) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(docs)
    seconds = time.perf_counter() - start
    rate = len(docs) / seconds
    ratio = f"  ({rate / reference:.2f}x llmpipe)" if reference else ""
    print(f"{label:<28} {seconds:8.2f} s {rate:12,.0f} docs/s{ratio}")
    return rate, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=50000)
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--input", help="Parquet shards to repeat instead of synthetic pages")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = load_config(REPO / "config.yaml")
    items = eval_items(config)
    t0 = time.perf_counter()
    dec = Decontaminator(items, args.ngram)
    print(f"index: {len(items)} evaluation items -> {len(dec.index.entries)} entries in "
          f"{time.perf_counter() - t0:.3f} s (n = {args.ngram})")
    tests = [i.row for i in items if i.set == "rl_test"]
    docs = given_docs(args.input, args.docs) if args.input else synthetic_docs(args.docs, tests, args.seed)
    n_words = sum(len(words(d["text"])) for d in docs)
    print(f"input: {len(docs):,} documents, {n_words / len(docs):.0f} words each on average")

    def text(d: dict) -> str:
        return f"{d.get('title') or ''}\n{d.get('text') or ''}"

    rate, found = timed("llmpipe (Decontaminator)", lambda ds: [dec.find(text(d)) for d in ds], docs)
    timed("words only (floor)", lambda ds: [words(text(d)) for d in ds], docs, rate)
    subset = docs[: max(1, len(docs) // 10)]
    _, naive = timed(f"naive set ∩ ({len(subset):,} docs)", lambda ds: [naive_find(dec, text(d)) for d in ds],
                     subset, rate)
    assert naive == found[: len(subset)], "the naive scan and llmpipe's disagree"
    enforced = sum(any(dec.items[k].enforced for k in f) for f in found)
    print(f"contaminated documents (enforced sets): {enforced:,} of {len(docs):,}")

    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "train.parquet"
        write_documents(shard, docs, SCHEMA)

        def stage(_: list[dict]) -> None:
            scan_documents(dec, str(shard), str(Path(tmp) / "out.parquet"), True, Findings(), StageStats("bench"))

        timed("stage (read, scan, write)", stage, docs, rate)
        timed("read batches only", lambda _: sum(len(b) for b in read_document_batches(shard)), docs, rate)


if __name__ == "__main__":
    main()
