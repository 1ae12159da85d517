"""Peak memory and throughput of every data job on one large shard (issue 12).

Writes a one-file toy web (``toyweb: {files: 1, articles: N}``; the default N gives a ~1 GB
``.warc.gz``, 120000 about 300 MB), then runs each data job on it as the rules do, one ``llmpipe``
subprocess each: ingest, url-filter, extract, quality, dedup-signatures, dedup-buckets (every
band), dedup-clusters, dedup-filter, split. Prints each job's wall time, documents per second,
peak RSS as ``/usr/bin/time`` measures it, and the peak the stage reports itself
(``extra.peak_rss_mb`` in its stats, or its log line). Stage settings are config.yaml's.

    python benchmarks/data_memory.py                      # ~1 GB shard (extract takes a while)
    python benchmarks/data_memory.py --articles 120000    # ~300 MB
    python benchmarks/data_memory.py --articles 5000      # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from llmpipe import layout

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARTICLES = 400_000  # ~2.5 KB of .warc.gz per article: ~1 GB
SHARD = "toyweb-000"


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout + stderr) of one subprocess. /usr/bin/time measures the
    command itself; os.wait4's ru_maxrss would include this process's own peak, inherited across exec."""
    timer = "/usr/bin/time"
    start = time.perf_counter()
    if os.path.exists(timer):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
            done = subprocess.run([timer, "-o", out.name, "-f", "%M", *cmd], capture_output=True, text=True)
            peak = int(out.read().split()[-1]) / 1024 if done.returncode == 0 else float("nan")
    else:  # no GNU time: the child's rusage, an upper bound (see above)
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        done = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), output, "")
        peak = usage.ru_maxrss / 1024
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return wall, peak, done.stdout + done.stderr


def rows(path: str | Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def reported(stats_path: str | Path | None, output: str) -> float | None:
    """The peak the job reports itself: its stats' extra.peak_rss_mb, else its log's "peak RSS N MiB"."""
    if stats_path is not None and Path(stats_path).exists():
        value = json.loads(Path(stats_path).read_text()).get("extra", {}).get("peak_rss_mb")
        if value is not None:
            return value
    found = re.findall(r"peak RSS (\d+) MiB", output)
    return max(map(float, found)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=DEFAULT_ARTICLES, help="toyweb.articles (one file)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="stage settings")
    parser.add_argument("--workdir", help="keep the shard and outputs here (default: a temporary directory)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="data_memory."))
    try:
        run(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, root: Path) -> None:
    llmpipe = [sys.executable, "-m", "llmpipe.cli"]
    config = ["--config", args.config]
    bands = yaml.safe_load(Path(args.config).read_text())["dedup"]["bands"]
    warc = root / f"{SHARD}.warc.gz"
    results = root / "results"

    def docs(stage: str, kind: str = "docs") -> str:
        return layout.shard_file(results, stage, kind, SHARD)

    toyweb = json.dumps({"seed": args.seed, "files": 1, "articles": args.articles})
    world = json.dumps(yaml.safe_load(Path(args.config).read_text())["world"])
    wall, peak, _ = measured([*llmpipe, "toyweb", "--params", toyweb, "--world", world, "--warc", str(warc),
                              "--truth", str(root / "truth.parquet"), "--stats", str(root / "toyweb.json")])
    print(f"toy web: {args.articles:,} articles -> {warc.stat().st_size / 2**20:,.0f} MiB .warc.gz"
          f" ({wall:.0f} s, {peak:.0f} MiB); {os.cpu_count()} CPUs", flush=True)

    signatures = f"{results}/dedup/signatures/{SHARD}.npz"
    pairs = [f"{results}/dedup/buckets/{band}.parquet" for band in range(bands)]
    jobs: list[tuple[str, list[list[str]], str, str | None]] = [  # (job, commands, input, stats)
        ("ingest", [["ingest", *config, "--input", str(warc), "--output", docs("ingest"),
                     "--stats", docs("ingest", "stats")]], str(warc), docs("ingest", "stats")),
    ]
    for command, source, stage in (("url-filter", "ingest", "url_filter"), ("extract", "url_filter", "extract"),
                                   ("quality", "extract", "quality")):
        jobs.append((command, [[command, *config, "--input", docs(source), "--output", docs(stage),
                                "--rejects", docs(stage, "rejects"), "--stats", docs(stage, "stats")]],
                     docs(source), docs(stage, "stats")))
    jobs += [
        ("dedup-signatures", [["dedup-signatures", *config, "--input", docs("quality"), "--output", signatures]],
         docs("quality"), None),
        (f"dedup-buckets (x{bands})",
         [["dedup-buckets", *config, "--band", str(band), "--input", signatures, "--output", pairs[band]]
          for band in range(bands)], docs("quality"), None),
        ("dedup-clusters", [["dedup-clusters", *config, "--signatures", signatures, "--pairs", *pairs,
                             "--output", layout.clusters_file(results),
                             "--stats", layout.clusters_stats_file(results)]],
         docs("quality"), layout.clusters_stats_file(results)),
        ("dedup-filter", [["dedup-filter", *config, "--input", docs("quality"),
                           "--clusters", layout.clusters_file(results), "--output", docs("dedup"),
                           "--rejects", docs("dedup", "rejects"), "--stats", docs("dedup", "stats")]],
         docs("quality"), docs("dedup", "stats")),
        ("split", [["split", *config, "--input", docs("dedup"),
                    *(f"--{name}={layout.split_file(results, name, SHARD)}" for name in ("train", "val", "test")),
                    "--stats", layout.shard_file(results, "split", "stats", SHARD)]],
         docs("dedup"), layout.shard_file(results, "split", "stats", SHARD)),
    ]
    print(f"{'job':<22}{'docs in':>10}{'wall s':>9}{'docs/s':>10}{'peak RSS MiB':>14}{'self-reported':>15}")
    for name, commands, source, stats in jobs:
        walls, peaks, outputs = [], [], []
        for command in commands:
            wall, peak, output = measured([*llmpipe, *command])
            walls.append(wall)
            peaks.append(peak)
            outputs.append(output)
        n = 0 if source.endswith(".warc.gz") else rows(source)
        if name == "ingest":
            n = json.loads(Path(stats).read_text())["docs_in"]
        own = reported(stats, "\n".join(outputs))
        print(f"{name:<22}{n:>10,}{sum(walls):>9.1f}{n / sum(walls):>10,.0f}{max(peaks):>14,.0f}"
              f"{'' if own is None else f'{own:,.0f}':>15}", flush=True)


if __name__ == "__main__":
    main()
