"""Real HTML pages as a crawl whose truth is known (issue 12, real pages as a second input).

The offline bench corpus (/work/shared/tools/build_bench_corpus.sh) unpacks the Python 3.11 and
PostgreSQL 15 manuals: ~1,700 real HTML pages. This module stores them in WARC files the way real
crawlers store pages — body plain, chunked, gzip, chunked+gzip, deflate or br, and headers that lie
(say gzip or chunked, body plain) — byte by byte, and takes each page's main text from its own
markup, the extraction ground truth: Python's ``div.body``; PostgreSQL's ``body#docContent``
without its ``navheader`` and ``navfooter`` divs.

The benchmark (benchmarks/real_pages.py) and the tests (tests/warc_fixtures.py) write with the same
functions, so both exercise what real crawls hold.
"""
from __future__ import annotations

import gzip
import os
import random
import re
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import brotli
import lxml.etree
import lxml.html

from llmpipe.io import atomic_path

WARC_DATE = "2024-05-01T08:00:00Z"  # fixed, so a rebuild is byte-identical

# manual -> (directory under the corpus's src/, URL the pages are served under, main-text XPath,
# classes of divs inside the main element that are navigation, not text)
MANUALS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "python": ("usr/share/doc/python3.11/html", "https://docs.python.org/3.11/",
               "//div[contains(concat(' ', normalize-space(@class), ' '), ' body ')]", ()),
    "postgresql": ("usr/share/doc/postgresql-doc-15/html", "https://www.postgresql.org/docs/15/",
                   "//body[@id='docContent']", ("navheader", "navfooter")),
}
# Elements whose end is a word boundary in rendered text (lxml's text_content() would glue
# "end.</p><p>Start" into one word).
BLOCK_TAGS = frozenset(
    "address article aside blockquote br caption dd div dl dt figcaption figure footer form h1 h2 h3 h4 "
    "h5 h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split())

# How crawlers store a response body, with the seeded benchmark mix's weights: most bodies as
# sent (plain or chunked), many gzip-encoded, a few deflate/br, and headers that lie (Common Crawl
# stores decoded payloads but keeps the Content-Encoding / Transfer-Encoding header).
STYLE_WEIGHTS: dict[str, float] = {
    "plain": 0.30, "chunked": 0.20, "gzip": 0.20, "chunked+gzip": 0.15,
    "lying-gzip": 0.05, "lying-chunked": 0.03, "deflate": 0.04, "br": 0.03,
}


# ---------------------------------------------------------------------------------------------
# HTTP messages and bodies as crawlers store them


def http(body: bytes, headers: Iterable[tuple[str, str]] = (), status: str = "200 OK",
         content_type: str | None = "text/html; charset=utf-8") -> bytes:
    """An HTTP/1.1 response as a crawler stores it: status line, headers, blank line, body."""
    lines = [f"HTTP/1.1 {status}", "Server: nginx"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, sizes: Iterable[int], extension: str = "") -> bytes:
    """``body`` in Transfer-Encoding: chunked, cut at ``sizes`` (cycled), then the last chunk."""
    out, pos, sizes = [], 0, list(sizes)
    while pos < len(body):
        size = sizes[len(out) % len(sizes)]
        piece = body[pos:pos + size]
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), extension.encode(), piece))
        pos += size
    return b"".join(out) + b"0\r\n\r\n"


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zlib_deflate(data: bytes) -> bytes:
    return zlib.compress(data)


def br(data: bytes) -> bytes:
    return brotli.compress(data)


def crawler_styles() -> list[str]:
    return list(STYLE_WEIGHTS)


