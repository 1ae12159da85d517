"""Ingest: one WARC file -> a Parquet shard of decoded HTML responses (the RAW schema).

Reads response records with fastwarc, keeps 2xx HTML, decodes it (HTTP charset, then <meta>,
then detection, then UTF-8 with replacement) and counts every skipped record by reason.

Damage costs only the record it hits: a ``.warc.gz`` is read one gzip member at a time (the
WARC standard's one-record-per-member layout), so a truncated or corrupt member, garbage
between members, or a wrong Content-Length loses that record and reading resumes at the
next member. A file gzipped as one member, or an uncompressed ``.warc``, cannot be
resynchronised: a framing error there ends it (counted, with a message). A file that is not
a WARC at all gives an empty shard, a ``corrupt`` count and a message in the log and stats
(exit 0, so one bad file does not stop a crawl's pipeline); a missing file is an error.
"""
from __future__ import annotations

import codecs
import io
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import charset_normalizer
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from llmpipe.config import stage_params
from llmpipe.data.documents import RAW, text_bytes
from llmpipe.io import write_documents
from llmpipe.stats import StageStats

GZIP_MAGIC = b"\x1f\x8b\x08"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
CHUNK = 1 << 16
META_SCAN_BYTES = 4096  # where a <meta charset> may sit (HTML5 says 1024; real pages are sloppier)
EXAMPLES_PER_REASON = 5
MAX_MESSAGES = 20
# WHATWG Encoding: these labels mean windows-1252 in HTML.
WINDOWS_1252_ALIASES = frozenset({"ascii", "latin_1", "iso8859-1"})
CP1252_TIE = 0.05  # chaos margin within which detection prefers cp1252
BINARY_MAGICS = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x7fELF", b"MZ")
HTML_SNIFF = re.compile(
    rb"\s*(?:<!doctype\s+html|<html|<head|<body|<title|<meta|<div|<p[\s>]|<!--|<\?xml)", re.I
)
META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)", re.I)


@dataclass(frozen=True)
class Skip:
    """A record that yields no document, why, and its URL when the headers were readable."""

    reason: str
    url: str | None = None
    nbytes: int = 0
    message: str | None = None  # framing damage: what went wrong where, for the log


# ---------------------------------------------------------------------------------------------
# Decoding one HTTP payload


