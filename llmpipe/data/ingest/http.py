"""HTTP semantics of one stored response: its status line and headers, de-chunking, Content-Encoding
(gzip, deflate, br, zstd) with a cap on the decoded size, and the payload's charset.

Tolerant the way crawl data needs: a bad chunk size keeps the rest of the body as it is, a header
that lies (says gzip, body is plain) yields the plain body, a broken or cut-off stream keeps what
decoded. Each of these is named in a ``notes`` counter that the stage reports.
"""
from __future__ import annotations

import codecs
import io
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import brotli
import charset_normalizer
import zstandard

GZIP_MAGIC = b"\x1f\x8b\x08"
STEP = 1 << 16  # compressed bytes fed to a decoder at a time (an error loses at most one step's output)
META_SCAN_BYTES = 4096  # where a <meta charset> may sit (HTML5 says 1024; real pages are sloppier)
# WHATWG Encoding: these labels mean windows-1252 in HTML.
WINDOWS_1252_ALIASES = frozenset({"ascii", "latin_1", "iso8859-1"})
CP1252_TIE = 0.05  # chaos margin within which detection prefers cp1252
BINARY_MAGICS = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x7fELF", b"MZ")
HTML_SNIFF = re.compile(
    rb"\s*(?:<!doctype\s+html|<html|<head|<body|<title|<meta|<div|<p[\s>]|<!--|<\?xml)", re.I
)
META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)", re.I)
HEADER_END = re.compile(rb"\r?\n\r?\n")
CHUNK_SIZE_LINE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")


class TooLarge(Exception):
    """A body that decodes to more than the cap (a decompression bomb, or just a huge page)."""


# ---------------------------------------------------------------------------------------------
# The message: status line and headers


@dataclass(frozen=True)
class HttpResponse:
    status: int | None  # None: the status line does not parse
    headers: tuple[tuple[str, str], ...]
    body: bytes  # as stored: maybe chunked, maybe Content-Encoded

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)


def parse_response(block: bytes) -> HttpResponse | None:
    """A stored HTTP response (status line, headers, blank line, body), or None when ``block``
    does not start with an HTTP status line. Bare LF line ends are accepted."""
    if block[:5].upper() != b"HTTP/":
        return None
    end = HEADER_END.search(block)
    head, body = (block[: end.start()], block[end.end() :]) if end else (block, b"")
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and headers:  # obsolete line folding
            headers[-1] = (headers[-1][0], f"{headers[-1][1]} {line.strip()}")
        elif ":" in line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return HttpResponse(status, tuple(headers), body)


def content_type_and_charset(value: str | None) -> tuple[str, str | None]:
    """(media type, lower case; charset label or None) of a Content-Type value."""
    value = (value or "").strip().lower()
    media_type = value.split(";", 1)[0].strip()
    at = value.find("charset=")
    charset = value[at + len("charset=") :].split(";", 1)[0].strip() if at >= 0 else None
    return media_type, charset


def codings(value: str | None) -> list[str]:
    """The codings of a Content-Encoding or Transfer-Encoding value, in the order applied."""
    return [c.strip().lower() for c in (value or "").split(",") if c.strip()]


# ---------------------------------------------------------------------------------------------
# Transfer-Encoding: chunked


def dechunk(data: bytes) -> tuple[bytes, str]:
    """The payload of a chunked body and how it went: ``ok``; ``truncated`` (the stream ends before
    its last chunk: what arrived is kept); ``fallback`` (a chunk size does not parse: the bytes from
    there on are kept as they are, so a body that was never chunked comes back whole)."""
    out, pos = [], 0
    while True:
        line = CHUNK_SIZE_LINE.match(data, pos)
        if line is None:
            if pos >= len(data):
                return b"".join(out), "truncated"
            return b"".join(out) + data[pos:], "fallback"
        size = int(line.group(1), 16)
        if size == 0:
            return b"".join(out), "ok"  # trailers, if any, are not payload
        start = line.end()
        out.append(data[start : start + size])
        pos = start + size
        if pos >= len(data):  # cut inside a chunk, or before the last chunk
            return b"".join(out), "truncated"
        if data.startswith(b"\r\n", pos):
            pos += 2
        elif data.startswith(b"\n", pos):
            pos += 1
        else:  # the size was wrong: keep the rest raw
            return b"".join(out) + data[pos:], "fallback"


# ---------------------------------------------------------------------------------------------
# Content-Encoding: each decoder returns (output, status), status one of ok | bad_crc (all data,
# trailer wrong) | truncated (the stream stops early) | error (corrupt data: output up to it).


class _Sink:
    """Collects decoded output, raising TooLarge once it passes ``cap`` bytes; ``crc`` and
    ``member_size`` cover what was added since the last ``new_member()`` (a gzip trailer's check)."""

    def __init__(self, cap: int):
        self.cap, self.size, self.parts = cap, 0, []
        self.crc = self.member_size = 0

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise TooLarge
        self.parts.append(data)
        self.crc = zlib.crc32(data, self.crc)
        self.member_size += len(data)

    def new_member(self) -> None:
        self.crc = self.member_size = 0

    def room(self) -> int:
        return self.cap + 1 - self.size  # >= 1 while not over the cap: zlib's max_length 0 means "no limit"

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def salvage(d, data: bytes, limit: int = 1 << 22) -> bytes:
    """What ``data`` inflates to up to the byte where it breaks (no more than about ``limit``
    bytes): ``d`` is a copy of the decompressor taken before the call that failed. Fed 256 bytes
    at a time, then the failing piece byte by byte from a copy."""
    parts, size, step = [], 0, 256
    pos = 0
    while pos < len(data) and size <= limit and not d.eof:
        before = d.copy() if step > 1 else d
        try:
            parts.append(d.decompress(data[pos : pos + step]))
        except zlib.error:
            if step == 1:
                break
            d, step = before, 1
            continue
        size += len(parts[-1])
        pos += step
    return b"".join(parts)


