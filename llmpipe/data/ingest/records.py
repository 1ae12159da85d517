"""WARC and ARC framing, tolerant: a file -> its records in file order, whatever the damage.

A file is read as a run of segments: gzip members (a ``.warc.gz`` holds one record per member,
some hold a whole file in one) and uncompressed stretches (a ``.warc``, an ``.arc``, records
appended uncompressed after gzip members). A segment is parsed record by record, WARC or ARC
alike, and damage costs only what it hits:

- a wrong or missing Content-Length: the record ends where the next record's header line starts,
  or where its gzip member ends (noted as ``content_length``, the record kept whole);
- a gzip member that breaks off (corrupt data, a cut stream): the record it holds is *clipped*
  (what decoded is kept, the stage decides), and reading resumes at the next gzip member or
  record header in the file; a bad CRC or missing trailer keeps the data when its record fits
  its framing exactly (noted as ``gzip_bad_trailer``), else the record is clipped ``corrupt``;
- bytes that are no record: a counted ``corrupt`` loss, skipped to the next record or member.

Nothing holds more than one record's block (at most ``max_bytes``; a larger one is skipped
unread), so memory does not grow with the file.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from llmpipe.data.ingest.http import GZIP_MAGIC, gzip_header_size, salvage

CHUNK = 1 << 16
LOOKAHEAD = 4096  # bytes after a candidate record start needed to judge it (and the scan overlap)
HEADER_LIMIT = 1 << 20  # a WARC header block, or a gzip header, longer than this is not one
ARC_LINE_LIMIT = 1 << 14
_WARC_LINE = rb"WARC/\d\.\d+\r?\n"
_ARC_LINE = rb"[A-Za-z][A-Za-z0-9+.-]*:\S* \S+ \d{14} \S+ (?:\S+ ){0,5}\d+\r?\n"
# Where a block whose Content-Length is wrong really ends: the separator's last newline before the
# next record (or, in uncompressed stretches, before the next gzip member).
BLOCK_END = re.compile(rb"\n(?:%s|%s)" % (_WARC_LINE, _ARC_LINE))
BLOCK_END_PLAIN = re.compile(rb"\n(?:%s|%s|\x1f\x8b\x08)" % (_WARC_LINE, _ARC_LINE))
# Where reading resumes after bytes that are no record: a gzip member may start anywhere.
RESYNC_PLAIN = re.compile(rb"\x1f\x8b\x08|\n(?:%s|%s)" % (_WARC_LINE, _ARC_LINE))
HEADER_END = re.compile(rb"\r?\n\r?\n")
LINE_END = re.compile(rb"\n")


@dataclass
class Record:
    """One WARC (or ARC) record: its type, header fields and block."""

    kind: str  # WARC-Type in lower case; ARC: "response", or "filedesc" for the file header
    headers: dict[str, str]  # header fields by lower-case name (first occurrence); ARC: the WARC names
    block: bytes | None  # the content block; None when it is larger than max_bytes (not read)
    length: int  # the block's size: its Content-Length, or what was found when that was wrong
    offset: str  # where it sits: "<file offset of its segment>+<offset inside the segment>"
    clipped: str | None = None  # "truncated" | "corrupt": the record breaks off; block is what was read
    message: str | None = None  # what clipped it, for the log
    repairs: list[tuple[str, str]] = field(default_factory=list)  # (counter, message): framing fixed
    arc: bool = False  # an ARC record (its separator is one newline)

    @property
    def url(self) -> str:
        return self.headers.get("warc-target-uri", "").strip().removeprefix("<").removesuffix(">")


@dataclass(frozen=True)
class Damage:
    """Framing damage outside any record's block: ``reason`` ("corrupt" | "truncated") when a
    record was lost (the stage counts a skip), None when nothing was (only noted)."""

    what: str  # the framing counter: not_a_record, header_cut, gzip_bad_trailer
    message: str
    reason: str | None = None
    url: str | None = None


# ---------------------------------------------------------------------------------------------
# Bytes: a forward-only buffered reader over chunks, and gzip members


class Source:
    """A forward-only reader over an iterator of byte chunks (a gzip member's output, a file)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self._fetched = 0
        self.eof = False

    def tell(self) -> int:
        """Bytes consumed so far."""
        return self._fetched - (len(self._buf) - self._pos)

    def _next_chunk(self) -> bytes:
        if not self.eof:
            for chunk in self._chunks:
                if chunk:
                    self._fetched += len(chunk)
                    return chunk
            self.eof = True
        return b""

    def _fill(self) -> bool:
        chunk = self._next_chunk()
        if chunk:
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
        return bool(chunk)

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._fill():
            pass
        return self._buf[self._pos : self._pos + n]

    def read(self, n: int, keep: bool = True) -> bytes:
        """The next ``n`` bytes (fewer at EOF); with ``keep=False`` they are skipped, b"" returned
        (use ``tell`` to learn how many went)."""
        avail = len(self._buf) - self._pos
        if avail >= n:
            out = self._buf[self._pos : self._pos + n] if keep else b""
            self._pos += n
            return out
        parts = [self._buf[self._pos :]] if keep else []
        need = n - avail
        self._buf, self._pos = b"", 0
        while need > 0 and (chunk := self._next_chunk()):
            if len(chunk) <= need:
                if keep:
                    parts.append(chunk)
                need -= len(chunk)
            else:
                if keep:
                    parts.append(chunk[:need])
                self._buf, self._pos, need = chunk, need, 0
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        self._buf = data + self._buf[self._pos :]
        self._pos = 0

    def skip_blank_lines(self) -> None:
        while True:
            ahead = self.peek(LOOKAHEAD)
            rest = ahead.lstrip(b"\r\n")
            self._pos += len(ahead) - len(rest)
            if rest or not ahead:
                return

    def take_through(self, pattern: re.Pattern, limit: int) -> bytes | None:
        """Consume and return the bytes through the first match of ``pattern`` (which must end
        within ``limit`` bytes); None, consuming nothing, when there is none."""
        searched = self._pos
        while True:
            m = pattern.search(self._buf, searched)
            if m is not None:
                if m.end() - self._pos > limit:
                    return None
                out = self._buf[self._pos : m.end()]
                self._pos = m.end()
                return out
            if len(self._buf) - self._pos > limit:
                return None
            resume = max(0, len(self._buf) - self._pos - LOOKAHEAD)  # relative to _pos, kept by _fill
            if not self._fill():
                return None
            searched = self._pos + resume

    def scan(self, pattern: re.Pattern, limit: int | None = None, keep: bool = True,
             accept: Callable[[bytes, int], bool] | None = None) -> tuple[bytes, bool]:
        """Consume up to the first match of ``pattern`` that ``accept(buffer, start)`` takes (the
        match itself is left unread), or to EOF, or past ``limit`` bytes: (the bytes consumed, or
        b"" unless ``keep``; whether a match stopped it)."""
        parts, taken = [], 0
        while True:
            m = pattern.search(self._buf, self._pos)
            while m is not None and (self.eof or len(self._buf) - m.start() >= LOOKAHEAD):
                if accept is None or accept(self._buf, m.start()):
                    if keep:
                        parts.append(self._buf[self._pos : m.start()])
                    self._pos = m.start()
                    return b"".join(parts), True
                m = pattern.search(self._buf, m.start() + 1)
            # no (judgeable) match in the buffer: consume it but for an overlap, read on
            stop = m.start() if m is not None else max(self._pos, len(self._buf) - LOOKAHEAD)
            if self.eof:
                stop = len(self._buf)
            taken += stop - self._pos
            if keep:
                parts.append(self._buf[self._pos : stop])
            self._pos = stop
            if limit is not None and taken > limit:
                return b"".join(parts), False
            if not self._fill() and self._pos >= len(self._buf):
                return b"".join(parts), False


class GzipMember:
    """The decompressed bytes of the gzip member at ``start`` in ``raw``, as chunks (``chunks``).

    Once they are exhausted, ``status`` says how the member ended: ``ok``; ``bad_trailer`` (all
    data there, its CRC-32 or size wrong or the trailer missing); ``truncated`` (the file ends
    inside it); ``corrupt`` (the deflate data breaks). ``end`` is the file offset just past the
    member when its deflate stream ended (ok or bad_trailer), else None.
    """

    def __init__(self, raw: BinaryIO, start: int):
        self._raw, self.start = raw, start
        self.status = "ok"
        self.end: int | None = None
        self.chunks = self._inflate()

    def drain(self) -> None:
        for _ in self.chunks:
            pass

    def ended(self) -> str:
        """How the member ended (``status``), once its chunks are exhausted."""
        return self.status

    def _header(self) -> bytes | None:
        """The bytes after the member's gzip header (at least some), or None when it has none."""
        self._raw.seek(self.start)
        data = self._raw.read(CHUNK)
        while (size := gzip_header_size(data)) is None:
            more = self._raw.read(CHUNK) if len(data) < HEADER_LIMIT else b""
            if not more:
                self.status = "truncated" if len(data) < HEADER_LIMIT else "corrupt"
                return None
            data += more
        return data[size:]

    def _inflate(self) -> Iterator[bytes]:
        data = self._header()
        if data is None:
            return
        d, crc, size = zlib.decompressobj(-15), 0, 0
        while True:
            if not data and not (data := self._raw.read(CHUNK)):
                # the file ends inside it -- or its cut deflate data decoded on through the
                # members after it without an error (a few % of cut members): then it broke
                # off mid-file, as one that errors does
                self.status = "corrupt" if self._overruns(self._raw.seek(0, 2)) else "truncated"
                return
            before = d.copy()
            try:
                out = d.decompress(data, CHUNK)
            except zlib.error:
                self.status = "corrupt"
                if out := salvage(before, data):
                    yield out
                return
            data = d.unconsumed_tail
            if out:
                crc, size = zlib.crc32(out, crc), size + len(out)
                yield out
            if d.eof:
                trailer = d.unused_data[:8]
                deflate_end = self._raw.tell() - len(d.unused_data)
                if len(trailer) < 8:
                    trailer += self._raw.read(8 - len(trailer))
                self.end = deflate_end + len(trailer)
                if len(trailer) < 8 or struct.unpack("<II", trailer) != (crc, size & 0xFFFFFFFF):
                    # data intact, trailer wrong -- or a cut member inflated on into the next
                    # members' bytes until they happened to end a stream: then a member starts
                    # inside it, or nothing that could follow a member follows where it "ended"
                    self._raw.seek(self.end)
                    intact = _can_follow_member(self._raw.read(LOOKAHEAD)) and not self._overruns(deflate_end)
                    self.status = "bad_trailer" if intact else "corrupt"
                    self.end = self.end if intact else None
                return

    def _overruns(self, end: int) -> bool:
        """Whether another gzip member or record starts inside this member's bytes (before ``end``):
        then its deflate data was cut and decoded on into what follows."""
        return _resync(self._raw, self.start + 1) < end


def _can_follow_member(data: bytes) -> bool:
    """Whether ``data`` can follow a gzip member: nothing, another member, or records."""
    rest = data.lstrip(b"\r\n")
    return (not rest or rest.startswith((GZIP_MAGIC, b"WARC/"))
            or (b"\n" in rest and parse_arc_line(rest.split(b"\n", 1)[0]) is not None))


def _file_chunks(raw: BinaryIO, start: int) -> Iterator[bytes]:
    raw.seek(start)
    while chunk := raw.read(CHUNK):
        yield chunk


def holds_record(data: bytes, start: int) -> bool:
    """Whether a candidate record start at ``start`` (a pattern match) is one: a gzip magic there
    (or after the newline) must inflate to a record header; header lines are taken as found."""
    at = start + 1 if data.startswith(b"\n", start) else start
    if not data.startswith(GZIP_MAGIC, at):
        return True
    size = gzip_header_size(data, at)
    if size is None:
        return False
    try:
        head = zlib.decompressobj(-15).decompress(data[at + size : at + LOOKAHEAD], 64)
    except zlib.error:
        return False
    return head.startswith(b"WARC/") or parse_arc_line(head.split(b"\n", 1)[0]) is not None


# ---------------------------------------------------------------------------------------------
# Records


def parse_arc_line(line: bytes) -> tuple[str, str, str, str, int] | None:
    """(url, ip, date, mime, length) of an ARC v1 or v2 record header line, or None."""
    parts = line.rstrip(b"\r\n").decode("utf-8", "replace").split(" ")
    if len(parts) < 5 or not parts[-1].isdigit() or ":" not in parts[0]:
        return None
    date = next((i for i in range(2, len(parts) - 2) if len(parts[i]) == 14 and parts[i].isdigit()), None)
    if date is None:
        return None
    return " ".join(parts[: date - 1]), parts[date - 1], parts[date], parts[date + 1], int(parts[-1])


def arc_date(date: str) -> str:
    """An ARC date (YYYYMMDDhhmmss) as a WARC-Date."""
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}T{date[8:10]}:{date[10:12]}:{date[12:14]}Z"


