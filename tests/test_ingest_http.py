"""Ingest's HTTP semantics on WARC files written byte by byte (tests/warc_fixtures.py): chunked
bodies, Content-Encoding, decompression bombs, lying headers, records without HTTP headers, every
record type, WARC-Truncated. Each test says which URLs come out, that their HTML equals the page
stored plainly, what was counted, and that ingest keeps every HTML response warcio reads."""
from __future__ import annotations

from pathlib import Path

import brotli
import zstandard

from tests.warc_fixtures import (
    assert_recovers_warcio,
    bad_crc,
    bomb,
    br,
    chunked,
    gzip_bytes,
    http,
    ingest,
    members,
    page,
    raw_deflate,
    response,
    warc_record,
    warcinfo,
    warcio_html,
    write,
    zlib_deflate,
    zstd,
)


def url(name: str) -> str:
    return f"http://site.example/{name}"


def test_chunked_bodies_with_chunk_boundaries_mid_tag(tmp_path: Path):
    pages = {url(f"c{i}"): page(i) for i in range(4)}
    sizes = {url("c0"): [1, 7, 13], url("c1"): [100, 3], url("c2"): [4096], url("c3"): [5, 64]}
    records = [response(u, chunked(body, sizes[u], ";ext=1" if u.endswith("3") else ""),
                        [("Transfer-Encoding", "chunked")]) for u, body in pages.items()]
    path = write(tmp_path / "chunked.warc.gz", members([warcinfo(), *records]))

    docs, stats = ingest(path)

    assert set(docs) == set(pages)
    for u, body in pages.items():
        assert docs[u]["html"] == body.decode(), u
    assert stats.extra["http"] == {"chunked": 4}
    assert not stats.removed
    assert_recovers_warcio(path, docs, pages)


