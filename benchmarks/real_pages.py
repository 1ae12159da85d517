"""Real pages as a second input: extraction precision/recall on real HTML next to the toy web's.

Wraps the bench corpus's ~1,700 real pages (Python 3.11 and PostgreSQL 15 manuals, unpacked by
/work/shared/tools/build_bench_corpus.sh) into .warc.gz files the way real crawlers store them — a
seeded mix of plain, chunked, gzip, chunked+gzip, deflate and br bodies, some with lying headers
(llmpipe/data/realpages.py) — and runs the data DAG on them end to end (a real Snakemake run in a
scratch directory, ``input.source: warc``, config.yaml's stage settings, ``--cores 2``). Then the
same DAG on a small toy web. Prints the funnel of each and extraction precision/recall against the
ground truth: for real pages the main text in their markup (Python's ``div.body``, PostgreSQL's
``body#docContent`` without its ``navheader``/``navfooter`` divs), for the toy web its truth.parquet.

The metric is llmpipe/data/scoring.py's (benchmarks/data_quality.py scores the toy web with it):
on word multisets, recall = the share of the true main text's words that the extracted text holds,
precision = the share of extracted words that are main text (1 - its "chrome" fraction). A page
lost before or by extraction counts with recall 0. ``micro`` pools the words of all pages.

    python benchmarks/real_pages.py                        # all pages, 4 files, + a toy web
    python benchmarks/real_pages.py --pages 300 --toyweb-articles 300 --workdir /tmp/rp
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

from llmpipe import layout
from llmpipe.data import scoring
from llmpipe.data.realpages import corpus_pages, find_corpus, write_crawl

REPO = Path(__file__).resolve().parent.parent
CORPUS_CANDIDATES = [os.environ.get("LLMPIPE_BENCH_CORPUS"), REPO / "bench-corpus", REPO.parent / "bench-corpus",
                     "/tmp/bench-corpus"]
FUNNEL = ("ingest", "url_filter", "extract", "quality", "dedup")


# ---------------------------------------------------------------------------------------------
# Inputs


def build_real_crawl(corpus: Path, directory: Path, files: int, pages: int | None, seed: int) -> tuple[list[Path],
                                                                                                      pd.DataFrame]:
    """The corpus's pages (all, or a seeded sample) as ``files`` .warc.gz files; (paths, truth)."""
    directory.mkdir(parents=True, exist_ok=True)
    found = corpus_pages(corpus, pages, seed)
    paths = [directory / f"real-{k:03d}.warc.gz" for k in range(files)]
    truth = pd.DataFrame(write_crawl(found, paths, seed))
    truth.to_parquet(directory / "truth.parquet")
    return paths, truth


def config_with(base: Path, results: str, **sections: dict) -> dict:
    """config.yaml with ``sections`` merged in (one level deep) and ``results`` set."""
    config = copy.deepcopy(yaml.safe_load(base.read_text()))
    config["results"] = results
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


# ---------------------------------------------------------------------------------------------
# A real Snakemake run of the data rules in a scratch directory