def parse_warc_header(header: bytes) -> dict[str, str]:
    """A WARC header block's fields by lower-case name (first occurrence wins; folded lines joined)."""
    fields: dict[str, str] = {}
    last = None
    for line in header.decode("utf-8", "replace").split("\n")[1:]:
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and last is not None:
            fields[last] = f"{fields[last]} {line.strip()}"
        elif ":" in line:
            name, value = line.split(":", 1)
            last = name.strip().lower()
            if last in fields:
                last = None
            else:
                fields[last] = value.strip()
    return fields


def strip_separator(block: bytes, arc: bool = False) -> bytes:
    """A block found by scanning, without the record separator it ends with (ARC: one newline)."""
    for sep in (b"\n",) if arc else (b"\r\n\r\n", b"\n\n", b"\r\n", b"\n"):
        if block.endswith(sep):
            return block[: -len(sep)]
    return block


@dataclass
class Segment:
    """One gzip member or uncompressed stretch of a file, being parsed."""

    src: Source
    start: int  # its file offset
    plain: bool  # uncompressed (and may run into gzip members)
    status: Callable[[], str]  # how it ended, once src is exhausted: GzipMember.status (plain: ok)
    name: str  # the file's name, for messages

    def broken(self, strict: bool = False) -> str | None:
        """Why the segment's data cannot be trusted once src is exhausted (None: it can). A bad
        trailer alone is no reason; ``strict``ly, with a record that does not fit, it is one."""
        status = self.status()
        if status == "bad_trailer":
            return "corrupt" if strict else None
        return None if status == "ok" else status

    def where(self) -> str:
        return f"offset {self.start + self.src.tell()}" if self.plain else f"gzip member at offset {self.start}"

    def at_boundary(self) -> bool:
        """Whether what follows a block is the record separator, then EOF or the next record."""
        ahead = self.src.peek(LOOKAHEAD)
        if not ahead:
            # the segment's end is one only when its stream is whole: a cut member decodes on
            # into the next member's bytes, and that garbage can fill a block's Content-Length
            return self.broken() is None
        rest = ahead.lstrip(b"\r\n")
        if not rest:
            return True
        if rest.startswith(b"WARC/") or (self.plain and rest.startswith(GZIP_MAGIC)):
            return True
        return parse_arc_line(rest.split(b"\n", 1)[0]) is not None

    def separator_follows(self, arc: bool) -> bool:
        """Whether the record separator comes next: then a block's length was right, and what
        follows the separator (garbage) is no part of it."""
        return self.src.peek(4).startswith(b"\n" if arc else b"\r\n\r\n")

    def clip_message(self, url: str, status: str) -> str:
        if self.plain:
            return f"{self.name}: the file ends inside the record of {url or '?'}"
        return f"{self.name}: gzip member {status} at {url or 'start'}"


