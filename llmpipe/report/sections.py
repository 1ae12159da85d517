"""The report's sections: read a results tree, turn each part into plain data for the template.

Readers (``read_*``) are the only I/O and return ``None`` or empty for what a run did not
produce; section builders are pure functions of what was read, so a stage that did not run
shows as "not run" instead of failing the report. Everything here stays plain text: the
template escapes it. Only plots (SVG we drew) are trusted markup.
"""
from __future__ import annotations

import csv
import fnmatch
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from llmpipe import layout
from llmpipe.report.plots import Series, bar_plot, line_plot

# The run's names (llmpipe/layout.py, which the rules read too).
FILTER_STAGES = layout.FILTER_STAGES
FUNNEL_STAGES = layout.FUNNEL_STAGES
SPLITS = layout.SPLITS
MODELS = layout.MODEL_STAGES


# ---------------------------------------------------------------------------------------------
# Readers


def read_json_file(path: str | Path) -> Any:
    """Parsed JSON, ``None`` when the file is absent; a broken file names itself."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl, ``[]`` when absent; a broken line is reported by number."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
    return rows


def matching(pattern: str) -> list[Path]:
    """The files a results path with ``*`` for its file's shard matches (``layout.shard_file(..., "*")``), sorted."""
    path = Path(pattern)
    return sorted(path.parent.glob(path.name))


def shard_files(results: Path, stage: str, kind: str) -> list[Path]:
    """A data stage's files of one kind ("docs", "rejects", "stats"), every shard."""
    return matching(layout.shard_file(results, stage, kind, "*"))


def read_stage_stats(results: Path, stage: str) -> list[dict]:
    """Every shard's StageStats of a data stage (``results/<stage>/stats/*.json``)."""
    return [read_json_file(p) for p in shard_files(results, stage, "stats")]


def read_benchmarks(benchmarks: Path) -> dict[str, list[dict]]:
    """rule -> its jobs' Snakemake benchmark rows (``benchmarks/<rule>/**/*.tsv``)."""
    rules: dict[str, list[dict]] = {}
    if not benchmarks.is_dir():
        return rules
    for rule_dir in sorted(p for p in benchmarks.iterdir() if p.is_dir()):
        for tsv in sorted(rule_dir.rglob("*.tsv")):
            with tsv.open(newline="") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    rules.setdefault(rule_dir.name, []).append(row)
    return rules


def read_rows(path: str | Path, columns: list[str], limit: int | None = None) -> list[dict]:
    """The first ``limit`` rows (all when ``None``) of the columns a parquet file has."""
    path = Path(path)
    if not path.exists():
        return []
    file = pq.ParquetFile(path)
    present = [c for c in columns if c in file.schema_arrow.names]
    if limit is None:
        return file.read(columns=present).to_pylist()
    rows: list[dict] = []
    for batch in file.iter_batches(batch_size=max(limit, 1), columns=present):
        rows.extend(batch.to_pylist())
        if len(rows) >= limit:
            break
    return rows[:limit]


def read_rejects(results: Path, stage: str, per_reason: int, chars: int) -> list[dict]:
    """Every removed document of a filter stage (id, URL, reason), over all shards, batch by batch.

    Only the first ``per_reason`` documents of each reason keep a text excerpt (the examples), so
    the report's memory stays small on a real crawl's rejects.
    """
    rows: list[dict] = []
    shown: dict[str, int] = defaultdict(int)
    for path in shard_files(results, stage, "rejects"):
        file = pq.ParquetFile(path)
        columns = [c for c in ("id", "url", "text", "reason") if c in file.schema_arrow.names]
        for batch in file.iter_batches(columns=columns):
            for doc in batch.to_pylist():
                text = doc.pop("text", None)
                reason = doc.get("reason") or "unknown"
                if shown[reason] < per_reason:
                    shown[reason] += 1
                    doc["text"] = excerpt(text, chars)
                rows.append(doc)
    return rows


