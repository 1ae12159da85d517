"""Decontamination: find evaluation items in the training data, and drop (or report) what holds them.

As GPT-3 and Llama-2 report, and as datatrove's n-gram decontamination does: every evaluation
item (``prompt`` and ``answer``) is normalised to words — lowercased, punctuation stripped
(``\\w+`` runs) — and every ``ngram``-word window of it goes into one hash set; an item shorter
than ``ngram`` words goes in as its whole normalised text. A training text is contaminated by
an item when one of the item's entries occurs as consecutive words of the text.

The scan streams: train documents in bounded batches (``llmpipe.io.read_document_batches``),
post-training rows line by line. Per position only the entry lengths whose first two words match
are looked up (``_Index.starts``), so a text costs about one dict lookup a word.

The stage sits between ``split`` and tokenisation: the tokenizer, ``tokenize`` and every model
read its train documents, and ``sft`` / ``dpo`` / ``rl`` read its post-training files. With
``action: drop`` a contaminated document or row is removed from them; with ``report`` they are
copies. An item marked ``"held_out": false`` asks an in-distribution fact (one training teaches
by design): it is found and listed but never drops anything; one marked ``true`` always can.
Items without the mark follow their set: a ``report_only`` set (recall of trained text by
design) only reports. The validation and test
splits are not training inputs and are not touched.

Layer ``data``: it reads the evaluation and post-training files as plain JSONL, so it needs
nothing from ``eval`` or ``posttrain``.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpipe.config import ConfigError, stage_params
from llmpipe.data.documents import text_bytes
from llmpipe.io import DocumentWriter, iter_jsonl, read_document_batches, read_schema, write_json, write_jsonl
from llmpipe.stats import StageStats

SECTION = "decontaminate"
MAX_LOCATIONS = 20  # locations listed per contaminated item (all are counted)
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The normalised words of a text: lowercase ``\\w+`` runs (punctuation and spacing dropped)."""
    return _WORD.findall(text.lower())


def item_text(row: dict) -> str:
    """What an evaluation item is matched by: its prompt followed by its answer."""
    answer = row.get("answer")
    return f"{row.get('prompt', '')} {'' if answer is None else answer}"


def row_text(value: Any) -> str:
    """Every string in a JSONL row (SFT messages, DPO prompt/chosen/rejected/system, RL prompt/answer)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(row_text(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(row_text(v) for v in value)
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Item:
    set: str
    index: int  # row index within its set
    row: dict
    enforced: bool  # a hit drops the training text (else: reported only)


@dataclass
class _Index:
    """Entry (tuple of words) -> the items holding it; first two words -> the lengths of the entries
    starting with them (one-word entries are looked up by ``singles``)."""
    entries: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    starts: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    singles: set[str] = field(default_factory=set)


def item_entries(text: str, n: int) -> set[tuple[str, ...]]:
    """An item's index entries: its ``n``-word windows, or its whole text when shorter than ``n``."""
    w = words(text)
    if not w:
        return set()
    if len(w) <= n:
        return {tuple(w)}
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


class Decontaminator:
    """The index of evaluation items and the scan of training texts against it."""

    def __init__(self, items: list[Item], n: int):
        self.items, self.n = items, n
        self.index = _Index()
        for k, item in enumerate(items):
            for entry in item_entries(item_text(item.row), n):
                self.index.entries.setdefault(entry, []).append(k)
                if len(entry) == 1:
                    self.index.singles.add(entry[0])
                else:
                    self.index.starts[entry[:2]].add(len(entry))
        self.index.starts = dict(self.index.starts)

    def find(self, text: str) -> set[int]:
        """The items (indices into ``items``) whose entries occur in ``text``."""
        w = words(text)
        found: set[int] = set()
        starts, entries = self.index.starts, self.index.entries
        for i, pair in enumerate(zip(w, w[1:])):
            lengths = starts.get(pair)
            if lengths is None:
                continue
            for length in lengths:
                hit = entries.get(tuple(w[i : i + length]))
                if hit is not None:
                    found.update(hit)
        for word in self.index.singles.intersection(w):
            found.update(entries[(word,)])
        return found