def read_segment(seg: Segment, max_bytes: int) -> Iterator[Record | Damage]:
    """Every record of a segment (and the damage between them), in order."""
    src = seg.src
    while True:
        src.skip_blank_lines()
        head = src.peek(LOOKAHEAD)
        if not head or (seg.plain and head.startswith(GZIP_MAGIC)):
            return
        start = f"{seg.start}+{src.tell()}"
        if head.startswith(b"WARC/"):
            yield from _read_warc(seg, start, max_bytes)
        elif b"\n" in head and (arc := parse_arc_line(head.split(b"\n", 1)[0])) is not None:
            yield from _read_arc(seg, start, arc, max_bytes)
        else:
            message = (f"{seg.name}: bytes at {seg.where()} are neither a record nor a gzip member" if seg.plain
                       else f"{seg.name}: {seg.where()} holds bytes that are not a record")
            yield Damage("not_a_record", message, "corrupt")
            src.read(1, keep=False)
            src.scan(RESYNC_PLAIN if seg.plain else BLOCK_END, keep=False, accept=holds_record)


def _read_warc(seg: Segment, start: str, max_bytes: int) -> Iterator[Record | Damage]:
    header = seg.src.take_through(HEADER_END, HEADER_LIMIT)
    if header is None:
        status = (seg.broken() or "truncated") if seg.src.eof else "corrupt"
        yield Damage("header_cut", f"{seg.name}: a record header at {seg.where()} is cut off or too long"
                     if seg.plain or status == "corrupt" else seg.clip_message("", status), status)
        seg.src.read(1, keep=False)
        seg.src.scan(BLOCK_END_PLAIN if seg.plain else BLOCK_END, keep=False, accept=holds_record)
        return
    headers = parse_warc_header(header)
    length = headers.get("content-length", "").strip()
    record = Record(headers.get("warc-type", "unknown").strip().lower(), headers, None,
                    int(length) if length.isdigit() else -1, start)
    yield _read_block(seg, record, max_bytes)