def run_dag(workdir: Path, config: dict, targets: list[str], cores: int = 2, env: dict | None = None) -> float:
    """``snakemake --cores N targets`` with the repository's Snakefile in ``workdir`` (its own
    config.yaml, results and .snakemake); returns the wall seconds. Fails loudly."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), *targets, "--quiet", "rules"]  # targets first: --quiet takes a list
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return wall


def shard_names(config: dict, warcs: list[Path]) -> list[str]:
    if config["input"]["source"] == "toyweb":
        return [f"toyweb-{i:03d}" for i in range(config["toyweb"]["files"])]
    return [p.name.removesuffix(".gz").removesuffix(".warc") for p in warcs]


def stage_stats(results: Path, stage: str, shards: list[str]) -> list[dict]:
    return [json.loads(Path(layout.shard_file(results, stage, "stats", s)).read_text()) for s in shards]


# ---------------------------------------------------------------------------------------------
# Scores


def extraction(truth: pd.DataFrame, extracted: pd.DataFrame) -> dict:
    """Mean and pooled (micro) precision/recall of extraction over every truth page."""
    table = scoring.extraction_table(truth, extracted)
    texts = dict(zip(extracted["id"], extracted["text"]))
    true_words = got_words = hit_true = hit_got = 0
    for row in truth.itertuples(index=False):
        t, g = scoring.word_counts(row.main_text), scoring.word_counts(texts.get(row.id))
        allowed = t + scoring.word_counts(row.title)
        true_words += sum(t.values())
        got_words += sum(g.values())
        hit_true += sum((t & g).values())
        hit_got += sum((allowed & g).values())
    present = table[~table["missing"]]
    return {
        "pages": len(table), "extracted": len(present),
        "precision": float(1 - present["chrome"].mean()) if len(present) else float("nan"),
        "recall": float(table["recall"].mean()) if len(table) else float("nan"),
        "micro_precision": hit_got / got_words if got_words else float("nan"),
        "micro_recall": hit_true / true_words if true_words else float("nan"),
        "table": table,
    }


def funnel(results: Path, shards: list[str]) -> dict[str, tuple[int, int, Counter]]:
    """stage -> (docs in, docs kept, drop reasons), summed over shards."""
    out = {}
    for stage in FUNNEL:
        stats = stage_stats(results, stage, shards)
        reasons = Counter()
        for s in stats:
            reasons.update({k: v["docs"] if isinstance(v, dict) else v for k, v in s.get("removed", {}).items()})
        out[stage] = (sum(s["docs_in"] for s in stats), sum(s["docs_out"] for s in stats), reasons)
    return out


def toyweb_truth(results: Path) -> pd.DataFrame:
    """The toy web's clean articles, in the real pages' truth columns."""
    truth = pd.read_parquet(layout.toyweb_truth_file(results))
    return truth[truth["kind"] == "article"]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="the bench corpus (default: $LLMPIPE_BENCH_CORPUS, "
                        "bench-corpus beside or in the repository, /tmp/bench-corpus)")
    parser.add_argument("--pages", type=int, help="a seeded sample of this many pages (default: all)")
    parser.add_argument("--files", type=int, default=4, help="WARC files the real pages are spread over")
    parser.add_argument("--toyweb-articles", type=int, default=600, help="toy web size (2 files)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml", help="stage settings")
    parser.add_argument("--workdir", type=Path, help="keep WARCs and results here (default: a temporary directory)")
    args = parser.parse_args(argv)

    corpus = args.corpus if args.corpus is not None else find_corpus(CORPUS_CANDIDATES)
    if corpus is None or find_corpus([corpus]) is None:
        raise SystemExit("no bench corpus: build it with /work/shared/tools/build_bench_corpus.sh /tmp/bench-corpus "
                         "(or pass --corpus / set LLMPIPE_BENCH_CORPUS)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="real_pages."))
    try:
        return run(args, corpus, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, corpus: Path, workdir: Path) -> int:
    warcs, truth = build_real_crawl(corpus, workdir / "real" / "warcs", args.files, args.pages, args.seed)
    styles = Counter(truth["style"])
    size = sum(p.stat().st_size for p in warcs) / 2**20
    print(f"real pages: {len(truth)} from {corpus} ({dict(Counter(truth['manual']))}) -> {len(warcs)} .warc.gz,"
          f" {size:.1f} MiB; stored as {dict(sorted(styles.items()))}", flush=True)

    runs = {}
    real_config = config_with(args.config, "results", input={"source": "warc", "warc": [str(p) for p in warcs]})
    toy_config = config_with(args.config, "results", toyweb={"seed": args.seed, "files": 2,
                                                              "articles": args.toyweb_articles})
    for name, config, source in (("real pages", real_config, warcs), ("toy web", toy_config, [])):
        root = workdir / ("real" if name == "real pages" else "toy")
        shards = shard_names(config, source)
        targets = [layout.shard_file("results", "split", "stats", s) for s in shards]
        wall = run_dag(root, config, targets)
        results = root / "results"
        runs[name] = (results, shards, wall)
        print(f"{name}: data DAG (ingest .. split) on {len(shards)} shards in {wall:.0f} s", flush=True)

    truths = {"real pages": truth.assign(kind="article", title=None, genre=truth["manual"], special=truth["style"]),
              "toy web": toyweb_truth(runs["toy web"][0])}
    scores = {}
    print(f"\n{'funnel':<14}" + "".join(f"{s:>12}" for s in FUNNEL) + "   (docs kept; real pages | toy web)")
    for name, (results, shards, _) in runs.items():
        f = funnel(results, shards)
        print(f"{name:<14}" + "".join(f"{f[s][1]:>12,}" for s in FUNNEL) + f"   of {f['ingest'][0]:,} records")
        for stage in ("extract", "quality"):
            if f[stage][2]:
                print(f"{'':<14}{stage} drops: {dict(f[stage][2].most_common(6))}")
        extracted = scoring.read_stage(results, "extract", "docs", ["id", "text"])
        scores[name] = extraction(truths[name], extracted)

    print(f"\n{'extraction':<22}{'pages':>7}{'extracted':>11}{'precision':>11}{'recall':>9}"
          f"{'micro P':>9}{'micro R':>9}")
    for name, s in scores.items():
        print(f"{name:<22}{s['pages']:>7}{s['extracted']:>11}{s['precision']:>11.3f}{s['recall']:>9.3f}"
              f"{s['micro_precision']:>9.3f}{s['micro_recall']:>9.3f}")
        if name == "real pages":
            table = s["table"]
            for manual, t in table.groupby("genre"):
                present = t[~t["missing"]]
                print(f"  {manual:<20}{len(t):>7}{len(present):>11}{1 - present['chrome'].mean():>11.3f}"
                      f"{t['recall'].mean():>9.3f}")
            for style, t in table.groupby("special"):
                print(f"  stored {style:<13}{len(t):>7}{int((~t['missing']).sum()):>11}"
                      f"{1 - t.loc[~t['missing'], 'chrome'].mean():>11.3f}{t['recall'].mean():>9.3f}")
            print("  lowest recall:", ", ".join(f"{r.url.split('/')[-1]} {r.recall:.2f}"
                                                for r in table.nsmallest(5, "recall").itertuples()))
            present = table[~table["missing"]]
            print("  most chrome:  ", ", ".join(f"{r.url.split('/')[-1]} {r.chrome:.2f}"
                                                for r in present.nlargest(5, "chrome").itertuples()))
    print(f"\n(stage settings: {args.config}; {os.cpu_count()} CPUs; wall times include Snakemake's start)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
