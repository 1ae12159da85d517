"""``llmpipe report``: read a run's results tree and write one self-contained HTML page.

The page has no external resources: CSS is inline and plots are inline SVG. Every value that
came from the web or from a model goes through Jinja's autoescaping, so a crawled page that
contains ``<script>`` is shown as text and never runs.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
from pathlib import Path

import jinja2
import pyarrow.parquet as pq
import yaml
from markupsafe import Markup

from llmpipe import layout
from llmpipe.config import stage_params
from llmpipe.io import atomic_path
from llmpipe.report import environment
from llmpipe.report import sections as sec

TEMPLATE = "report.html.j2"


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--results", required=True, help="the run's results directory")
    parser.add_argument("--benchmarks", help="Snakemake benchmark files (default: RESULTS/benchmarks)")
    parser.add_argument("--run-config", help="the whole config the run used, as JSON (shown in the report)")
    parser.add_argument("--output", required=True, help="report.html to write")


def read_vocab(path: Path) -> tuple[list[bytes], list[str]]:
    """Vocabulary entries (bytes) and special tokens of an llmpipe tokenizer.json."""
    data = sec.read_json_file(path)
    if data is None:
        return [], []
    try:
        return [base64.b64decode(t) for t in data["tokens"]], list(data.get("special_tokens") or [])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not an llmpipe tokenizer ({err})") from None


def sample_tokens(path: Path, sentence: str) -> list[tuple[int, str]]:
    """``sentence`` encoded by the trained tokenizer, each token with its text."""
    if not path.exists():
        return []
    from llmpipe.tokenizer.bpe import Tokenizer

    tokenizer = Tokenizer.load(path)
    return [(i, tokenizer.decode_bytes([i]).decode("utf-8", "replace")) for i in tokenizer.encode_ordinary(sentence)]


def read_planted(results: Path) -> tuple[list[dict], dict[str, dict]]:
    """The toy web's planted articles and, for those in the curated corpus, their split and text."""
    truth_path = Path(layout.toyweb_truth_file(results))
    if not truth_path.exists():
        return [], {}
    truth = [r for r in sec.read_rows(truth_path, ["id", "url", "kind", "special"])
             if r.get("special") and r.get("kind") == "article"]
    if not truth:
        return [], {}
    ids = [r["id"] for r in truth]
    final: dict[str, dict] = {}
    for split in sec.SPLITS:
        for path in sec.matching(layout.split_file(results, split, "*")):
            for row in pq.read_table(path, columns=["id", "text"], filters=[("id", "in", ids)]).to_pylist():
                final[row["id"]] = {"split": split, "text": row["text"]}
    return truth, final


def read_cluster_texts(results: Path, members: list[dict]) -> dict[tuple[str, int], dict]:
    """(shard, row) -> url and text of duplicate-cluster members, from the quality stage's docs."""
    texts: dict[tuple[str, int], dict] = {}
    by_shard: dict[str, list[int]] = {}
    for m in members:
        by_shard.setdefault(m["shard"], []).append(m["row"])
    for shard, rows in by_shard.items():
        path = Path(layout.shard_file(results, "quality", "docs", shard))
        if path.exists():
            table = pq.read_table(path, columns=["url", "text"]).take(rows)
            for row, doc in zip(rows, table.to_pylist()):
                texts[(shard, row)] = doc
    return texts


def first_file(pattern: str) -> Path | None:
    return next(iter(sec.matching(pattern)), None)


def collect(results: Path, benchmarks: Path, params: dict, run_config: dict | None, cwd: Path) -> dict:
    """Everything the template shows, read from ``results`` (missing stages render as not run)."""
    stats = {stage: sec.read_stage_stats(results, stage) for stage in sec.FUNNEL_STAGES}
    rejects = {stage: sec.read_rejects(results, stage, params["examples_per_reason"], params["excerpt_chars"])
               for stage in sec.FILTER_STAGES}
    kept = {stage: sec.read_rows(path, ["url", "text"], limit=params["examples_per_reason"])
            for stage in sec.FILTER_STAGES if (path := first_file(layout.shard_file(results, stage, "docs", "*")))}
    truth, final = read_planted(results)

    members = sec.read_rows(layout.clusters_file(results), ["shard", "row", "id", "cluster", "keep", "reason"])
    largest = sec.largest_clusters(members, params["duplicate_clusters"])
    clusters = sec.clusters_section(sec.read_json_file(layout.clusters_stats_file(results)), largest,
                                    read_cluster_texts(results, [m for c in largest for m in c]),
                                    params["excerpt_chars"])

    tokenizer_path = Path(layout.tokenizer_file(results))
    vocab, specials = read_vocab(tokenizer_path)
    token_headers = {split: [sec.read_json_file(p)
                             for p in sec.matching(layout.tokens_file(results, split, "*", "header"))]
                     for split in sec.SPLITS}
    training = {stage: sec.training_section(stage, sec.read_jsonl(layout.metrics_file(results, stage)),
                                            sec.read_json_file(layout.training_stats_file(results, stage)))
                for stage in sec.MODELS}
    metrics = {model: sec.read_json_file(layout.evaluation_file(results, model)) for model in sec.MODELS}
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": environment.git_commit(cwd),
        "versions": environment.package_versions(),
        "hardware": environment.hardware(),
        "config": yaml.safe_dump(run_config, sort_keys=False) if run_config is not None else None,
        "timing": sec.timing_section(sec.read_benchmarks(benchmarks)),
        "funnel": sec.funnel_section(sec.read_json_file(layout.toyweb_stats_file(results)), stats),
        "examples": sec.examples_section(rejects, kept, params["examples_per_reason"], params["excerpt_chars"]),
        "planted": sec.planted_section(truth, rejects, final),
        "clusters": clusters,
        "tokenizer": sec.tokenizer_section(sec.read_json_file(layout.tokenizer_stats_file(results)), token_headers,
                                           vocab, specials, params["longest_merges"],
                                           sample_tokens(tokenizer_path, params["sample_sentence"])),
        "packing": sec.packing_section({s: sec.read_json_file(layout.packed_file(results, s, "header.json"))
                                        for s in sec.SPLITS}),
        "decontamination": sec.decontamination_section(sec.read_json_file(layout.contamination_file(results)),
                                                       sec.read_json_file(layout.decontaminate_stats_file(results)),
                                                       params["generations"]),
        "training": training,
        "evaluation": sec.evaluation_section(metrics, params["generations"]),
    }


def render(context: dict) -> str:
    """The page: the packaged template with autoescaping on for every value."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("llmpipe.report", "."),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = sec.fmt
    env.filters["svg"] = Markup  # only for plots this package drew
    return env.get_template(TEMPLATE).render(**context)


def run(args: argparse.Namespace, stage: str) -> None:
    params = stage_params(args.params, args.config, "report")
    results = Path(args.results)
    if not results.is_dir():
        raise SystemExit(f"llmpipe report: results directory {results} does not exist")
    run_config = json.loads(args.run_config) if args.run_config else None
    benchmarks = Path(args.benchmarks) if args.benchmarks else results / "benchmarks"
    page = render(collect(results, benchmarks, params, run_config, cwd=Path.cwd()))
    with atomic_path(args.output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"llmpipe report: wrote {args.output} ({len(page.encode()) / 1e3:.0f} kB)")