def _read_arc(seg: Segment, start: str, arc: tuple[str, str, str, str, int], max_bytes: int) -> Iterator[Record]:
    seg.src.take_through(LINE_END, ARC_LINE_LIMIT)
    url, ip, date, mime, length = arc
    headers = {"warc-target-uri": url, "warc-date": arc_date(date), "content-type": mime, "warc-ip-address": ip}
    kind = "filedesc" if url.startswith("filedesc:") else "response"
    yield _read_block(seg, Record(kind, headers, None, length, start, arc=True), max_bytes)


def _read_block(seg: Segment, record: Record, max_bytes: int) -> Record:
    """Read ``record``'s block (its length -1: unknown), re-framing it when its length is wrong."""
    src, end = seg.src, BLOCK_END_PLAIN if seg.plain else BLOCK_END
    length, before = record.length, src.tell()
    if length > max_bytes:  # skipped unread; where it ends is taken on trust
        src.read(length, keep=False)
        if src.tell() - before < length and seg.broken():
            record.clipped = seg.broken()
            record.message = seg.clip_message(record.url, record.clipped)
        elif not seg.at_boundary():
            src.scan(end, keep=False, accept=holds_record)
        return record
    block = src.read(length) if length >= 0 else b""
    if 0 <= length == len(block) and (seg.at_boundary() or seg.separator_follows(record.arc)):
        record.block = block
        return record
    if len(block) < length:  # the segment ends inside the block
        broken = seg.broken(strict=True)
        if broken or (seg.plain and not block.endswith(b"\r\n\r\n")):
            record.clipped = broken or "truncated"
            record.message = seg.clip_message(record.url, record.clipped)
            record.block, record.length = block, len(block)
            return record
    else:  # the block runs into the next record, or stops short of its end
        m = end.search(block)
        while m is not None and not holds_record(block, m.start()):
            m = end.search(block, m.start() + 1)
        if m is not None:
            src.unread(block[m.start() + 1 :])
            block = block[: m.start() + 1]
        else:
            more, found = src.scan(end, limit=max_bytes - len(block), accept=holds_record)
            if not found and seg.broken(strict=True):  # what follows the block is the broken stream's junk
                record.clipped = seg.broken(strict=True)
                record.message = seg.clip_message(record.url, record.clipped)
                record.block = block if length >= 0 else more
                record.length = len(record.block)
                return record
            block += more + (src.read(1) if found else b"")  # the separator's last newline
            if len(block) > max_bytes:
                src.scan(end, keep=False, accept=holds_record)
                record.length = len(block)
                record.repairs.append(("content_length", f"{seg.name}: {record.url or '?'}: Content-Length wrong "
                                       "or missing, re-framed (too large)"))
                return record
    record.block = strip_separator(block, record.arc)
    record.length = len(record.block)
    record.repairs.append(("content_length", f"{seg.name}: {record.url or '?'}: Content-Length wrong or "
                           "missing, re-framed at the next record"))
    return record


