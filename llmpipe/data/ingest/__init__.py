"""Ingest: one WARC or ARC file -> a Parquet shard of decoded HTML responses (the RAW schema).

``records`` reads the file's records whatever the damage (gzipped or not, WARC or ARC, wrong
Content-Lengths, broken gzip members); ``http`` gives each response its HTTP meaning
(de-chunking, Content-Encoding, charset). Here a response record becomes a document or a skip
counted by reason, and the stage streams: documents are written as Parquet row groups of at most
``batch_docs`` documents or ``batch_bytes`` of HTML, so memory does not grow with the shard.

Every record type is counted (``extra.record_types``), and so is what HTTP decoding did or found
(``extra.http``: chunked, gzip, ..., encoding_mismatch for a header that lies) and what framing
repairs were made (``extra.framing``). A record the crawler cut (``WARC-Truncated``) is kept and
counted as ``extra.truncated_by_crawler``; a record the *file* cuts off (a clipped final record, a
broken gzip member) is a ``truncated`` / ``corrupt`` skip, or, with ``keep_clipped_records``,
kept when what was read is usable HTML (``extra.framing.clipped_kept``). Damage inside a crawl
file is counted and the job goes on, but a file that holds no record at all (an HTML error page
a server answered instead of the WARC, a file of the wrong kind) is an error naming the file, as
a missing file is: an empty shard would look like a finished one.
"""
from __future__ import annotations

import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from llmpipe.config import stage_params
from llmpipe.data.documents import RAW, text_bytes
from llmpipe.data.ingest.http import (
    TooLarge,
    content_type_and_charset,
    decode_body,
    decode_html,
    looks_binary,
    looks_like_html,
    normalize_charset,
    parse_response,
)
from llmpipe.data.ingest.records import Damage, Record, iter_records
from llmpipe.io import DocumentWriter
from llmpipe.stats import StageStats

__all__ = ["Skip", "decode_html", "ingest_file", "iter_documents", "iter_warc", "normalize_charset", "record_to_doc"]

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
EXAMPLES_PER_REASON = 5
MAX_MESSAGES = 20


@dataclass(frozen=True)
class Skip:
    """A record that yields no document, why, and its URL when the headers were readable."""

    reason: str
    url: str | None = None
    nbytes: int = 0
    message: str | None = None  # framing damage: what went wrong where, for the log


@dataclass
class Counts:
    """What a file held besides documents and skips: the stage's ``extra`` counters."""

    record_types: Counter = field(default_factory=Counter)
    http: Counter = field(default_factory=Counter)
    framing: Counter = field(default_factory=Counter)
    truncated_by_crawler: int = 0
    messages: list[str] = field(default_factory=list)  # repairs that lost nothing, for the log


# ---------------------------------------------------------------------------------------------
# One response record -> a RAW document or a Skip


def record_id(record: Record, warc_file: str) -> str:
    """WARC-Record-ID without its wrapper; a stable name for records without one (ARC)."""
    rid = record.headers.get("warc-record-id", "").strip()
    rid = rid.removeprefix("<").removesuffix(">").removeprefix("urn:uuid:")
    return rid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{warc_file}@{record.offset}"))


def record_to_doc(record: Record, warc_file: str, max_bytes: int, notes: Counter) -> dict | Skip:
    """Turn one response record into a RAW document, or say why not (``notes`` counts the HTTP
    decoding it took)."""
    url = record.url
    if record.block is None:
        return Skip("too_large", url, record.length)
    response = parse_response(record.block)
    if response is None:  # no HTTP headers stored: the block is the payload, typed by the WARC header
        content_type, http_charset = content_type_and_charset(record.headers.get("content-type"))
        if content_type == "application/http":
            content_type = ""
        if content_type not in HTML_TYPES and not (content_type == "" and looks_like_html(record.block[:1024])):
            return Skip("not_http", url)
        notes["no_http_headers"] += 1
        status, stored = None, record.block
    else:
        if response.status is None:
            return Skip("not_http", url)
        content_type, http_charset = content_type_and_charset(response.header("Content-Type"))
        status, stored = response.status, response.body
        if not 200 <= status < 300:
            return Skip("http_status", url, len(stored))
    if not stored.strip():
        return Skip("empty_body", url)
    if content_type and content_type not in HTML_TYPES:
        return Skip("not_html", url, len(stored))
    try:
        body = decode_body(response, max_bytes, notes) if response is not None else stored
    except TooLarge:
        return Skip("too_large", url, len(stored))
    if not body.strip():
        return Skip("empty_body", url)
    head = body[:1024]
    is_html = content_type in HTML_TYPES if content_type else looks_like_html(head)
    if not is_html or looks_binary(head):
        return Skip("not_html", url, len(body))
    html, charset, charset_source = decode_html(body, http_charset)
    return {
        "id": record_id(record, warc_file),
        "url": url,
        "html": html,
        "charset": charset,
        "charset_source": charset_source,
        "content_type": content_type or "text/html",
        "http_status": status,
        "date": record.headers.get("warc-date"),
        "warc_file": warc_file,
    }


# ---------------------------------------------------------------------------------------------
# A file -> documents and skips


