"""Toy web: a deterministic synthetic crawl (real WARC/1.1 files) and the truth of every record,
so each data stage can be scored: articles in page chrome among spam, blocked, binary, copies.

This module is the ``llmpipe toyweb`` stage (``add_arguments``, ``run``). The rest, each module
using only those above it:

- ``pages``: the data types (``Site``, ``Doc``, ``Page``) and the phrase helpers ``cap``, ``pick``
- ``articles``: the phrase pools and the article writers (rng -> ``Doc``), spam, foreign, blocked
- ``chrome``: the sites and the HTML around the main text (nav, ads, cookie banner, ...)
- ``defects``: the planted defects (copies, binaries, blocked domains, wrong charsets, ...)
- ``crawl``: every page of the crawl, shuffled into files (``build_crawl``)
- ``warc``: writing one ``.warc.gz`` of pages (one gzip member per record)
- ``truth``: the ground-truth table and ``generate`` (write the WARC files and the truth)
"""
from __future__ import annotations

import sys

from llmpipe.config import ConfigError, stage_params
from llmpipe.data.toyweb.truth import generate
from llmpipe.stats import StageStats
from llmpipe.tasks.heldout import from_config


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--warc", nargs="+", required=True, help="the .warc.gz files to write (toyweb.files of them)")
    parser.add_argument("--truth", required=True, help="ground-truth Parquet, one row per response record")
    parser.add_argument("--stats", required=True, help="stats.json")
    parser.add_argument("--world", help="the world config section as JSON (the held-out share; what the rule passes)")


def run(args, stage: str) -> int:
    params = stage_params(args.params, args.config, "toyweb")
    if len(args.warc) != params["files"]:
        raise ConfigError(f"toyweb.files is {params['files']} but {len(args.warc)} --warc paths were given")
    stats = StageStats(stage="toyweb")
    held = from_config(stage_params(args.world, args.config, "world"))
    generate(params["seed"], params["articles"], args.warc, args.truth, stats, held)
    data = stats.write(args.stats)
    print(f"toyweb: {data['docs_out']} records in {len(args.warc)} files; kinds {data['extra']['kinds']}",
          file=sys.stderr)
    return 0