# ---------------------------------------------------------------------------------------------
# A file


def _resync(raw: BinaryIO, start: int) -> int:
    """File offset of the next gzip member or uncompressed record at or after ``start``."""
    src = Source(_file_chunks(raw, start))
    src.scan(RESYNC_PLAIN, keep=False, accept=holds_record)
    return start + src.tell()


def iter_records(path: str | os.PathLike, max_bytes: int) -> Iterator[Record | Damage]:
    """Every record of a WARC or ARC file (gzipped or not, or mixed), and the damage found."""
    name = os.path.basename(os.fspath(path))
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        gzipped = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        offset = 0
        while offset < size:
            raw.seek(offset)
            if raw.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
                src, records = Source(_file_chunks(raw, offset)), 0
                for item in read_segment(Segment(src, offset, True, lambda: "ok", name), max_bytes):
                    records += isinstance(item, Record)
                    yield item
                if gzipped and records:
                    yield Damage("uncompressed_records", f"{name}: {records} uncompressed record(s) among the "
                                 f"gzip members at offset {offset}")
                offset += src.tell()
                continue
            member = GzipMember(raw, offset)
            last = None
            for last in read_segment(Segment(Source(member.chunks), offset, False, member.ended, name), max_bytes):
                yield last
            member.drain()
            reported = isinstance(last, Record) and last.clipped or isinstance(last, Damage) and last.reason
            if member.status == "bad_trailer" and not reported:
                yield Damage("gzip_bad_trailer", f"{name}: gzip member at offset {offset} has a bad CRC or no "
                             "trailer (its data kept)")
            elif member.status not in ("ok", "bad_trailer") and not reported:
                # the member broke between records (nothing known lost) or before any (all lost)
                what = f"after {last.url or '?'}" if isinstance(last, Record) else "at start"
                yield Damage("gzip_broken", f"{name}: gzip member {member.status} {what}",
                             member.status if last is None else None)
            offset = member.end if member.end is not None else _resync(raw, offset + 1)
