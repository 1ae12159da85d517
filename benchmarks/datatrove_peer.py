"""llmpipe's data rules against datatrove's FineWeb-style pipeline, on the same WARC files.

datatrove:  WarcReader* -> URLFilter -> Trafilatura(favour_precision=True) -> GopherRepetitionFilter
            -> GopherQualityFilter -> C4QualityFilter(filter_no_terminal_punct=False)
            -> FineWebQualityFilter -> ParquetWriter, LocalPipelineExecutor, one task per file, 2 workers
llmpipe:    ingest -> url_filter -> extract -> quality, a real Snakemake run with --cores 2, the same
            filters (quality.c4.filter_no_terminal_punct: false)

*datatrove's WarcReader, wrapped to end a file at a clipped record or broken gzip member (counted):
stock, the toy web's one clipped final record raises in its task and the executor stops the run.
Language identification and PII masking are off on both (datatrove's language model downloads at
run time). Inputs: a toy web (``--toyweb-files`` files written by the toyweb stage) and the bench
corpus's real pages wrapped as crawlers store them (benchmarks/real_pages.py), when the corpus is
there. Prints wall time, docs/s (WARC response records read per second of wall time), peak RSS per
job, documents kept by each, the ratios, and the versions compared. Threads are pinned to 1
(OMP/MKL/OPENBLAS/...) in both.

datatrove pins an older trafilatura than llmpipe, so it runs in a virtual environment of its own,
created on first use (``--venv``, default ~/.cache/llmpipe-datatrove-venv: ``pip install
datatrove[processing] spacy warcio faust-cchardet python-magic pyarrow lxml_html_clean``: WarcReader
needs warcio, cchardet and magic (libmagic), and spacy is what its English word
tokenizer needs, no model download). This file is also the driver that venv's Python runs
(``--datatrove-child``), so the top level imports only the standard library.

    python benchmarks/datatrove_peer.py                              # toy web (7 files) + real pages
    python benchmarks/datatrove_peer.py --toyweb-articles 33000      # the issue's 43,750 records
    python benchmarks/datatrove_peer.py --backends trafilatura resiliparse   # llmpipe with each extractor
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path.home() / ".cache" / "llmpipe-datatrove-venv"
DATATROVE_REQUIREMENTS = ["datatrove[processing]==0.10.1", "spacy", "warcio", "faust-cchardet", "python-magic",
                          "pyarrow", "lxml_html_clean"]
THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                  "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS",
                                  "POLARS_MAX_THREADS", "ARROW_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
THREADS["TOKENIZERS_PARALLELISM"] = "false"
WORKERS = 2


# ---------------------------------------------------------------------------------------------
# The datatrove side (runs in the datatrove venv: standard library + datatrove only)


def process_peak_mib(pid: int | str) -> float:
    """A live process's peak resident set (VmHWM), MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            found += [int(c) for c in Path(task).read_text().split()]
        except OSError:
            pass
    return found


def peak_probe(out_dir: str):
    """A last pipeline step that passes documents through, then writes the task's peak RSS, one
    JSON file per rank: the worker's own (ru_maxrss, which runs the task) and its extraction
    sandbox's (datatrove runs trafilatura in a forked child: live, VmHWM, or reaped, ru_maxrss of
    RUSAGE_CHILDREN). The sandbox is forked from the worker and shares its pages copy-on-write,
    so the two are not added: the job's peak is reported as the worker's, the sandbox's beside it."""

    def probe(data, rank: int = 0, world_size: int = 1):
        n = 0
        for document in data or ():
            n += 1
            yield document
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        live = max((process_peak_mib(c) for c in children(os.getpid())), default=0.0)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        Path(out_dir, f"{rank:05d}.json").write_text(json.dumps(
            {"rank": rank, "pid": os.getpid(), "worker_mib": own, "sandbox_mib": max(live, reaped), "docs_out": n}))

    return probe