def normalize_charset(label: str | None) -> str | None:
    """Python's codec name for a charset label, or None when Python does not know it."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None
    return "cp1252" if name in WINDOWS_1252_ALIASES else name


def _strict(body: bytes, charset: str | None) -> str | None:
    if charset is None:
        return None
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return None


def detect_charset(body: bytes) -> str | None:
    """charset_normalizer's guess, breaking near-ties toward windows-1252: it is the web's
    most common legacy encoding, and short Western texts score almost alike in every
    Windows code page (cp1257 often wins by a hair and turns "naïve" into "naļve")."""
    matches = charset_normalizer.from_bytes(body)
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + CP1252_TIE:
            return "cp1252"
    return normalize_charset(best.encoding) or best.encoding


def decode_html(body: bytes, http_charset: str | None) -> tuple[str, str, str]:
    """Decode a payload: (text, charset, source).

    Declared charsets (HTTP header, then <meta>) are tried strictly, so cp1252 bytes declared
    as UTF-8 fall through to detection instead of being mangled. A non-ASCII body that is
    valid UTF-8 is UTF-8 whatever a page declares: legacy text is practically never valid
    UTF-8 by accident, while "charset=iso-8859-1" on UTF-8 pages is common.
    """
    declared = [(normalize_charset(http_charset), "http-header")]
    match = META_CHARSET.search(body[:META_SCAN_BYTES])
    if match:
        declared.append((normalize_charset(match.group(1).decode("ascii")), "meta"))
    utf8 = None if body.isascii() else _strict(body, "utf-8")
    if utf8 is not None:
        source = next((src for cs, src in declared if cs == "utf-8"), "detected")
        return utf8.removeprefix("\ufeff"), "utf-8", source
    for charset, source in declared:
        text = _strict(body, charset)
        if text is not None:
            return text.removeprefix("\ufeff"), charset, source
    charset, source = detect_charset(body), "detected"
    if charset is None:
        charset, source = "utf-8", "fallback"
    return body.decode(charset, errors="replace").removeprefix("\ufeff"), charset, source


def looks_like_html(head: bytes) -> bool:
    """Content sniffing for responses without a Content-Type."""
    return HTML_SNIFF.match(head) is not None


def looks_binary(head: bytes) -> bool:
    """A body declared HTML that is really an image, PDF, archive or executable."""
    return head.startswith(BINARY_MAGICS) or b"\x00" in head


# ---------------------------------------------------------------------------------------------
# One WARC record -> a RAW document or a Skip


def record_id(record: WarcRecord) -> str:
    rid = (record.record_id or "").strip()
    return rid.removeprefix("<").removesuffix(">").removeprefix("urn:uuid:")


def record_to_doc(record: WarcRecord, warc_file: str, max_bytes: int) -> dict | Skip:
    """Read one response record's payload and turn it into a RAW document, or say why not."""
    url = (record.headers.get("WARC-Target-URI") or "").strip().removeprefix("<").removesuffix(">")
    if "Content-Length" not in record.headers:
        return Skip("corrupt", url, message=f"record {url or '?'} has no Content-Length")
    if not record.is_http or record.http_headers.status_code is None:
        return Skip("not_http", url)
    length = record.content_length
    if length > max_bytes:
        return Skip("too_large", url, length)
    body = record.reader.read()
    if len(body) < length:
        return Skip("truncated", url, len(body))
    status = record.http_headers.status_code
    if not 200 <= status < 300:
        return Skip("http_status", url, len(body))
    if not body.strip():
        return Skip("empty_body", url)
    content_type = (record.http_content_type or "").strip().lower()
    head = body[:1024]
    is_html = content_type in HTML_TYPES if content_type else looks_like_html(head)
    if not is_html or looks_binary(head):
        return Skip("not_html", url, len(body))
    html, charset, charset_source = decode_html(body, record.http_charset)
    return {
        "id": record_id(record),
        "url": url,
        "html": html,
        "charset": charset,
        "charset_source": charset_source,
        "content_type": content_type or "text/html",
        "http_status": status,
        "date": record.headers.get("WARC-Date"),
        "warc_file": warc_file,
    }


# ---------------------------------------------------------------------------------------------
# Reading a file: gzip members one at a time, each parsed by fastwarc


class GzipMember(io.RawIOBase):
    """The decompressed bytes of the gzip member starting at ``start`` in ``raw``.

    EOF at the member's end (or where it breaks: ``status`` then says ``truncated`` or
    ``corrupt``), so fastwarc never reads across a member boundary into the next record.
    """

    def __init__(self, raw: BinaryIO, start: int):
        raw.seek(start)
        self._raw = raw
        self._z = zlib.decompressobj(31)
        self._pos = 0
        self.status = "ok"
        self.end: int | None = None  # file offset just past the member, once known

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # fastwarc asks for tell(); it never seeks

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) in ((0, io.SEEK_CUR), (self._pos, io.SEEK_SET)):
            return self._pos
        raise io.UnsupportedOperation("a gzip member is read forward only")

    def readinto(self, buffer) -> int:
        while self.end is None and self.status == "ok":
            data = self._z.unconsumed_tail or self._raw.read(CHUNK)
            if not data:
                self.status = "truncated"
                break
            try:
                out = self._z.decompress(data, len(buffer))
            except zlib.error:
                self.status = "corrupt"
                break
            if self._z.eof:
                self.end = self._raw.tell() - len(self._z.unused_data)
            if out:
                buffer[: len(out)] = out
                self._pos += len(out)
                return len(out)
        return 0

    def drain(self) -> None:
        """Decompress (and discard) the rest, to learn where the member ends."""
        while self.readinto(bytearray(CHUNK)):
            pass


def find_magic(raw: BinaryIO, start: int) -> int | None:
    """Offset of the next gzip member header at or after ``start`` (resync after damage)."""
    raw.seek(start)
    offset, tail = start, b""
    while chunk := raw.read(CHUNK):
        window = tail + chunk
        hit = window.find(GZIP_MAGIC)
        if hit >= 0:
            return offset - len(tail) + hit
        tail = window[-(len(GZIP_MAGIC) - 1) :]
        offset += len(chunk)
    return None