# ---------------------------------------------------------------------------------------------
# Small helpers


def excerpt(text: str | None, chars: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def doc_excerpt(doc: dict, chars: int) -> str:
    """A document's text (empty before extraction: raw HTML says little; the URL is shown)."""
    return excerpt(doc.get("text"), chars)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the tables show it; text as is; ``None`` as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.{digits}g}"
    return str(value)


def scalars(mapping: dict | None) -> list[tuple[str, str]]:
    """The flat scalar entries of a stats ``extra`` dict, as (key, formatted value)."""
    if not mapping:
        return []
    return [(k, fmt(v)) for k, v in sorted(mapping.items())
            if v is None or isinstance(v, (int, float, str, bool))]


def total(stats: list[dict], key: str) -> int:
    return sum(s.get(key) or 0 for s in stats)


def merged_counts(stats: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for s in stats:
        for reason, n in (s.get(key) or {}).items():
            counts[reason] += n
    return dict(counts)


def dig(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or ``None`` where any level is missing."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


# ---------------------------------------------------------------------------------------------
# Run summary


def timing_section(benchmarks: dict[str, list[dict]]) -> dict:
    """Wall time per rule from the benchmark files: jobs, total and slowest seconds, peak RSS."""
    rows = []
    for rule, jobs in benchmarks.items():
        seconds = [float(j["s"]) for j in jobs if j.get("s") not in (None, "", "NA")]
        rss = [float(j["max_rss"]) for j in jobs if j.get("max_rss") not in (None, "", "NA", "-")]
        rows.append({"rule": rule, "jobs": len(jobs), "seconds": sum(seconds),
                     "slowest": max(seconds, default=0.0), "max_rss_mb": max(rss, default=None)})
    rows.sort(key=lambda r: -r["seconds"])
    plot = bar_plot([r["rule"] for r in rows], {"seconds": [r["seconds"] for r in rows]},
                    "Wall time per rule (all jobs)", "seconds") if rows else None
    return {"rules": rows, "total_seconds": sum(r["seconds"] for r in rows), "plot": plot}


# ---------------------------------------------------------------------------------------------
# Data funnel


def funnel_section(toyweb: dict | None, stats: dict[str, list[dict]]) -> dict:
    """Documents and bytes after each data stage, and removals by reason."""
    rows = []
    if toyweb:
        rows.append({"stage": "toyweb (records written)", "docs_in": None, "docs_out": toyweb.get("docs_out"),
                     "bytes_in": None, "bytes_out": toyweb.get("bytes_out"), "removed": None, "not_run": False})
    for stage in FUNNEL_STAGES:
        shards = stats.get(stage) or []
        if not shards:
            rows.append({"stage": stage, "docs_in": None, "docs_out": None, "bytes_in": None,
                         "bytes_out": None, "removed": None, "not_run": True})
            continue
        rows.append({"stage": stage, "docs_in": total(shards, "docs_in"), "docs_out": total(shards, "docs_out"),
                     "bytes_in": total(shards, "bytes_in"), "bytes_out": total(shards, "bytes_out"),
                     "removed": sum(merged_counts(shards, "removed").values()), "not_run": False})
    ran = [r for r in rows if r["docs_out"] is not None]
    plot = bar_plot([r["stage"].split(" ")[0] for r in ran],
                    {"documents": [r["docs_out"] for r in ran],
                     "kB": [(r["bytes_out"] or 0) / 1e3 for r in ran]},
                    "Documents and kilobytes after each stage", "count (log)", logy=True) if ran else None
    removals = []
    for stage in FILTER_STAGES:
        shards = stats.get(stage) or []
        docs, nbytes = merged_counts(shards, "removed"), merged_counts(shards, "removed_bytes")
        for reason in sorted(docs, key=lambda r: -docs[r]):
            removals.append({"stage": stage, "reason": reason, "docs": docs[reason], "bytes": nbytes.get(reason)})
    splits = split_counts(stats.get("split") or [])
    return {"rows": rows, "plot": plot, "removals": removals, "splits": splits}


def split_counts(shards: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for s in shards:
        for split, n in (dig(s, "extra", "docs_per_split") or {}).items():
            counts[split] += n
    return dict(counts)


def examples_section(rejects: dict[str, list[dict]], kept: dict[str, list[dict]], per_reason: int,
                     chars: int) -> list[dict]:
    """Per filter stage: a few removed documents for each reason and a few kept ones."""
    stages = []
    for stage in FILTER_STAGES:
        by_reason: dict[str, list[dict]] = defaultdict(list)
        for doc in rejects.get(stage) or []:
            reason = doc.get("reason") or "unknown"
            if "text" in doc and len(by_reason[reason]) < per_reason:
                by_reason[reason].append({"url": doc.get("url") or "", "text": doc_excerpt(doc, chars)})
        stages.append({
            "stage": stage,
            "removed": [{"reason": r, "docs": docs} for r, docs in sorted(by_reason.items())],
            "kept": [{"url": d.get("url") or "", "text": doc_excerpt(d, chars)}
                     for d in (kept.get(stage) or [])[:per_reason]],
        })
    return stages


def planted_section(truth: list[dict], rejects: dict[str, list[dict]], final: dict[str, dict]) -> list[dict]:
    """The toy web's planted oddities and what became of each: removed (stage, reason) or kept.

    ``final`` maps a document id to ``{"split", "text"}`` for documents in the curated corpus;
    the full text is shown so planted markup (a literal ``<script>``) can be seen as text.
    """
    fate_of: dict[str, str] = {}
    for stage in FILTER_STAGES:
        for doc in rejects.get(stage) or []:
            fate_of.setdefault(doc.get("id"), f"removed by {stage}: {doc.get('reason')}")
    rows = []
    for page in truth:
        doc = final.get(page.get("id"))
        fate = f"kept ({doc['split']})" if doc else fate_of.get(page.get("id"), "not found")
        rows.append({"special": page.get("special") or "", "kind": page.get("kind") or "",
                     "url": page.get("url") or "", "fate": fate, "text": (doc or {}).get("text", "")})
    return rows


def largest_clusters(members: list[dict], limit: int) -> list[list[dict]]:
    """The ``limit`` largest clusters (two or more members) of dedup's clusters.parquet rows."""
    by_cluster: dict[int, list[dict]] = defaultdict(list)
    for m in members:
        by_cluster[m["cluster"]].append(m)
    clusters = sorted((c for c in by_cluster.values() if len(c) > 1), key=lambda c: (-len(c), c[0]["cluster"]))
    return clusters[:limit]


def clusters_section(stats: dict | None, clusters: list[list[dict]], texts: dict[tuple[str, int], dict],
                     chars: int) -> dict:
    """Duplicate-cluster statistics and the given clusters with their members' URL and text."""
    if stats is None:
        return {"not_run": True}
    shown = [[{
        "shard": m["shard"], "keep": bool(m.get("keep")), "reason": m.get("reason") or "",
        "url": (texts.get((m["shard"], m["row"])) or {}).get("url") or "",
        "text": excerpt((texts.get((m["shard"], m["row"])) or {}).get("text"), chars),
    } for m in cluster] for cluster in clusters]
    extra = stats.get("extra") or {}
    removed = [(f"removed: {k}", fmt(v)) for k, v in sorted((stats.get("removed") or {}).items())]
    return {"not_run": False, "facts": scalars(extra) + removed,
            "sizes": sorted((int(k), v) for k, v in (extra.get("cluster_sizes") or {}).items()),
            "clusters": shown}


# ---------------------------------------------------------------------------------------------
# Tokenizer and packing


def tokenizer_section(stats: dict | None, token_headers: dict[str, list[dict]], vocab: list[bytes],
                      specials: list[str], longest: int, sample: list[tuple[int, str]]) -> dict:
    """Vocabulary, bytes per token per split, the longest vocabulary entries, a sample encoding."""
    if stats is None:
        return {"not_run": True}
    per_split = []
    for split in SPLITS:
        headers = token_headers.get(split) or []
        tokens = sum(dig(h, "stats", "extra", "tokens") or h.get("count") or 0 for h in headers)
        nbytes = sum(dig(h, "stats", "bytes_in") or 0 for h in headers)
        docs = sum(h.get("n_docs") or 0 for h in headers)
        per_split.append({"split": split, "docs": docs, "tokens": tokens, "bytes": nbytes,
                          "bytes_per_token": nbytes / tokens if tokens else None})
    entries = sorted(range(len(vocab)), key=lambda i: (-len(vocab[i]), i))[:longest]
    return {
        "not_run": False,
        "facts": scalars(stats.get("extra")),
        "special_tokens": specials,
        "per_split": per_split,
        "longest": [{"id": i, "bytes": len(vocab[i]), "text": vocab[i].decode("utf-8", "replace")} for i in entries],
        "sample": [{"id": i, "text": text} for i, text in sample],
    }


def packing_section(headers: dict[str, dict | None]) -> list[dict]:
    rows = []
    for split in SPLITS:
        header = headers.get(split)
        extra = dig(header, "stats", "extra") or {}
        rows.append({"split": split, "not_run": header is None,
                     "method": (header or {}).get("method"), "context_length": (header or {}).get("context_length"),
                     "sequences": (header or {}).get("n_seq"), "tokens": extra.get("tokens"),
                     "padding_fraction": extra.get("padding_fraction"),
                     "docs_cut_fraction": extra.get("docs_cut_fraction")})
    return rows


# ---------------------------------------------------------------------------------------------
# Training curves


def matching_keys(rows: list[dict], patterns: list[str]) -> list[str]:
    """Numeric columns of ``rows`` matching any pattern (``fnmatch``), in pattern order."""
    present: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if is_number(value):
                present.setdefault(key)
    keys: list[str] = []
    for pattern in patterns:
        keys += [k for k in present if fnmatch.fnmatchcase(k, pattern) and k not in keys]
    return keys


def curve(rows: list[dict], title: str, ylabel: str, patterns: list[str], x: str = "step") -> dict | None:
    """One plot of the columns matching ``patterns`` against ``x``; ``None`` when none exist."""
    keys = [k for k in matching_keys(rows, patterns) if k != x]
    if not keys:
        return None
    series = []
    for key in keys:
        points = [r for r in rows if is_number(r.get(key)) and is_number(r.get(x))]
        series.append(Series(key, [r[x] for r in points], [r[key] for r in points]))
    svg = line_plot(series, title, x, ylabel)
    return {"title": title, "svg": svg} if svg else None


def last_values(rows: list[dict]) -> list[tuple[str, str]]:
    """Each numeric column's last value over the run (eval-only columns included)."""
    last: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            if is_number(value):
                last[key] = value
    return [(k, fmt(v)) for k, v in sorted(last.items())]


CURVES = {
    "pretrain": [
        ("Loss against tokens seen", "loss (nats/token)", ["loss", "train_eval_loss", "val_loss"], "tokens"),
        ("Learning rate", "lr", ["lr"], "step"),
        ("Gradient norm (before clipping)", "grad norm", ["grad_norm"], "step"),
        ("Throughput", "tokens / s", ["tokens_per_s"], "step"),
        ("Model FLOPs utilisation", "MFU", ["mfu"], "step"),
    ],
    "sft": [
        ("SFT loss (assistant tokens)", "loss", ["loss", "heldout_loss"], "step"),
        ("Held-out chat answers", "fraction", ["heldout_answer_accuracy", "heldout_ends_properly"], "step"),
        ("Learning rate", "lr", ["lr"], "step"),
    ],
    "dpo": [
        ("DPO loss", "loss", ["loss", "heldout_loss"], "step"),
        ("Implicit rewards", "reward", ["rewards_chosen", "rewards_rejected", "heldout_rewards_chosen",
                                        "heldout_rewards_rejected", "rewards/chosen", "rewards/rejected"], "step"),
        ("Reward accuracy", "fraction", ["reward_accuracy", "heldout_reward_accuracy", "rewards/accuracies"], "step"),
        ("Reward margin", "margin", ["reward_margin", "heldout_reward_margin", "rewards/margins"], "step"),
        ("Held-out chat answers", "fraction", ["heldout_answer_accuracy", "heldout_arithmetic_accuracy"], "step"),
    ],
    "rl": [
        ("Mean reward of rollouts", "reward", ["reward", "accuracy"], "step"),
        ("Held-out pass@k", "fraction", ["heldout_pass_at_*", "pass@*", "pass_at_*"], "step"),
        ("Completion length", "tokens", ["completion_length"], "step"),
        ("Clip fraction and entropy", "value", ["clip_fraction", "entropy", "kl*"], "step"),
    ],
}


def training_section(stage: str, rows: list[dict], stats: dict | None) -> dict:
    """Curves of a training stage's metrics.jsonl and the scalars of its stats.json."""
    if not rows and stats is None:
        return {"stage": stage, "not_run": True}
    plots = [c for spec in CURVES[stage] if (c := curve(rows, *spec))]
    return {"stage": stage, "not_run": False, "steps": len(rows), "plots": plots,
            "stats": scalars((stats or {}).get("extra")), "last": last_values(rows),
            "wall_seconds": (stats or {}).get("wall_seconds")}


# ---------------------------------------------------------------------------------------------
# Decontamination


def decontamination_section(report: dict | None, stats: dict | None, examples: int) -> dict:
    """The contamination table, one row per evaluation set, and where its first items were found."""
    if report is None:
        return {"not_run": True}
    sets = []
    for name, s in sorted(report.get("sets", {}).items()):
        found = [{"prompt": f.get("prompt"), "answer": fmt(f.get("answer")), "hits": f.get("hits"),
                  "where": ", ".join(f"{w.get('file')}:{w.get('id', w.get('line'))}" for w in f.get("where", [])[:3])}
                 for f in s.get("found", [])[:examples]]
        sets.append({"name": name, "n_items": s.get("items"), "contaminated": s.get("contaminated"),
                     "remaining": s.get("remaining"), "report_only": s.get("report_only"), "found": found})
    files = [{"file": name, "texts": f.get("documents", f.get("rows")), "contaminated": f.get("contaminated"),
              "dropped": f.get("dropped")} for name, f in sorted(report.get("training_files", {}).items())]
    facts = [("n-gram (words)", fmt(report.get("ngram"))), ("action", report.get("action", "")),
             ("train documents dropped", fmt(dig(stats, "removed", "contaminated") or 0)),
             ("post-training rows dropped", fmt(dig(stats, "extra", "posttrain_rows_dropped"))),
             ("seconds", fmt(dig(stats, "wall_seconds")))]
    return {"not_run": False, "facts": facts, "sets": sets, "files": files}


# ---------------------------------------------------------------------------------------------
# Evaluation


EVAL_ROWS = [  # (table label, plot label or None for non-accuracies, path in evaluate/<model>.json)
    ("val loss (nats/token)", None, ("val", "loss")),
    ("val bits per byte", None, ("val", "bits_per_byte")),
    ("test loss (nats/token)", None, ("test", "loss")),
    ("test bits per byte", None, ("test", "bits_per_byte")),
    ("memorisation: continuations of held-out prefixes copying a train span", None, ("memorisation", "rate")),
    ("memorisation: longest copied train span (tokens)", None, ("memorisation", "longest_span")),
    ("memorisation: the held-out text's own rate (reference)", None, ("memorisation", "reference_rate")),
    (
        "fact probes, training phrasing: choice accuracy",
        "facts (train phrasing)",
        ("facts_train_phrasing", "choice_accuracy"),
    ),
    (
        "fact probes, held-out phrasing: choice accuracy",
        "facts (held-out)",
        ("facts_heldout_phrasing", "choice_accuracy"),
    ),
    ("fact probes, held-out phrasing: greedy accuracy", None, ("facts_heldout_phrasing", "greedy_accuracy")),
    ("arithmetic, few-shot completion: pass@1 (held-out facts)", "arithmetic few-shot",
     ("arithmetic_held_out", "accuracy")),
    ("chat: held-out fact questions, accuracy", "chat facts", ("chat", "facts_held_out", "accuracy")),
    ("chat: replies that end with <|end|>", None, ("chat", "facts_held_out", "ends_properly")),
    ("chat: arithmetic word problems, pass@1 (held-out facts)", "chat arithmetic",
     ("chat", "arithmetic_held_out", "accuracy")),
]
# (label, path with "{side}" for in_distribution / held_out): the generalisation table, each
# model's in-distribution and held-out figures side by side (llmpipe/tasks/heldout.py)
SPLIT_ROWS = [
    ("fact probes (train phrasing): choice accuracy", ("facts_train_phrasing", "choice_accuracy_{side}")),
    ("arithmetic, few-shot completion: pass@1", ("arithmetic_{side}", "accuracy")),
    ("chat: fact questions, accuracy", ("chat", "facts_{side}", "accuracy")),
    ("chat: arithmetic word problems, greedy pass@1", ("chat", "arithmetic_{side}", "accuracy")),
]
SIDES = ("in_distribution", "held_out")


def split_table(metrics: dict[str, dict | None]) -> list[dict]:
    """Rows of SPLIT_ROWS: per model, the in-distribution then the held-out value."""
    rows = []
    for label, path in SPLIT_ROWS:
        cells = []
        for model in MODELS:
            for side in SIDES:
                data = metrics.get(model)
                cells.append(fmt(dig(data, *(k.format(side=side) for k in path))) if data else "not run")
        rows.append({"metric": label, "cells": cells})
    return rows


def evaluation_section(metrics: dict[str, dict | None], generations: int) -> dict:
    """One table with every model side by side, a plot of its accuracies, and generations."""
    models = [m for m in MODELS if metrics.get(m) is not None]
    table = [{"metric": label, "cells": [fmt(dig(metrics.get(m), *path)) if metrics.get(m) else "not run"
                                          for m in MODELS]}
             for label, _, path in EVAL_ROWS]
    accuracies = {short: [dig(metrics[m], *path) or 0.0 for m in models] for _, short, path in EVAL_ROWS
                  if short and any(is_number(dig(metrics[m], *path)) for m in models)}
    plot = bar_plot(models, accuracies, "Accuracies by stage", "fraction") if models else None
    prompts: dict[str, dict[str, str]] = {}
    for model in models:
        for sample in metrics[model].get("samples") or []:
            prompts.setdefault(sample.get("prompt", ""), {})[model] = sample.get("completion", "")
    samples = [{"prompt": p, "completions": [by_model.get(m) for m in MODELS]} for p, by_model in prompts.items()]
    chat = []
    for task in ("facts_held_out", "arithmetic_held_out", "facts_in_distribution", "arithmetic_in_distribution"):
        questions: dict[str, dict] = {}
        for model in models:
            for example in (dig(metrics[model], "chat", task, "examples") or [])[:generations]:
                entry = questions.setdefault(
                    example.get("prompt", ""), {"answer": example.get("answer"), "replies": {}}
                )
                entry["replies"][model] = {"text": example.get("reply", ""), "correct": example.get("correct")}
        for prompt, entry in questions.items():
            chat.append({"task": task.replace("_", " "), "prompt": prompt, "answer": fmt(entry["answer"]),
                         "replies": [entry["replies"].get(m) for m in MODELS]})
    return {"models": MODELS, "ran": models, "table": table, "split_table": split_table(metrics), "sides": SIDES,
            "plot": plot, "samples": samples, "chat": chat}