def datatrove_child(args) -> int:
    """Run the FineWeb-style pipeline over ``args.input`` (one task per WARC file)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        URLFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    class TolerantWarcReader(WarcReader):
        """WarcReader that ends a file at a broken gzip member or clipped record (counted as
        ``broken_file_tail``) instead of raising: stock, one clipped final record (the toy web
        plants one) raises EOFError in its task, and LocalPipelineExecutor then stops the whole
        run with the other files unread. What a user would wrap it in to get through a crawl."""

        def read_file(self, filepath: str):
            try:
                yield from super().read_file(filepath)
            except (EOFError, OSError, ValueError) as error:
                self.stat_update("broken_file_tail")
                print(f"{filepath}: {type(error).__name__}: {error}; rest of the file skipped", file=sys.stderr)

    files = sorted(glob.glob(os.path.join(args.input, args.glob)))
    out = Path(args.output)
    probes = out / "peaks"
    probes.mkdir(parents=True, exist_ok=True)
    executor = LocalPipelineExecutor(
        pipeline=[
            TolerantWarcReader(args.input, glob_pattern=args.glob),
            URLFilter(),
            Trafilatura(favour_precision=True, timeout=args.extract_timeout),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False),
            FineWebQualityFilter(),
            ParquetWriter(str(out / "docs")),
            peak_probe(str(probes)),
        ],
        tasks=len(files),
        workers=args.workers,
        logging_dir=str(out / "logs"),
    )
    start = time.perf_counter()
    executor.run()
    print(json.dumps({"wall_s": time.perf_counter() - start, "files": len(files)}))
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: inputs, both runs, the table


def ensure_venv(venv: Path) -> Path:
    """The venv's python, creating the venv (and installing datatrove) when it is missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import datatrove, spacy, warcio, cchardet, magic, pyarrow"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {' '.join(DATATROVE_REQUIREMENTS)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *DATATROVE_REQUIREMENTS], check=True)
    subprocess.run(probe, check=True)
    return python


def venv_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('datatrove', 'trafilatura', 'spacy', 'lxml')}))")
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)


def llmpipe_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    version = metadata.version("llmpipe") + f" ({commit.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''})"
    return {"llmpipe": version, "trafilatura": metadata.version("trafilatura")}


def run_datatrove(python: Path, warc_dir: Path, out: Path, env: dict, timeout: float) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--datatrove-child", "--input", str(warc_dir),
           "--glob", "*.warc.gz", "--output", str(out), "--workers", str(WORKERS), "--extract-timeout", str(timeout)]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "driver.log"
    start = time.perf_counter()
    # output to a file, not pipes: datatrove's forkserver processes outlive the driver and would
    # hold captured pipes open (run() then never returns); they are killed with the session
    with open(log, "w") as fh:
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        returncode = child.wait()
    wall = time.perf_counter() - start
    try:
        os.killpg(child.pid, 9)
    except ProcessLookupError:
        pass
    if returncode != 0:
        raise SystemExit(f"datatrove failed ({returncode}); see {log}:\n{log.read_text()[-4000:]}")
    import pyarrow.parquet as pq

    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(str(out / "docs" / "*.parquet")))
    peaks = [json.loads(p.read_text()) for p in sorted((out / "peaks").glob("*.json"))]
    stats = json.loads((out / "logs" / "stats.json").read_text())
    read = next((s["stats"].get("documents", {}).get("total") for s in stats
                 if "READER" in s.get("name", "").upper() or "Warc" in s.get("name", "")), None)
    completed = len(glob.glob(str(out / "logs" / "completions" / "*")))
    return {"wall_s": wall, "kept": kept, "read": read, "tasks_completed": completed, "tasks": len(peaks),
            "peak_job_mib": max((p["worker_mib"] for p in peaks), default=float("nan")),
            "peak_sandbox_mib": max((p["sandbox_mib"] for p in peaks), default=float("nan")),
            "steps": {s["name"]: s["stats"] for s in stats}}