def read_records(stream: BinaryIO, warc_file: str, max_bytes: int) -> Iterator[dict | Skip]:
    """Documents and skips of one decompressed stream (a gzip member or a plain WARC file).

    A record is handed out only once the stream is known to be sound after it: when the
    next record's header does not parse, the Content-Length of this one was wrong.
    """
    pending: dict | Skip | None = None
    try:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response):
            if pending is not None:
                yield pending
            pending = record_to_doc(record, warc_file, max_bytes)
    except OSError as err:
        url = _url_of(pending)
        yield Skip("corrupt", url, message=f"{warc_file}: bad WARC framing at {url or 'start'}: {err}")
        return
    status = getattr(stream, "status", "ok")
    if status != "ok":
        url = _url_of(pending)
        yield Skip(status, url, message=f"{warc_file}: gzip member {status} at {url or 'start'}")
    elif pending is not None:
        yield pending


def _url_of(item: dict | Skip | None) -> str | None:
    return item.get("url") if isinstance(item, dict) else getattr(item, "url", None)


def iter_warc(path: str | os.PathLike, max_bytes: int) -> Iterator[dict | Skip]:
    """Every response record of a WARC file as a RAW document or a Skip, in file order."""
    warc_file = os.path.basename(os.fspath(path))
    with open(path, "rb") as raw:
        if raw.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            raw.seek(0)
            yield from read_records(raw, warc_file, max_bytes)
            return
        start: int | None = 0
        while start is not None:
            member = GzipMember(raw, start)
            yield from read_records(member, warc_file, max_bytes)
            member.drain()
            if member.status != "ok":
                start = find_magic(raw, start + 1)
                continue
            raw.seek(member.end)
            head = raw.read(len(GZIP_MAGIC))
            if head in (GZIP_MAGIC, b""):
                start = member.end if head else None
                continue
            yield Skip("corrupt", message=f"{warc_file}: bytes at offset {member.end} are not gzip")
            start = find_magic(raw, member.end)


# ---------------------------------------------------------------------------------------------
# The stage


def ingest_file(
    path: str | os.PathLike, max_bytes: int, stats: StageStats
) -> list[dict]:
    """Read one WARC file into RAW documents, counting every skip by reason in ``stats``."""
    docs: list[dict] = []
    examples: dict[str, list[str]] = {}
    messages: list[str] = []
    charset_sources: Counter = Counter()
    for item in iter_warc(path, max_bytes):
        if isinstance(item, Skip):
            stats.read(item.nbytes)
            stats.dropped(item.reason, item.nbytes)
            urls = examples.setdefault(item.reason, [])
            if item.url and len(urls) < EXAMPLES_PER_REASON:
                urls.append(item.url)
            if item.message:
                print(item.message, file=sys.stderr)
                messages.append(item.message)
            continue
        nbytes = text_bytes(item)
        stats.read(nbytes)
        stats.kept(nbytes)
        charset_sources[item["charset_source"]] += 1
        docs.append(item)
    stats.extra["skip_examples"] = examples
    stats.extra["messages"] = messages[:MAX_MESSAGES]
    stats.extra["charset_source"] = dict(sorted(charset_sources.items()))
    if not docs:
        stats.extra["empty_output"] = True
    return docs


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--input", required=True, help="a .warc or .warc.gz file")
    parser.add_argument("--output", required=True, help="the RAW Parquet shard to write")
    parser.add_argument("--stats", required=True, help="the stage's stats.json")


def run(args, stage: str) -> int:
    params = stage_params(args.params, args.config, "ingest")
    if not os.path.isfile(args.input):
        print(f"ingest: input WARC file not found: {args.input}", file=sys.stderr)
        return 1
    stats = StageStats(stage="ingest", shard=_shard(args.input))
    docs = ingest_file(args.input, int(params["max_record_bytes"]), stats)
    write_documents(args.output, docs, RAW)
    data = stats.write(args.stats)
    print(
        f"ingest {args.input}: {data['docs_out']} of {data['docs_in']} records kept;"
        f" skipped {data['removed']}",
        file=sys.stderr,
    )
    return 0


def _shard(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".gz", ".warc"):
        name = name.removesuffix(suffix)
    return name
