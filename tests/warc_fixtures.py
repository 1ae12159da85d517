"""WARC and ARC files written byte by byte the way real crawlers write them, and break them, for
the ingest tests: HTTP messages (chunked, gzip, deflate, br, zstd, lying headers), records, gzip
members, ARC files, and warcio's reading of a file (the recovery bar ingest must meet). The writers
that real-page crawls share with benchmarks/real_pages.py live in llmpipe/data/realpages.py."""
from __future__ import annotations

import gzip
import os
import random
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import zstandard
from warcio.archiveiterator import ArchiveIterator

from llmpipe.data.ingest import ingest_file
from llmpipe.data.realpages import (  # noqa: F401 (re-exported: the tests write with the benchmark's helpers)
    br,
    chunked,
    corpus_pages,
    crawl_records,
    crawler_styles,
    find_corpus,
    gzip_bytes,
    http,
    members,
    record_id,
    stored_as,
    warc_record,
    warcinfo,
    zlib_deflate,
)
from llmpipe.stats import StageStats

ARC_DATE = "20080430204825"
WORDS = ("river mill town bread lantern harbour orchard meadow letter window garden winter summer "
         "market bridge candle kettle station village forest island tower morning evening").split()


# ---------------------------------------------------------------------------------------------
# Pages and HTTP messages


def page(n: int, paragraphs: int = 8, extra: str = "") -> bytes:
    """A deterministic UTF-8 HTML page (title, headings, paragraphs, one non-ASCII word)."""
    rng = random.Random(n)
    paras = "\n".join(
        f"<p class=\"para\">{' '.join(rng.choice(WORDS) for _ in range(40))} café {n}.{i}</p>"
        for i in range(paragraphs)
    )
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Page {n}</title></head>"
            f"<body><h1>Page {n}</h1>\n{paras}\n{extra}</body></html>\n").encode()