@dataclass
class Findings:
    """Per item: every place it was found (file, id), and which of those places survive."""
    hits: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    where: dict[int, list[dict]] = field(default_factory=lambda: defaultdict(list))
    kept: set[int] = field(default_factory=set)  # items still present in a kept text
    files: dict[str, dict] = field(default_factory=dict)

    def record(self, items: set[int], location: dict, kept: bool) -> None:
        for k in items:
            self.hits[k] += 1
            if len(self.where[k]) < MAX_LOCATIONS:
                self.where[k].append(location)
            if kept:
                self.kept.add(k)


def set_of(name: str, row: dict) -> str:
    """The set an item is reported in: its file's name, then its ``phrasing`` and its side of the
    world's held-out share where the row carries them (``fact_probes/train/in_distribution``)."""
    parts = [name]
    if "phrasing" in row:
        parts.append(str(row["phrasing"]))
    if "held_out" in row:
        parts.append("held_out" if row["held_out"] else "in_distribution")
    return "/".join(parts)


def is_enforced(set_name: str, row: dict, report_only: set[str]) -> bool:
    """Whether finding the item drops what holds it. A held-out item always does; an
    in-distribution one (``"held_out": false``: it asks a fact training teaches) never does;
    otherwise its set decides: a set named in ``report_only``, or below one, only reports."""
    if "held_out" in row:
        return bool(row["held_out"])
    parts = set_name.split("/")
    return not any("/".join(parts[:k]) in report_only for k in range(1, len(parts) + 1))


def read_eval_sets(files: dict[str, str], report_only: set[str]) -> list[Item]:
    """The items of each evaluation file; a file whose rows carry ``phrasing`` is one set per phrasing
    (``<name>/<phrasing>``). A row without a string ``prompt`` is an error naming file and line."""
    items: list[Item] = []
    counts: dict[str, int] = defaultdict(int)
    for name, path in files.items():
        for lineno, row in iter_jsonl(path):
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{path}:{lineno}: an evaluation item needs a string \"prompt\"")
            set_name = set_of(name, row)
            enforced = is_enforced(set_name, row, report_only)
            items.append(Item(set_name, counts[set_name], row, enforced))
            counts[set_name] += 1
    return items


def scan_documents(
    dec: Decontaminator, source: str, output: str, drop: bool, findings: Findings, stats: StageStats
) -> None:
    """One train shard: documents without an enforced hit (all of them under ``report``) to ``output``."""
    name = Path(source).name
    counts = {"documents": 0, "contaminated": 0, "dropped": 0}
    with DocumentWriter(output, read_schema(source)) as out:
        for batch in read_document_batches(source):
            keep = []
            for doc in batch:
                nbytes = text_bytes(doc)
                stats.read(nbytes)
                counts["documents"] += 1
                found = dec.find(f"{doc.get('title') or ''}\n{doc.get('text') or ''}")
                enforced = any(dec.items[k].enforced for k in found)
                dropped = drop and enforced
                counts["contaminated"] += enforced
                if found:
                    findings.record(found, {"file": name, "id": doc.get("id")}, kept=not dropped)
                if dropped:
                    stats.dropped("contaminated", nbytes)
                    counts["dropped"] += 1
                else:
                    stats.kept(nbytes)
                    keep.append(doc)
            out.write(keep)
    findings.files[name] = counts


