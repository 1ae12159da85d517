"""WARC writing: one .warc.gz of pages, a warcinfo record then one response record per page,
each its own gzip member (the truncated page's member cut off mid-body)."""
from __future__ import annotations

import gzip
import io
import os
import random
import uuid
import zlib

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from llmpipe.data.toyweb.pages import Page
from llmpipe.io import atomic_path

CRAWL_DATE = "2024-05-01T08:00:00Z"  # fixed, so reruns are byte-identical
HTTP_DATE = "Wed, 01 May 2024 08:00:00 GMT"


def record_bytes(writer_buffer: io.BytesIO, record) -> bytes:
    writer_buffer.seek(0)
    writer_buffer.truncate()
    WARCWriter(writer_buffer, gzip=False, warc_version="1.1").write_record(record)
    return writer_buffer.getvalue()


def response_record(page: Page, record_id: str, date: str):
    headers = [("Server", "nginx"), ("Date", HTTP_DATE)]
    if page.content_type is not None:
        headers.append(("Content-Type", page.content_type))
    headers.append(("Content-Length", str(len(page.body))))
    http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
    builder = WARCWriter(io.BytesIO(), gzip=False, warc_version="1.1")
    return builder.create_warc_record(
        page.url, "response", payload=io.BytesIO(page.body), length=len(page.body), http_headers=http,
        warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": date},
    )


def warcinfo_record(filename: str, record_id: str):
    info = (f"software: llmpipe toyweb\r\nformat: WARC File Format 1.1\r\n"
            f"description: synthetic toy-web crawl {filename}\r\n").encode()
    builder = WARCWriter(io.BytesIO(), gzip=False, warc_version="1.1")
    return builder.create_warc_record(
        "", "warcinfo", payload=io.BytesIO(info), length=len(info),
        warc_content_type="application/warc-fields",
        warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": CRAWL_DATE,
                           "WARC-Filename": filename},
    )


def cut_member(raw: bytes) -> bytes:
    """A gzip member holding ``raw`` only up to the middle of its HTTP body, with no trailer:
    what a crawler killed mid-write leaves behind."""
    body_start = raw.index(b"\r\n\r\n", raw.index(b"HTTP/1.1")) + 4
    cut = body_start + (len(raw) - body_start) // 2
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(raw[:cut]) + z.flush(zlib.Z_SYNC_FLUSH)


def record_date(n: int) -> str:
    return f"2024-05-01T{8 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"


def write_warc(path: str | os.PathLike, pages: list[Page], ids: random.Random) -> list[str]:
    """Write one .warc.gz (one gzip member per record, mtime 0); return the response ids."""
    filename = os.path.basename(os.fspath(path))
    buffer = io.BytesIO()
    out = [gzip.compress(
        record_bytes(buffer, warcinfo_record(filename, str(uuid.UUID(int=ids.getrandbits(128), version=4)))),
        mtime=0)]
    record_ids = []
    for n, page in enumerate(pages):
        record_id = str(uuid.UUID(int=ids.getrandbits(128), version=4))
        raw = record_bytes(buffer, response_record(page, record_id, record_date(n)))
        out.append(cut_member(raw) if page.kind == "truncated" else gzip.compress(raw, mtime=0))
        record_ids.append(record_id)
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(out))
    return record_ids