def stored_as(body: bytes, style: str, rng: random.Random) -> tuple[bytes, list[tuple[str, str]]]:
    """``body`` stored the way a crawler of ``style`` stores it: (stored bytes, HTTP headers);
    chunk sizes are drawn from ``rng``."""
    sizes = [rng.randint(1, 9000) for _ in range(5)]
    if style == "plain":
        return body, [("Content-Length", str(len(body)))]
    if style == "chunked":
        return chunked(body, sizes), [("Transfer-Encoding", "chunked")]
    if style == "gzip":
        return gzip_bytes(body), [("Content-Encoding", "gzip")]
    if style == "chunked+gzip":
        return chunked(gzip_bytes(body), sizes), [("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]
    if style == "lying-gzip":  # Common Crawl style: payload stored decoded, header kept
        return body, [("Content-Encoding", "gzip")]
    if style == "lying-chunked":
        return body, [("Transfer-Encoding", "chunked")]
    if style == "deflate":
        return zlib_deflate(body), [("Content-Encoding", "deflate")]
    if style == "br":
        return br(body), [("Content-Encoding", "br")]
    raise ValueError(f"unknown crawler style {style!r}; one of {crawler_styles()}")


def declared_content_type(body: bytes) -> str:
    """text/html with the charset the page declares in its first 2 KB, as a server would send it."""
    charset = re.search(rb"charset=[\"']?([\w-]+)", body[:2048])
    return "text/html" + (f"; charset={charset.group(1).decode('ascii')}" if charset else "")


# ---------------------------------------------------------------------------------------------
# WARC records and files


def record_id(url: str, salt: str = "") -> str:
    """A stable WARC-Record-ID (UUID) for a URL: what ingest's document id becomes."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, url + salt))


def warc_record(url: str, block: bytes, warc_type: str = "response",
                content_type: str | None = "application/http; msgtype=response",
                headers: Iterable[tuple[str, str]] = (), content_length: int | None = None,
                salt: str = "") -> bytes:
    """One uncompressed WARC/1.1 record, trailing CRLF CRLF included; ``content_length``
    overrides the true length (a crawler bug), -1 leaves the header out."""
    lines = ["WARC/1.1", f"WARC-Type: {warc_type}", f"WARC-Record-ID: <urn:uuid:{record_id(url, salt)}>",
             f"WARC-Date: {WARC_DATE}"]
    if url:
        lines.append(f"WARC-Target-URI: {url}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in headers]
    if content_length != -1:
        lines.append(f"Content-Length: {len(block) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + block + b"\r\n\r\n"


def warcinfo(software: str = "llmpipe realpages") -> bytes:
    return warc_record("", f"software: {software}\r\nformat: WARC File Format 1.1\r\n".encode(), "warcinfo",
                       "application/warc-fields")


def members(records: Iterable[bytes]) -> bytes:
    """Each record as its own gzip member (what every crawler writes for a .warc.gz)."""
    return b"".join(gzip_bytes(r) for r in records)


def identified_type(body: bytes) -> str:
    """The WARC-Identified-Payload-Type a crawler's sniffer (Common Crawl: Tika) gives the page:
    XHTML when it opens with an XML declaration (the PostgreSQL manual), else text/html."""
    return "application/xhtml+xml" if body.lstrip()[:5] == b"<?xml" else "text/html"


def crawl_records(pages: Iterable[tuple[str, bytes]], styles: Iterable[str], rng: random.Random) -> Iterable[bytes]:
    """A warcinfo record, then one response record per (url, page), each stored in its style and
    labelled with its sniffed payload type, as Common Crawl does (readers that sniff the payload
    themselves, e.g. datatrove's with libmagic, call an XHTML page text/xml and skip it)."""
    yield warcinfo()
    for (url, body), style in zip(pages, styles, strict=True):
        stored, headers = stored_as(body, style, rng)
        yield warc_record(url, http(stored, headers, content_type=declared_content_type(body)),
                          headers=[("WARC-Identified-Payload-Type", identified_type(body))])


# ---------------------------------------------------------------------------------------------
# The corpus's pages and their ground truth


@dataclass(frozen=True)
class RealPage:
    url: str
    manual: str
    body: bytes


def find_corpus(candidates: Iterable[str | os.PathLike | None]) -> Path | None:
    """The first candidate directory that holds both manuals unpacked (under ``src/``), or None."""
    for candidate in candidates:
        if candidate and all((Path(candidate) / "src" / MANUALS[m][0]).is_dir() for m in MANUALS):
            return Path(candidate)
    return None


def corpus_pages(corpus: str | os.PathLike, count: int | None = None, seed: int = 0,
                 min_bytes: int = 2000) -> list[RealPage]:
    """The corpus's HTML pages of at least ``min_bytes`` (all, or a seeded sample of ``count``),
    each under the URL its manual serves it at, in a stable order."""
    found = []
    for manual, (sub, base, _, _) in sorted(MANUALS.items()):
        root = Path(corpus) / "src" / sub
        found += [(manual, base + p.relative_to(root).as_posix(), p)
                  for p in sorted(root.rglob("*.html")) if p.stat().st_size >= min_bytes]
    if count is not None and count < len(found):
        found = sorted(random.Random(seed).sample(found, count), key=lambda f: f[1])
    return [RealPage(url, manual, path.read_bytes()) for manual, url, path in found]


def element_text(element: lxml.html.HtmlElement) -> str:
    """The rendered text of ``element``: block ends are line breaks; scripts, styles and comments
    are no text."""
    element = lxml.html.fromstring(lxml.html.tostring(element))  # a copy: the caller's tree stays
    lxml.etree.strip_elements(element, lxml.etree.Comment, "script", "style", with_tail=False)
    for node in element.iter():
        if isinstance(node.tag, str) and node.tag.lower() in BLOCK_TAGS:
            node.tail = "\n" + (node.tail or "")
    return "\n".join(" ".join(line.split()) for line in element.text_content().splitlines() if line.strip())


def main_text(body: bytes, manual: str) -> str:
    """The page's main text from its markup (the manual's main element without its navigation
    divs); "" when the page has no main element (a redirect stub, a frame)."""
    if manual not in MANUALS:
        raise ValueError(f"unknown manual {manual!r}; one of {sorted(MANUALS)}")
    _, _, xpath, nav_classes = MANUALS[manual]
    root = lxml.html.document_fromstring(body)
    found = root.xpath(xpath)
    if not found:
        return ""
    main = found[0]
    for cls in nav_classes:
        for nav in main.xpath(f".//div[contains(concat(' ', normalize-space(@class), ' '), ' {cls} ')]"):
            nav.drop_tree()
    return element_text(main)


def write_crawl(pages: Sequence[RealPage], paths: Sequence[str | os.PathLike], seed: int = 0,
                styles: Sequence[str] | None = None) -> list[dict]:
    """Write ``pages`` round-robin into the .warc.gz files ``paths`` (one gzip member per record),
    each body stored in a crawler style — ``styles[i]``, or a seeded draw from STYLE_WEIGHTS —
    and return the ground truth: one row per page (id, url, manual, style, warc_file, main_text)."""
    rng = random.Random(seed)
    if styles is None:
        styles = rng.choices(list(STYLE_WEIGHTS), weights=list(STYLE_WEIGHTS.values()), k=len(pages))
    if len(styles) != len(pages):
        raise ValueError(f"write_crawl: {len(styles)} styles for {len(pages)} pages")
    truth = []
    for k, path in enumerate(paths):
        mine = list(range(k, len(pages), len(paths)))
        records = crawl_records(((pages[i].url, pages[i].body) for i in mine), (styles[i] for i in mine), rng)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            for record in records:  # one member at a time: memory is one page, not the file
                fh.write(gzip_bytes(record))
        truth += [{"id": record_id(pages[i].url), "url": pages[i].url, "manual": pages[i].manual,
                   "style": styles[i], "warc_file": os.path.basename(os.fspath(path)),
                   "main_text": main_text(pages[i].body, pages[i].manual)} for i in mine]
    return truth