def test_chunked_and_gzip(tmp_path: Path):
    pages = {url(f"cg{i}"): page(10 + i) for i in range(2)}
    path = write(tmp_path / "chunked-gzip.warc.gz", members([
        response(url("cg0"), chunked(gzip_bytes(pages[url("cg0")]), [17, 300]),
                 [("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]),
        response(url("cg1"), chunked(gzip_bytes(pages[url("cg1")]), [64]), [("Transfer-Encoding", "gzip, chunked")]),
    ]))

    docs, stats = ingest(path)

    assert {u: d["html"] for u, d in docs.items()} == {u: b.decode() for u, b in pages.items()}
    assert stats.extra["http"] == {"chunked": 2, "gzip": 2}
    assert_recovers_warcio(path, docs, pages)


def test_gzip_bodies_bad_crc_multi_member_and_x_gzip(tmp_path: Path):
    pages = {url(f"g{i}"): page(20 + i) for i in range(3)}
    first, second = pages[url("g1")][:700], pages[url("g1")][700:]
    path = write(tmp_path / "gzip.warc.gz", members([
        response(url("g0"), bad_crc(gzip_bytes(pages[url("g0")])), [("Content-Encoding", "gzip")]),
        response(url("g1"), gzip_bytes(first) + gzip_bytes(second), [("Content-Encoding", "gzip")]),
        response(url("g2"), gzip_bytes(pages[url("g2")]), [("Content-Encoding", "x-gzip")]),
    ]))

    docs, stats = ingest(path)

    assert {u: d["html"] for u, d in docs.items()} == {u: b.decode() for u, b in pages.items()}
    assert stats.extra["http"] == {"gzip": 3, "gzip_bad_crc": 1}
    assert_recovers_warcio(path, docs, pages)


def test_deflate_raw_and_zlib_brotli_and_zstd(tmp_path: Path):
    encoded = {"zlib": (zlib_deflate, "deflate"), "raw": (raw_deflate, "deflate"),
               "gzip-as-deflate": (gzip_bytes, "deflate"), "br": (br, "br"), "zstd": (zstd, "zstd")}
    pages = {url(name): page(30 + i) for i, name in enumerate(encoded)}
    path = write(tmp_path / "encodings.warc.gz", members(
        response(url(name), encode(pages[url(name)]), [("Content-Encoding", coding)])
        for name, (encode, coding) in encoded.items()
    ))

    docs, stats = ingest(path)

    assert {u: d["html"] for u, d in docs.items()} == {u: b.decode() for u, b in pages.items()}
    assert stats.extra["http"] == {"deflate": 3, "br": 1, "zstd": 1}
    assert_recovers_warcio(path, docs, pages)


def test_bodies_larger_than_a_decoder_step_come_out_whole(tmp_path: Path):
    """Real pages run to hundreds of KB (the Python manual's asyncio page: 240 KB); every decoder
    works in bounded steps and must give all of them (brotli once stopped after ~96 KiB)."""
    encoded = {"gzip": gzip_bytes, "deflate": zlib_deflate, "br": br, "zstd": zstd}
    pages = {url(f"big-{name}"): page(60 + i, paragraphs=1500) for i, name in enumerate(encoded)}
    assert min(map(len, pages.values())) > 400_000
    path = write(tmp_path / "big.warc.gz", members(
        response(url(f"big-{name}"), encode(pages[url(f"big-{name}")]), [("Content-Encoding", name)])
        for name, encode in encoded.items()
    ))

    docs, stats = ingest(path)

    assert {u: d["html"] for u, d in docs.items()} == {u: b.decode() for u, b in pages.items()}
    assert stats.extra["http"] == {"gzip": 1, "deflate": 1, "br": 1, "zstd": 1}


def test_decompression_bombs_are_counted_too_large_skips(tmp_path: Path):
    cap = 1_000_000
    zeros = b"<html><body>" + bytes(20_000_000)
    bombs = {"gzip": bomb(20_000_000), "br": brotli.compress(zeros, quality=1),
             "zstd": zstandard.ZstdCompressor(level=1).compress(zeros)}
    assert all(len(b) < 100_000 for b in bombs.values())
    path = write(tmp_path / "bombs.warc.gz", members([
        response(url("before"), page(40)),
        *(response(url(f"bomb-{name}"), body, [("Content-Encoding", name)]) for name, body in bombs.items()),
        response(url("after"), gzip_bytes(page(41)), [("Content-Encoding", "gzip")]),
    ]))

    docs, stats = ingest(path, max_bytes=cap)

    assert set(docs) == {url("before"), url("after")}
    assert docs[url("after")]["html"] == page(41).decode()
    assert dict(stats.removed) == {"too_large": 3}
    assert stats.extra["skip_examples"]["too_large"] == [url("bomb-gzip"), url("bomb-br"), url("bomb-zstd")]


def test_a_lying_header_still_yields_the_page(tmp_path: Path):
    """Common Crawl and pywb store payloads decoded but keep Content-Encoding; servers send
    "chunked" over bodies that are not."""
    lies = {"gzip": [("Content-Encoding", "gzip")], "br": [("Content-Encoding", "br")],
            "deflate": [("Content-Encoding", "deflate")], "zstd": [("Content-Encoding", "zstd")],
            "chunked": [("Transfer-Encoding", "chunked")]}
    pages = {url(f"lie-{name}"): page(50 + i) for i, name in enumerate(lies)}
    path = write(tmp_path / "lies.warc.gz", members(
        response(url(f"lie-{name}"), pages[url(f"lie-{name}")], headers) for name, headers in lies.items()
    ))

    docs, stats = ingest(path)

    assert {u: d["html"] for u, d in docs.items()} == {u: b.decode() for u, b in pages.items()}
    assert stats.extra["http"] == {"encoding_mismatch": 4, "chunked_fallback": 1}
    assert_recovers_warcio(path, docs, pages)


def test_broken_and_unfinished_chunk_streams(tmp_path: Path):
    body = page(60)
    stream = chunked(body, [100])
    broken = stream.replace(b"\r\n64\r\n", b"\r\nzz\r\n", 3)  # the 4th chunk's size line is garbage
    assert broken.count(b"zz") == 3
    path = write(tmp_path / "chunks.warc.gz", members([
        response(url("broken"), broken, [("Transfer-Encoding", "chunked")]),
        response(url("unfinished"), stream[: -len(b"0\r\n\r\n")], [("Transfer-Encoding", "chunked")]),
    ]))

    docs, stats = ingest(path)

    # de-chunked up to the bad size, then the bytes as they are: what warcio makes of it too
    assert docs[url("broken")]["html"] == warcio_html(path)[url("broken")].decode()
    assert docs[url("broken")]["html"].startswith(body[:100].decode())
    assert docs[url("unfinished")]["html"] == body.decode()
    assert stats.extra["http"] == {"chunked": 1, "chunked_fallback": 1}
    assert_recovers_warcio(path, docs, {url("unfinished"): body})


def test_records_without_http_headers(tmp_path: Path):
    pages = {url("bare-html"): page(70), url("bare-sniffed"): page(71)}
    path = write(tmp_path / "bare.warc.gz", members([
        warc_record(url("bare-html"), pages[url("bare-html")], content_type="text/html; charset=utf-8"),
        warc_record(url("bare-sniffed"), pages[url("bare-sniffed")]),  # says application/http, holds HTML
        warc_record(url("bare-text"), b"just some text", content_type="text/plain"),
        response(url("with-headers"), page(72)),
    ]))

    docs, stats = ingest(path)

    assert set(docs) == {url("bare-html"), url("bare-sniffed"), url("with-headers")}
    for u, body in pages.items():
        assert docs[u]["html"] == body.decode() and docs[u]["http_status"] is None
    assert docs[url("bare-html")]["charset_source"] == "http-header"
    assert dict(stats.removed) == {"not_http": 1}
    assert stats.extra["http"] == {"no_http_headers": 2}
    assert_recovers_warcio(path, docs, {**pages, url("with-headers"): page(72)})


def test_every_record_type_is_counted_and_only_responses_are_documents(tmp_path: Path):
    target = url("typed")
    revisit = http(b"", content_type="text/html")
    path = write(tmp_path / "types.warc.gz", members([
        warcinfo(),
        warc_record(target, b"GET /typed HTTP/1.1\r\nHost: site.example\r\n\r\n", "request",
                    "application/http; msgtype=request"),
        response(target, page(80)),
        warc_record(target, b"fetchTimeMs: 12\r\n", "metadata", "application/warc-fields"),
        warc_record(url("res"), page(81), "resource", "text/html"),
        warc_record(target, revisit, "revisit", headers=[
            ("WARC-Profile", "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"),
            ("WARC-Refers-To-Target-URI", target)], salt="revisit"),
        warc_record(url("conv"), b"converted text", "conversion", "text/plain"),
        warc_record(url("cont"), b"the rest of a segmented record", "continuation", None),
    ]))

    docs, stats = ingest(path)

    assert list(docs) == [target] and docs[target]["html"] == page(80).decode()
    assert stats.extra["record_types"] == {"warcinfo": 1, "request": 1, "response": 1, "metadata": 1,
                                           "resource": 1, "revisit": 1, "conversion": 1, "continuation": 1}
    assert stats.docs_in == 1 and not stats.removed  # only responses are documents or skips


def test_warc_truncated_records_are_kept_and_counted(tmp_path: Path):
    """Common Crawl cuts payloads (at 1 MiB) and says so in WARC-Truncated: what is there is kept."""
    body = page(90, paragraphs=40)
    gz = gzip_bytes(body)
    truncated = [("WARC-Truncated", "length")]
    path = write(tmp_path / "cc-truncated.warc.gz", members([
        response(url("cut-plain"), body[:3000], headers=truncated),
        response(url("cut-gzip"), gz[: len(gz) // 2], [("Content-Encoding", "gzip")], headers=truncated),
        response(url("cut-chunked"), chunked(body, [1000])[:2500], [("Transfer-Encoding", "chunked")],
                 headers=truncated),
        response(url("whole"), body),
    ]))

    docs, stats = ingest(path)

    assert set(docs) == {url("cut-plain"), url("cut-gzip"), url("cut-chunked"), url("whole")}
    assert docs[url("cut-plain")]["html"] == body[:3000].decode()
    for name in ("cut-gzip", "cut-chunked"):
        html = docs[url(name)]["html"]
        assert 1000 < len(html) < len(body) and body.decode().startswith(html), name
    assert stats.extra["truncated_by_crawler"] == 3
    assert stats.extra["http"] == {"chunked": 1, "encoding_truncated": 1}
    assert not stats.removed
    assert_recovers_warcio(path, docs, {url("whole"): body})