def run_llmpipe(warcs: list[Path], workdir: Path, config_path: Path, env: dict, backend: str) -> dict:
    from real_pages import config_with, run_dag

    from llmpipe import layout

    config = config_with(config_path, "results", input={"source": "warc", "warc": [str(p) for p in warcs]},
                         extract={"backend": backend})
    config["quality"] = {**config["quality"], "languages": [], "pii": {**config["quality"]["pii"], "enabled": False},
                         "c4": {**config["quality"]["c4"], "filter_no_terminal_punct": False}}
    shards = [p.name.removesuffix(".gz").removesuffix(".warc") for p in warcs]
    targets = [layout.shard_file("results", "quality", "stats", s) for s in shards]
    wall = run_dag(workdir, config, targets, cores=WORKERS, env=env)
    results = workdir / "results"
    peaks, read, kept = [], 0, 0
    for stage in ("ingest", "url_filter", "extract", "quality"):
        for shard in shards:
            stats = json.loads(Path(layout.shard_file(results, stage, "stats", shard)).read_text())
            peaks.append(stats.get("extra", {}).get("peak_rss_mb") or float("nan"))
            if stage == "ingest":
                read += stats["extra"]["record_types"].get("response", 0)
            if stage == "quality":
                kept += stats["docs_out"]
    bench = [line.split("\t") for p in glob.glob(str(results / "benchmarks" / "*" / "*.tsv"))
             for line in Path(p).read_text().splitlines()[1:2]]
    return {"wall_s": wall, "kept": kept, "read": read, "peak_job_mib": max(peaks),
            "peak_job_mib_snakemake": max((float(b[2]) for b in bench if b[2] not in ("", "-", "NA")),
                                          default=float("nan"))}


