"""Column schemas of the document shards that flow between the data stages.

``RAW`` rows come out of ingest (HTML still attached); ``TEXT`` rows come out of
extraction and keep that shape through quality, dedup and split.
"""
from __future__ import annotations

import pyarrow as pa

RAW = pa.schema(
    [
        ("id", pa.string()),  # WARC-Record-ID without the urn:uuid: wrapper
        ("url", pa.string()),
        ("html", pa.string()),  # decoded with `charset`
        ("charset", pa.string()),
        ("charset_source", pa.string()),  # http-header | meta | detected | fallback
        ("content_type", pa.string()),
        ("http_status", pa.int32()),
        ("date", pa.string()),  # WARC-Date
        ("warc_file", pa.string()),
    ]
)

TEXT = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("date", pa.string()),
        ("warc_file", pa.string()),
    ]
)

REJECT_REASON = "reason"


def with_reason(schema: pa.Schema) -> pa.Schema:
    """The schema of a rejects file: the stage's input columns plus the drop reason."""
    return schema.append(pa.field(REJECT_REASON, pa.string()))


def text_bytes(doc: dict) -> int:
    """Size of a document's payload in UTF-8 bytes (``text`` if extracted, else ``html``)."""
    payload = doc.get("text")
    if payload is None:
        payload = doc.get("html") or ""
    return len(payload.encode("utf-8", "surrogatepass"))
