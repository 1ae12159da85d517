"""WARC and ARC files written byte by byte the way real crawlers write them, and break them, for
the ingest tests: HTTP messages (chunked, gzip, deflate, br, zstd, lying headers), records, gzip
members, ARC files, and warcio's reading of a file (the recovery bar ingest must meet)."""
from __future__ import annotations

import gzip
import os
import random
import re
import struct
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

import brotli
import zstandard
from warcio.archiveiterator import ArchiveIterator

from llmpipe.data.ingest import ingest_file
from llmpipe.stats import StageStats

WARC_DATE = "2024-05-01T08:00:00Z"
ARC_DATE = "20080430204825"
WORDS = ("river mill town bread lantern harbour orchard meadow letter window garden winter summer "
         "market bridge candle kettle station village forest island tower morning evening").split()
BENCH_CORPUS_HTML = ("usr/share/doc/python3.11/html", "usr/share/doc/postgresql-doc-15/html")


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


def raw_deflate(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def br(data: bytes) -> bytes:
    return brotli.compress(data)


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


def record_id(url: str, salt: str = "") -> str:
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


def response(url: str, body: bytes, http_headers: Iterable[tuple[str, str]] = (), **kwargs) -> bytes:
    """A response record of an HTTP 200 HTML page whose stored body is ``body``."""
    return warc_record(url, http(body, http_headers), **kwargs)


def warcinfo() -> bytes:
    return warc_record("", b"software: warc_fixtures\r\nformat: WARC File Format 1.1\r\n", "warcinfo",
                       "application/warc-fields")


def members(records: Iterable[bytes]) -> bytes:
    """Each record as its own gzip member (what every crawler writes for a .warc.gz)."""
    return b"".join(gzip_bytes(r) for r in records)


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
    candidates = [os.environ.get("LLMPIPE_BENCH_CORPUS"), here / "bench-corpus", here.parent / "bench-corpus",
                  "/tmp/bench-corpus"]
    for candidate in candidates:
        if candidate and all((Path(candidate) / "src" / sub).is_dir() for sub in BENCH_CORPUS_HTML):
            return Path(candidate)
    return None


def real_pages(corpus: Path, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` real HTML pages of the corpus (a seeded sample of both manuals): (url, bytes)."""
    files = sorted(p for sub in BENCH_CORPUS_HTML for p in (corpus / "src" / sub).rglob("*.html")
                   if p.stat().st_size > 2000)
    picked = random.Random(seed).sample(files, min(count, len(files)))
    return [("https://docs.example/" + p.relative_to(corpus / "src").as_posix(), p.read_bytes()) for p in picked]


def crawler_styles() -> list[str]:
    return ["plain", "chunked", "gzip", "chunked+gzip", "lying-gzip", "lying-chunked", "deflate", "br"]


def stored_as(body: bytes, style: str, rng: random.Random) -> tuple[bytes, list[tuple[str, str]]]:
    """``body`` stored the way a crawler of ``style`` stores it: (stored bytes, HTTP headers)."""
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
    raise ValueError(style)


def real_crawl(pages: list[tuple[str, bytes]], seed: int = 0) -> tuple[bytes, dict[str, str]]:
    """A .warc.gz of real pages, each stored in one crawler style (cycled): (file, url -> style)."""
    rng = random.Random(seed)
    styles = crawler_styles()
    records, style_of = [warcinfo()], {}
    for i, (url, body) in enumerate(pages):
        style = styles[i % len(styles)]
        stored, headers = stored_as(body, style, rng)
        charset = re.search(rb"charset=[\"']?([\w-]+)", body[:2048])
        ctype = "text/html" + (f"; charset={charset.group(1).decode()}" if charset else "")
        records.append(warc_record(url, http(stored, headers, content_type=ctype)))
        style_of[url] = style
    return members(records), style_of


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

