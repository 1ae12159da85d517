"""Extraction throughput: pages/s of the trafilatura and resiliparse backends on the same pages.

Pages come from a freshly generated small toy web (always), from ``--warc`` files, and from
real HTML files under ``--html-dir`` when that directory exists (e.g. the Python and PostgreSQL
docs unpacked by /work/shared/tools/build_bench_corpus.sh). Each page runs through the stage's
own step (backend + title + line cleanup + time limit), single process.

    python benchmarks/extract.py --html-dir bench-corpus/src/usr/share/doc --limit 500
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmpipe.data.extract import BACKENDS, make_step
from llmpipe.data.ingest import iter_warc


def toyweb_warcs(workdir: Path, seed: int, articles: int) -> list[Path]:
    """Generate a small toy web with the same CLI the pipeline's rule runs."""
    warcs = [workdir / f"toyweb-{i:03d}.warc.gz" for i in range(2)]
    params = json.dumps({"seed": seed, "files": len(warcs), "articles": articles})
    subprocess.run(
        ["llmpipe", "toyweb", "--params", params, "--warc", *map(str, warcs),
         "--config", str(Path(__file__).resolve().parent.parent / "config.yaml"),  # its world section
         "--truth", str(workdir / "truth.parquet"), "--stats", str(workdir / "stats.json")],
        check=True,
    )
    return warcs


def warc_pages(paths: list[Path], limit: int) -> list[dict]:
    """Ingested HTML documents of WARC files (what extract sees in the pipeline)."""
    pages = []
    for path in paths:
        pages += [d for d in iter_warc(path, 5_000_000) if isinstance(d, dict)]
    return pages[:limit]


def dir_pages(root: Path, limit: int) -> list[dict]:
    files = sorted(p for p in root.rglob("*") if p.suffix in (".html", ".htm"))
    files = files[:: max(1, len(files) // limit)][:limit]  # spread over every sub-tree
    return [
        {"id": str(p), "url": p.as_uri(), "html": p.read_text(errors="replace"), "date": None,
         "warc_file": None}
        for p in files
    ]


def pages_per_second(backend: str, pages: list[dict]) -> tuple[float, int]:
    """(pages/s, pages with text) for one backend over all pages."""
    step = make_step({"backend": backend, "timeout_seconds": 30.0})
    step(pages[0])  # warm-up: imports and lazy initialisation are not throughput
    start = time.perf_counter()
    kept = sum(isinstance(step(page), dict) for page in pages)
    return len(pages) / (time.perf_counter() - start), kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--html-dir", type=Path, help="a directory of real .html files (optional)")
    parser.add_argument("--warc", type=Path, nargs="*", default=[], help="extra WARC files")
    parser.add_argument("--limit", type=int, default=500, help="pages per corpus")
    parser.add_argument("--articles", type=int, default=300, help="toy web size")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    corpora: dict[str, list[dict]] = {}
    if importlib.util.find_spec("llmpipe.data.toyweb") is None:
        print("llmpipe.data.toyweb is not installed; toy-web pages skipped", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            warcs = toyweb_warcs(Path(tmp), args.seed, args.articles)
            corpora["toy web"] = warc_pages(warcs, args.limit)
    if args.warc:
        corpora["--warc"] = warc_pages(args.warc, args.limit)
    if args.html_dir is not None:
        if args.html_dir.is_dir():
            corpora[f"real HTML ({args.html_dir.name})"] = dir_pages(args.html_dir, args.limit)
        else:
            print(f"--html-dir {args.html_dir} does not exist; skipped", file=sys.stderr)

    names = sorted(BACKENDS)
    header = f"{'corpus':<28}{'pages':>7}{'MB':>8}" + "".join(f"{n + ' p/s':>18}" for n in names)
    print(header + f"{'ratio':>9}")
    for corpus, pages in corpora.items():
        if not pages:
            print(f"{corpus:<28}{0:>7}  (no pages)")
            continue
        mb = sum(len(p["html"].encode()) for p in pages) / 1e6
        rates = {n: pages_per_second(n, pages) for n in names}
        cells = "".join(f"{rates[n][0]:>11.1f} ({rates[n][1]:>4})" for n in names)
        ratio = rates["resiliparse"][0] / rates["trafilatura"][0]
        print(f"{corpus:<28}{len(pages):>7}{mb:>8.2f}{cells}{ratio:>8.1f}x")
    print("(in parentheses: pages that yielded text; ratio = resiliparse / trafilatura)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