def iter_warc(
    path: str | os.PathLike, max_bytes: int, keep_clipped: bool = False, counts: Counts | None = None
) -> Iterator[dict | Skip]:
    """Every response record of a WARC or ARC file as a RAW document or a Skip, in file order;
    ``counts`` (if given) collects record types, HTTP decoding and framing repairs."""
    counts = counts if counts is not None else Counts()
    warc_file = os.path.basename(os.fspath(path))
    for item in iter_records(path, max_bytes):
        if isinstance(item, Damage):
            counts.framing[item.what] += 1
            if item.reason is not None:
                yield Skip(item.reason, item.url, message=item.message)
            else:
                counts.messages.append(item.message)
            continue
        counts.record_types[item.kind] += 1
        for what, message in item.repairs:
            counts.framing[what] += 1
            counts.messages.append(message)
        if item.kind != "response":
            continue
        if item.clipped is not None:
            doc = record_to_doc(item, warc_file, max_bytes, counts.http) if keep_clipped else None
            if isinstance(doc, dict):
                counts.framing["clipped_kept"] += 1
                counts.messages.append(f"{item.message} (kept what was read)")
                yield doc
            else:
                yield Skip(item.clipped, item.url, message=item.message)
            continue
        doc = record_to_doc(item, warc_file, max_bytes, counts.http)
        if isinstance(doc, dict) and "warc-truncated" in item.headers:
            counts.truncated_by_crawler += 1
        yield doc


def iter_documents(
    path: str | os.PathLike, max_bytes: int, stats: StageStats, keep_clipped: bool = False
) -> Iterator[dict]:
    """The RAW documents of one file, streamed; every skip is counted by reason in ``stats``,
    and once the file is done ``stats.extra`` holds its counters, examples and messages."""
    counts = Counts()
    examples: dict[str, list[str]] = {}
    messages: list[str] = []
    charset_sources: Counter = Counter()

    def log(notes: list[str]) -> None:
        for message in notes:
            print(message, file=sys.stderr)
        messages.extend(notes)
        notes.clear()

    for item in iter_warc(path, max_bytes, keep_clipped, counts):
        log(counts.messages)
        if isinstance(item, Skip):
            stats.read(item.nbytes)
            stats.dropped(item.reason, item.nbytes)
            urls = examples.setdefault(item.reason, [])
            if item.url and len(urls) < EXAMPLES_PER_REASON:
                urls.append(item.url)
            if item.message:
                log([item.message])
            continue
        nbytes = text_bytes(item)
        stats.read(nbytes)
        stats.kept(nbytes)
        charset_sources[item["charset_source"]] += 1
        yield item
    log(counts.messages)
    stats.extra.update({
        "skip_examples": examples,
        "messages": messages[:MAX_MESSAGES],
        "charset_source": dict(sorted(charset_sources.items())),
        "record_types": dict(sorted(counts.record_types.items())),
        "http": dict(sorted(counts.http.items())),
        "framing": dict(sorted(counts.framing.items())),
        "truncated_by_crawler": counts.truncated_by_crawler,
    })
    if not stats.docs_out:
        stats.extra["empty_output"] = True


def ingest_file(
    path: str | os.PathLike, max_bytes: int, stats: StageStats, keep_clipped: bool = False
) -> list[dict]:
    """Every RAW document of one file as a list (small files and tests; the stage streams)."""
    return list(iter_documents(path, max_bytes, stats, keep_clipped))


# ---------------------------------------------------------------------------------------------
# The stage


class HtmlShardWriter(DocumentWriter):
    """A DocumentWriter whose row groups also end at ``max_bytes`` of HTML: pages are big and
    uneven, so a count of documents alone does not bound the memory a batch holds."""

    def __init__(self, path: str | os.PathLike, row_group_size: int, max_bytes: int):
        super().__init__(path, RAW, row_group_size)
        self.max_bytes = max_bytes
        self._html_chars = 0

    def write(self, docs: Iterable[dict]) -> None:
        for doc in docs:
            super().write([doc])
            self._html_chars = self._html_chars + len(doc.get("html") or "") if self._buffer else 0
            if self._html_chars >= self.max_bytes:
                self._flush()
                self._html_chars = 0


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--input", required=True, help="a .warc, .warc.gz, .arc or .arc.gz file")
    parser.add_argument("--output", required=True, help="the RAW Parquet shard to write")
    parser.add_argument("--stats", required=True, help="the stage's stats.json")


def run(args, stage: str) -> int:
    params = stage_params(args.params, args.config, "ingest")
    if not os.path.isfile(args.input):
        print(f"ingest: input WARC file not found: {args.input}", file=sys.stderr)
        return 1
    stats = StageStats(stage="ingest", shard=_shard(args.input))
    docs = iter_documents(args.input, int(params["max_record_bytes"]), stats, bool(params["keep_clipped_records"]))
    with HtmlShardWriter(args.output, int(params["batch_docs"]), int(params["batch_bytes"])) as out:
        for doc in docs:
            out.write([doc])
    if not stats.extra["record_types"]:
        os.unlink(args.output)
        seen = "; ".join(stats.extra["messages"][:1]) or "the file is empty"
        print(f"ingest: {args.input} holds no WARC or ARC record ({seen}): not a crawl file"
              " (an error page saved in its place?)", file=sys.stderr)
        return 1
    stats.record_peak_rss()
    data = stats.write(args.stats)
    print(
        f"ingest {args.input}: {data['docs_out']} of {data['docs_in']} records kept;"
        f" skipped {data['removed']}",
        file=sys.stderr,
    )
    return 0


def _shard(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".gz", ".warc", ".arc"):
        name = name.removesuffix(suffix)
    return name
