"""The truth of every record (the ``TRUTH`` table) and ``generate``: the whole toy web written
as WARC files plus its truth table."""
from __future__ import annotations

import os
import random

import pyarrow as pa

from llmpipe.data.toyweb.crawl import build_crawl
from llmpipe.data.toyweb.pages import Page
from llmpipe.data.toyweb.warc import write_warc
from llmpipe.io import write_documents
from llmpipe.stats import StageStats
from llmpipe.tasks.heldout import HeldOut

TRUTH = pa.schema([
    ("id", pa.string()),  # WARC-Record-ID without <urn:uuid: and >, as ingest names documents
    ("url", pa.string()),
    ("warc_file", pa.string()),
    ("kind", pa.string()),
    ("genre", pa.string()),
    ("blocked_category", pa.string()),
    ("language", pa.string()),
    ("content_type", pa.string()),  # the HTTP header as sent (null: no header)
    ("charset_declared", pa.string()),  # the HTTP header's charset (null: none)
    ("charset_true", pa.string()),  # how the body is really encoded (null: not text)
    ("duplicate_of", pa.string()),  # url of the original, for exact and near copies
    ("special", pa.string()),  # a planted oddity: cp1252_as_utf8, escaped_script, ...
    ("title", pa.string()),
    ("main_text", pa.string()),  # the true main text, paragraphs joined by "\n"
])


def truth_row(page: Page, record_id: str, warc_file: str) -> dict:
    declared = None
    if page.content_type and "charset=" in page.content_type:
        declared = page.content_type.split("charset=", 1)[1].strip().lower()
    doc = page.doc
    return {
        "id": record_id, "url": page.url, "warc_file": warc_file, "kind": page.kind,
        "genre": doc.genre if doc else None, "blocked_category": page.blocked_category,
        "language": doc.language if doc else ("en" if page.kind == "boilerplate" else None),
        "content_type": page.content_type, "charset_declared": declared,
        "charset_true": page.charset_true, "duplicate_of": page.duplicate_of,
        "special": page.special, "title": doc.title if doc else None,
        "main_text": "\n".join(doc.paragraphs) if doc else "",
    }


def generate(seed: int, articles: int, warc_paths: list[str], truth_path: str,
             stats: StageStats, held: HeldOut) -> list[dict]:
    """Write the crawl and its truth table; count pages by kind in ``stats``. No page states a
    held-out arithmetic fact of ``held``."""
    crawl = build_crawl(seed, articles, len(warc_paths), held)
    ids = random.Random(f"toyweb-ids:{seed}")
    rows = []
    for path, pages in zip(warc_paths, crawl):
        warc_file = os.path.basename(path)
        for page, record_id in zip(pages, write_warc(path, pages, ids)):
            rows.append(truth_row(page, record_id, warc_file))
            stats.read(len(page.body))
            stats.kept(len(page.body))
    write_documents(truth_path, rows, TRUTH)
    kinds: dict[str, int] = {}
    genres: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        if row["kind"] == "article":
            genres[row["genre"]] = genres.get(row["genre"], 0) + 1
    stats.extra.update({
        "kinds": dict(sorted(kinds.items())), "article_genres": dict(sorted(genres.items())),
        "article_main_text_bytes": sum(len(r["main_text"].encode()) for r in rows if r["kind"] == "article"),
        "warc_bytes": sum(os.path.getsize(p) for p in warc_paths),
    })
    return rows