def scan_rows(dec: Decontaminator, source: str, output: str, drop: bool, findings: Findings) -> None:
    """One post-training train file: rows without an enforced hit (all under ``report``) to ``output``."""
    name = Path(source).name
    counts = {"rows": 0, "contaminated": 0, "dropped": 0}

    def kept() -> Iterator[dict]:
        for lineno, row in iter_jsonl(source):
            counts["rows"] += 1
            found = dec.find(row_text(row))
            enforced = any(dec.items[k].enforced for k in found)
            dropped = drop and enforced
            counts["contaminated"] += enforced
            if found:
                findings.record(found, {"file": name, "line": lineno}, kept=not dropped)
            if dropped:
                counts["dropped"] += 1
            else:
                yield row

    write_jsonl(output, kept())
    findings.files[name] = counts


def summary(dec: Decontaminator, findings: Findings, p: dict) -> dict:
    """Per evaluation set: items, contaminated items (and where), and those still in kept data."""
    sets: dict[str, dict] = {}
    for k, item in enumerate(dec.items):
        s = sets.setdefault(item.set, {"items": 0, "contaminated": 0, "remaining": 0,
                                       "report_only": not item.enforced, "found": []})
        s["items"] += 1
        s["report_only"] = s["report_only"] and not item.enforced
        if k not in findings.hits:
            continue
        s["contaminated"] += 1
        s["remaining"] += k in findings.kept
        if len(s["found"]) < 50:
            s["found"].append({
                "item": item.index, "prompt": item.row["prompt"], "answer": item.row.get("answer"),
                "kind": item.row.get("kind"), "held_out": bool(item.row.get("held_out", False)),
                "hits": findings.hits[k], "where": findings.where[k],
            })
    return {"ngram": p["ngram"], "action": p["action"], "sets": sets, "training_files": findings.files}


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--eval", nargs="+", required=True, metavar="NAME=PATH",
                        help="evaluation sets: name=JSONL (rows with prompt[, answer])")
    parser.add_argument("--train", nargs="*", default=[], help="split/train Parquet shards")
    parser.add_argument("--train-output", nargs="*", default=[], help="one output shard per --train shard")
    parser.add_argument("--posttrain", nargs="*", default=[], help="post-training train JSONL files")
    parser.add_argument("--posttrain-output", nargs="*", default=[], help="one output file per --posttrain file")
    parser.add_argument("--report", required=True, help="contamination JSON to write")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def eval_files(pairs: list[str]) -> dict[str, str]:
    files = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"decontaminate --eval takes NAME=PATH, got {pair!r}")
        if name in files:
            raise ConfigError(f"decontaminate: two evaluation sets named {name!r} ({files[name]}, {path})")
        files[name] = path
    return files


def run(args: argparse.Namespace, stage: str) -> int:
    p = stage_params(args.params, args.config, SECTION)
    if len(args.train) != len(args.train_output) or len(args.posttrain) != len(args.posttrain_output):
        raise ConfigError("decontaminate: give one output per --train shard and per --posttrain file")
    stats = StageStats(SECTION)
    dec = Decontaminator(read_eval_sets(eval_files(args.eval), set(p["report_only"])), p["ngram"])
    drop = p["action"] == "drop"
    findings = Findings()
    for source, output in zip(args.train, args.train_output):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        scan_documents(dec, source, output, drop, findings, stats)
    for source, output in zip(args.posttrain, args.posttrain_output):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        scan_rows(dec, source, output, drop, findings)
    report = summary(dec, findings, p)
    write_json(args.report, report)
    stats.extra.update({
        "ngram": p["ngram"], "index_entries": len(dec.index.entries), "eval_items": len(dec.items),
        "contaminated_items": sum(s["contaminated"] for s in report["sets"].values()),
        "remaining_items": sum(s["remaining"] for s in report["sets"].values() if not s["report_only"]),
        "posttrain_rows_dropped": sum(f.get("dropped", 0) for name, f in findings.files.items() if "rows" in f),
        **{f"{name}_contaminated": s["contaminated"] for name, s in report["sets"].items()},
    })
    stats.record_peak_rss()
    stats.write(args.stats)
    return 0
