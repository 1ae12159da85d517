"""Data-stage quality against the toy web's ground truth: URL/binary removal, extraction, dedup.

Run by hand after ``snakemake --cores all`` on the default toy web:

    python benchmarks/data_quality.py results
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from llmpipe.data import scoring

# metric -> (goal, True when higher is better); the acceptance numbers
GOALS = {
    "removal precision": (0.99, True), "removal recall": (0.99, True),
    "extraction mean recall": (0.95, True), "extraction mean chrome": (0.05, False),
    "articles with recall >= 0.95": (None, True), "articles with chrome <= 0.05": (None, True),
    "near-copy recall": (0.95, True), "exact-copy recall": (None, True), "dedup precision": (0.98, True),
}


def ids(results: Path, stage: str, part: str) -> set[str]:
    return set(scoring.read_stage(results, stage, part, ["id"])["id"])


def measure(results: Path, truth: pd.DataFrame) -> tuple[dict[str, float | None], list[str]]:
    """Every metric the stages' outputs allow, and notes on what could not be measured."""
    metrics: dict[str, float | None] = {}
    notes = []
    ingested = ids(results, "ingest", "docs")
    if ingested:
        removal = scoring.removal_scores(truth, ingested, ids(results, "url_filter", "rejects"))
        metrics["removal precision"], metrics["removal recall"] = removal["precision"], removal["recall"]
        notes += [f"removal missed: {u}" for u in removal["missed"][:3]]
        notes += [f"removal wrongly removed: {u}" for u in removal["wrongly_removed"][:3]]
    else:
        notes.append("ingest has not run: no removal scores")
    extracted = scoring.read_stage(results, "extract", "docs", ["id", "text"])
    if len(extracted):
        summary = scoring.extraction_scores(scoring.extraction_table(truth, extracted))
        metrics.update({
            "extraction mean recall": summary["mean_recall"], "extraction mean chrome": summary["mean_chrome"],
            "articles with recall >= 0.95": summary["share_recall_ok"],
            "articles with chrome <= 0.05": summary["share_chrome_ok"],
        })
        notes.append(f"extraction: {summary['missing']} of {summary['articles']} articles missing")
        notes += [f"most chrome: {r['url']} ({r['chrome']:.2f})" for r in summary["worst_chrome"][:3]]
    else:
        notes.append("extract has not run: no extraction scores")
    kept, removed = ids(results, "dedup", "docs"), ids(results, "dedup", "rejects")
    if kept or removed:
        dedup = scoring.dedup_scores(truth, kept, removed)
        metrics["near-copy recall"] = dedup["recall_by_kind"]["near_copy"]
        metrics["exact-copy recall"] = dedup["recall_by_kind"]["exact_copy"]
        metrics["dedup precision"] = dedup["precision"]
        notes.append(
            f"dedup: {dedup['found']} of {dedup['pairs']} planted pairs found, {dedup['removed']} pages removed"
        )
        notes += [f"dedup missed: {u}" for u in dedup["missed"][:3]]
        notes += [f"dedup wrongly removed: {u}" for u in dedup["wrongly_removed"][:3]]
    else:
        notes.append("dedup has not run: no dedup scores")
    return metrics, notes


def table(metrics: dict[str, float | None]) -> str:
    lines = [f"{'metric':<32}{'value':>8}{'goal':>8}  ok"]
    for name, value in metrics.items():
        goal, higher = GOALS[name]
        shown = "n/a" if value is None else f"{value:.4f}"
        if goal is None or value is None:
            lines.append(f"{name:<32}{shown:>8}{'':>8}")
            continue
        ok = value >= goal if higher else value <= goal
        lines.append(f"{name:<32}{shown:>8}{('>=' if higher else '<=') + str(goal):>8}  {'yes' if ok else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the pipeline's results directory")
    args = parser.parse_args(argv)
    truth_path = args.results / "toyweb" / "truth.parquet"
    if not truth_path.is_file():
        print(f"no ground truth at {truth_path}: run the pipeline on the toy web first", file=sys.stderr)
        return 1
    metrics, notes = measure(args.results, pd.read_parquet(truth_path))
    print(table(metrics))
    for note in notes:
        print("  " + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