def big_page(n: int, nbytes: int) -> bytes:
    """An HTML page of about ``nbytes`` (ASCII), for the memory test."""
    filler = f"<p>Paragraph of page {n}: the river runs past the old mill and into the town.</p>\n".encode()
    return b"<html><head><title>Big</title></head><body>" + filler * (nbytes // len(filler)) + b"</body></html>"


def raw_deflate(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def bad_crc(gz: bytes) -> bytes:
    """A gzip member whose CRC-32 trailer is wrong (its data intact)."""
    crc, size = struct.unpack("<II", gz[-8:])
    return gz[:-8] + struct.pack("<II", crc ^ 0xDEADBEEF, size)


def bomb(nbytes: int) -> bytes:
    """gzip of ``nbytes`` zeros behind an HTML start: kilobytes that inflate to ``nbytes``."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(b"<html><body>")]
    zeros = bytes(1 << 20)
    for _ in range(nbytes >> 20):
        out.append(z.compress(zeros))
    return b"".join(out) + z.flush()


# ---------------------------------------------------------------------------------------------
# WARC records and files


def response(url: str, body: bytes, http_headers: Iterable[tuple[str, str]] = (), **kwargs) -> bytes:
    """A response record of an HTTP 200 HTML page whose stored body is ``body``."""
    return warc_record(url, http(body, http_headers), **kwargs)


def broken_member(record: bytes, how: str) -> bytes:
    """``record``'s gzip member with bytes in the middle of its deflate data overwritten, so that
    inflating it fails there (``how="inflate"``), or decodes garbage that only the CRC-32 catches
    (``how="crc"``); checked."""
    member = gzip_bytes(record)
    for at in range(len(member) // 2, len(member) - 8):
        for damage in (b"\xff" * 24, b"\x00" * 24, b"\x55" * 24):
            broken = member[:at] + damage + member[at + len(damage):]
            try:
                gzip.decompress(broken)
            except (OSError, EOFError, zlib.error) as err:
                if ("CRC" in str(err) or "check" in str(err)) == (how == "crc"):
                    return broken
    raise AssertionError(f"no damage breaks the member ({how})")


def clip(data: bytes, keep: int) -> bytes:
    """A gzip member of ``data`` cut after ``keep`` uncompressed bytes, with no trailer: what a
    crawler killed mid-write leaves behind."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(data[:keep]) + z.flush(zlib.Z_SYNC_FLUSH)


def write(path: Path, *parts: bytes) -> Path:
    path.write_bytes(b"".join(parts))
    return path


# ---------------------------------------------------------------------------------------------
# ARC files (Internet Archive ARC v1, pre-2013 crawls)


def arc_record(url: str, block: bytes, mime: str = "text/html", ip: str = "192.0.2.1", date: str = ARC_DATE,
               length: int | None = None) -> bytes:
    """One ARC v1 record; ``length`` overrides the true length."""
    return f"{url} {ip} {date} {mime} {len(block) if length is None else length}\n".encode() + block + b"\n"


def arc_file(records: Iterable[bytes], compressed: bool) -> bytes:
    """An ARC v1 file: the filedesc version block, then ``records`` (``arc_record``s)."""
    version = b"1 0 warc_fixtures\nURL IP-address Archive-date Content-type Archive-length\n"
    records = [arc_record("filedesc://fixture.arc", version, "text/plain", "0.0.0.0"), *records]
    return members(records) if compressed else b"".join(records)


# ---------------------------------------------------------------------------------------------
# The bar: what warcio reads


def warcio_html(path: str | os.PathLike) -> dict[str, bytes]:
    """URL -> decoded body of every 2xx HTML response warcio's ArchiveIterator yields from the
    file (it de-chunks and decodes Content-Encoding itself); reading stops where warcio fails."""
    found: dict[str, bytes] = {}
    with open(path, "rb") as fh:
        try:
            for rec in ArchiveIterator(fh, arc2warc=True):
                if rec.rec_type != "response" or rec.http_headers is None:
                    continue
                status = rec.http_headers.get_statuscode() or ""
                ctype = (rec.http_headers.get_header("Content-Type") or "").lower()
                if not status.startswith("2") or "html" not in ctype:
                    continue
                try:
                    body = rec.content_stream().read()
                except Exception:  # warcio gives up on this record's body
                    continue
                if body.strip():
                    found[rec.rec_headers.get_header("WARC-Target-URI")] = body
        except Exception:  # warcio gives up on the rest of the file
            pass
    return found


def ingest(path: Path, max_bytes: int = 5_000_000, keep_clipped: bool = False) -> tuple[dict[str, dict], StageStats]:
    """Ingest's documents of a file by URL, and its stats."""
    stats = StageStats(stage="ingest")
    docs = ingest_file(path, max_bytes, stats, keep_clipped)
    by_url = {d["url"]: d for d in docs}
    assert len(by_url) == len(docs), "a URL came out twice"
    return by_url, stats


def assert_recovers_warcio(path: Path, docs: dict[str, dict], plain: dict[str, bytes]) -> None:
    """The bar: every HTML response warcio yields from ``path`` comes out of ingest, its HTML
    equal to the page stored plainly (``plain``: url -> page bytes) where that is known."""
    seen = warcio_html(path)
    assert set(seen) <= set(docs), f"warcio reads {sorted(set(seen) - set(docs))} that ingest loses"
    for url in seen:
        if url in plain:
            assert docs[url]["html"] == plain[url].decode("utf-8"), url


# ---------------------------------------------------------------------------------------------
# Real pages (the offline bench corpus of /work/shared/tools/build_bench_corpus.sh)


def bench_corpus() -> Path | None:
    """The unpacked bench corpus (``$LLMPIPE_BENCH_CORPUS``, or a build beside the repository
    or in /tmp), or None when it has not been built."""
    here = Path(__file__).resolve().parent.parent
    return find_corpus([os.environ.get("LLMPIPE_BENCH_CORPUS"), here / "bench-corpus", here.parent / "bench-corpus",
                        "/tmp/bench-corpus"])


def real_pages(corpus: Path, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` real HTML pages of the corpus (a seeded sample of both manuals): (url, bytes)."""
    return [(p.url, p.body) for p in corpus_pages(corpus, count, seed)]


def real_crawl(pages: list[tuple[str, bytes]], seed: int = 0) -> tuple[bytes, dict[str, str]]:
    """A .warc.gz of real pages, each stored in one crawler style (cycled): (file, url -> style)."""
    styles = [crawler_styles()[i % len(crawler_styles())] for i in range(len(pages))]
    crawl = members(crawl_records(pages, styles, random.Random(seed)))
    return crawl, {url: style for (url, _), style in zip(pages, styles)}


def big_shard(path: Path, pages: int, page_bytes: int) -> int:
    """An uncompressed .warc of ``pages`` big pages, written one record at a time; total HTML bytes."""
    total = 0
    with open(path, "wb") as fh:
        fh.write(warcinfo())
        for n in range(pages):
            body = big_page(n, page_bytes)
            total += len(body)
            fh.write(response(f"http://big.example/{n}", body))
    return total