def _inflate(data: bytes, wbits: int, sink: _Sink) -> tuple[str, int]:
    """Inflate one zlib/raw-deflate stream from ``data`` into ``sink``: (status, bytes consumed)."""
    d = zlib.decompressobj(wbits)
    pos = 0
    while True:
        if d.unconsumed_tail:
            piece = d.unconsumed_tail
        else:
            piece = data[pos : pos + STEP]
            pos += len(piece)
        if not piece:
            return "truncated", pos
        before = d.copy()
        try:
            sink.add(d.decompress(piece, sink.room()))
        except zlib.error:
            sink.add(salvage(before, piece, sink.room()))
            return "error", pos
        if d.eof:
            return "ok", pos - len(d.unused_data) - len(d.unconsumed_tail)


def gzip_header_size(data: bytes, pos: int = 0) -> int | None:
    """Length of the gzip member header at ``pos`` (RFC 1952), or None if there is none."""
    if not data.startswith(GZIP_MAGIC, pos) or len(data) < pos + 10:
        return None
    flags, end = data[pos + 3], pos + 10
    if flags & 4:  # FEXTRA
        if len(data) < end + 2:
            return None
        end += 2 + struct.unpack_from("<H", data, end)[0]
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            zero = data.find(b"\0", end)
            if zero < 0:
                return None
            end = zero + 1
    if flags & 2:  # FHCRC
        end += 2
    return end - pos if end <= len(data) else None


def gunzip(data: bytes, sink: _Sink) -> str:
    """Every gzip member of ``data`` into ``sink``; trailing garbage after a member is ignored."""
    pos, status = 0, "ok"
    while (size := gzip_header_size(data, pos)) is not None:
        sink.new_member()
        inflated, used = _inflate(data[pos + size :], -15, sink)
        if inflated != "ok":
            return inflated
        trailer = data[pos + size + used : pos + size + used + 8]
        if len(trailer) < 8 or struct.unpack("<II", trailer) != (sink.crc, sink.member_size & 0xFFFFFFFF):
            status = "bad_crc"
        pos += size + used + 8
    return status if pos else "error"


def _deflate(data: bytes, sink: _Sink) -> str:
    """HTTP deflate: zlib-wrapped by the standard, raw deflate from many servers, gzip from some."""
    if data.startswith(GZIP_MAGIC):
        return gunzip(data, sink)
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        status, _ = _inflate(data, 15, sink)
        if status == "ok" or sink.size:
            return status
    return _inflate(data, -15, sink)[0]


def _brotli(data: bytes, sink: _Sink) -> str:
    d = brotli.Decompressor()
    try:
        for pos in range(0, len(data), STEP):
            sink.add(d.process(data[pos : pos + STEP], output_buffer_limit=STEP))
            # Drain what this step decoded beyond the limit. Not `while not can_accept_more_data()`:
            # brotli 1.2 says True with output still pending, which cut every body at ~96 KiB.
            while not d.is_finished():
                out = d.process(b"", output_buffer_limit=STEP)
                if not out:
                    break
                sink.add(out)
    except brotli.error:
        return "error"
    return "ok" if d.is_finished() else "truncated"


def _zstd(data: bytes, sink: _Sink) -> str:
    try:
        for out in zstandard.ZstdDecompressor().read_to_iter(io.BytesIO(data), write_size=STEP):
            sink.add(out)
    except zstandard.ZstdError:
        return "error"
    return "ok"


DECODERS: dict[str, Callable[[bytes, _Sink], str]] = {
    "gzip": gunzip, "x-gzip": gunzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd,
}


def decode_body(response: HttpResponse, cap: int, notes: Counter) -> bytes:
    """The payload of a stored response: de-chunked, then its Content-Encoding undone (no more
    than ``cap`` bytes, else TooLarge). ``notes`` counts what was done and what was wrong."""
    body = response.body
    transfer = codings(response.header("Transfer-Encoding"))
    if transfer and transfer[-1] == "chunked":
        transfer.pop()
        body, status = dechunk(body)
        notes["chunked" if status != "fallback" else "chunked_fallback"] += 1
    for coding in reversed(codings(response.header("Content-Encoding")) + transfer):
        if coding == "identity":
            continue
        decoder = DECODERS.get(coding)
        if decoder is None:
            notes["encoding_unknown"] += 1
            break
        sink = _Sink(cap)
        status = decoder(body, sink)
        if status in ("ok", "bad_crc"):
            notes[coding.removeprefix("x-")] += 1
            if status == "bad_crc":
                notes["gzip_bad_crc"] += 1
        elif looks_like_text(body):  # the header lies: the body was stored decoded
            notes["encoding_mismatch"] += 1
            continue
        else:  # broken or cut off: keep what decoded
            notes[f"encoding_{status}"] += 1
        body = sink.bytes()
    return body


# ---------------------------------------------------------------------------------------------
# The payload's charset, and what it is


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


def looks_like_text(body: bytes) -> bool:
    """A body that is markup or plain text as it stands (no compressed stream starts this way)."""
    head = body[:1024].lstrip(b"\xef\xbb\xbf")
    return looks_like_html(head) or head.lstrip()[:1] == b"<"


def looks_binary(head: bytes) -> bool:
    """A body declared HTML that is really an image, PDF, archive or executable."""
    return head.startswith(BINARY_MAGICS) or b"\x00" in head