def toyweb(directory: Path, files: int, articles: int, seed: int, config_path: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    warcs = [directory / f"toyweb-{i:03d}.warc.gz" for i in range(files)]
    params = json.dumps({"seed": seed, "files": files, "articles": articles})
    subprocess.run([sys.executable, "-m", "llmpipe.cli", "toyweb", "--params", params, "--warc", *map(str, warcs),
                    "--config", str(config_path),  # its world section (the held-out share)
                    "--truth", str(directory.parent / "truth.parquet"),
                    "--stats", str(directory.parent / "toyweb.json")], check=True)
    return warcs


def compare(name: str, warcs: list[Path], root: Path, python: Path, config_path: Path, env: dict,
            timeout: float, backends: list[str]) -> dict:
    """One datatrove run against one llmpipe run per extraction backend, on the same files."""
    size = sum(p.stat().st_size for p in warcs) / 2**20
    print(f"\n{name}: {len(warcs)} files, {size:,.1f} MiB", flush=True)
    ours = {}
    for backend in backends:
        ours[backend] = run_llmpipe(warcs, root / f"llmpipe-{backend}", config_path, env, backend)
        print(f"  llmpipe ({backend}) done in {ours[backend]['wall_s']:.0f} s", flush=True)
    theirs = run_datatrove(python, warcs[0].parent, root / "datatrove", env, timeout)
    print(f"  datatrove done in {theirs['wall_s']:.0f} s", flush=True)
    speedups = {}
    for backend, mine in ours.items():
        n = mine["read"]  # the same denominator for both: response records in the files
        rows = [("wall s", theirs["wall_s"], mine["wall_s"]),
                ("docs/s", n / theirs["wall_s"], n / mine["wall_s"]),
                ("peak RSS/job MiB", theirs["peak_job_mib"], mine["peak_job_mib"]),
                ("documents kept", theirs["kept"], mine["kept"])]
        print(f"  {'llmpipe: ' + backend:<22}{'datatrove':>12}{'llmpipe':>12}{'ratio':>9}   ({n:,} response records;"
              f" datatrove's reader read {theirs['read']})")
        for label, a, b in rows:
            print(f"  {label:<22}{a:>12,.1f}{b:>12,.1f}{b / a if a else float('nan'):>8.2f}x")
        speedups[backend] = speed = theirs["wall_s"] / mine["wall_s"]
        goal = speed >= 4 and mine["peak_job_mib"] <= theirs["peak_job_mib"]
        print(f"  goal >= 4x docs/s at <= datatrove's peak RSS ({backend}): {'met' if goal else 'NOT met'}"
              f" ({speed:.2f}x); Snakemake's benchmark max_rss says {mine['peak_job_mib_snakemake']:,.0f} MiB")
    print(f"  (datatrove's peak is its workers'; their forked extraction sandbox peaks at"
          f" {theirs['peak_sandbox_mib']:,.0f} MiB, pages shared; llmpipe's is the stages' own peak_rss_mb)")
    for step, stats in theirs["steps"].items():
        counts = {k: v for k, v in stats.items() if isinstance(v, int) and k not in ("total", "forwarded")}
        if counts:
            print(f"  datatrove {step}: {counts}")
    return {"datatrove": theirs, "llmpipe": ours, "speedup": speedups}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datatrove-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--glob", default="*.warc.gz", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--extract-timeout", type=float, help="datatrove's Trafilatura timeout, seconds (default:"
                        " llmpipe's extract.timeout_seconds; datatrove's own default of 1 s made every page time out"
                        " on a loaded machine: a killed sandbox's restart ran over the next page's limit too)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="datatrove's virtual environment")
    parser.add_argument("--toyweb-files", type=int, default=7)
    parser.add_argument("--toyweb-articles", type=int, default=10000, help="toy web size (33000: ~43,750 records)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--corpus", type=Path, help="bench corpus for the real pages (see benchmarks/real_pages.py)")
    parser.add_argument("--real-files", type=int, default=4)
    parser.add_argument("--skip", choices=["toyweb", "real"], action="append", default=[])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml", help="llmpipe's stage settings")
    parser.add_argument("--backends", nargs="+", metavar="BACKEND",
                        help="llmpipe's extraction backends (llmpipe.data.extract.BACKENDS), one llmpipe run each"
                        " (default: the config's)")
    parser.add_argument("--workdir", type=Path, help="keep inputs and outputs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.datatrove_child:
        return datatrove_child(args)
    from llmpipe.data.extract import BACKENDS  # the parent only: the datatrove venv has no llmpipe

    if unknown := sorted(set(args.backends or ()) - set(BACKENDS)):
        parser.error(f"--backends: unknown {unknown}; use some of {sorted(BACKENDS)}")

    env = {**os.environ, **THREADS}
    os.environ.update(THREADS)
    python = ensure_venv(args.venv)
    import yaml

    extract_config = yaml.safe_load(args.config.read_text())["extract"]
    timeout = args.extract_timeout or float(extract_config["timeout_seconds"])
    backends = args.backends or [extract_config["backend"]]
    versions = {**{f"datatrove venv {k}": v for k, v in venv_versions(python).items()},
                **{f"llmpipe env {k}": v for k, v in llmpipe_versions().items()}}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"machine: {os.cpu_count()} CPUs; {WORKERS} workers each; threads pinned to 1; extraction time limit"
          f" {timeout:g} s per page in both", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="datatrove_peer."))
    try:
        if "toyweb" not in args.skip:
            warcs = toyweb(workdir / "toy" / "warcs", args.toyweb_files, args.toyweb_articles, args.seed, args.config)
            compare(f"toy web ({args.toyweb_articles:,} articles)", warcs, workdir / "toy", python, args.config, env,
                    timeout, backends)
        if "real" not in args.skip:
            from real_pages import CORPUS_CANDIDATES, build_real_crawl

            from llmpipe.data.realpages import find_corpus

            corpus = args.corpus or find_corpus(CORPUS_CANDIDATES)
            if corpus is None:
                print("\nreal pages: no bench corpus (build_bench_corpus.sh); skipped")
            else:
                warcs, _ = build_real_crawl(corpus, workdir / "real" / "warcs", args.real_files, None, args.seed)
                compare("real pages (Python + PostgreSQL manuals)", warcs, workdir / "real", python, args.config, env,
                        timeout, backends)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
