"""Ingest's recovery from damaged framing, at least as good as warcio's ArchiveIterator: wrong or
missing Content-Lengths, clipped final records, broken gzip members and bad CRCs, gzip members
mixed with uncompressed records, garbage, ARC files, and real pages stored the way crawlers store
them. Each test says which URLs come out, that their HTML equals the page stored plainly, what was
counted, and that every HTML response warcio reads comes out too."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llmpipe.cli import main
from tests.warc_fixtures import (
    arc_file,
    arc_record,
    assert_recovers_warcio,
    bad_crc,
    bench_corpus,
    broken_member,
    chunked,
    clip,
    crawler_styles,
    gzip_bytes,
    http,
    ingest,
    members,
    page,
    real_crawl,
    real_pages,
    response,
    warcinfo,
    warcio_html,
    write,
)

PAGES = {f"http://r.example/{i}": page(100 + i) for i in range(5)}
URLS = list(PAGES)


def records(**content_length: int) -> list[bytes]:
    """The five pages as response records; ``content_length`` ("r1": delta) makes one wrong
    by ``delta`` (None: leaves the header out)."""
    out = []
    for i, (u, body) in enumerate(PAGES.items()):
        delta = content_length.get(f"r{i}", 0)
        length = -1 if delta is None else (len(http(body)) + delta if delta else None)
        out.append(response(u, body, content_length=length))
    return out


def layout(kind: str, recs: list[bytes]) -> bytes:
    if kind == "members":
        return members([warcinfo(), *recs])
    if kind == "plain":
        return b"".join([warcinfo(), *recs])
    return gzip_bytes(b"".join([warcinfo(), *recs]))  # the whole file as one gzip member


def assert_all_pages(docs: dict[str, dict], urls: list[str] = URLS) -> None:
    assert list(docs) == urls
    for u in urls:
        assert docs[u]["html"] == PAGES[u].decode(), u


@pytest.mark.parametrize("kind", ["members", "plain", "one-member"])
def test_wrong_content_lengths_mid_file_are_reframed(tmp_path: Path, kind: str):
    path = write(tmp_path / f"cl-{kind}.warc{'' if kind == 'plain' else '.gz'}",
                 layout(kind, records(r1=-30, r3=+45)))

    docs, stats = ingest(path)

    assert_all_pages(docs)
    assert stats.extra["framing"] == {"content_length": 2}
    assert not stats.removed
    assert any(URLS[1] in m for m in stats.extra["messages"]) and any(URLS[3] in m for m in stats.extra["messages"])
    assert_recovers_warcio(path, docs, PAGES)


@pytest.mark.parametrize("kind", ["members", "plain"])
def test_a_missing_content_length_is_reframed(tmp_path: Path, kind: str):
    path = write(tmp_path / f"no-cl-{kind}.warc.gz", layout(kind, records(r2=None)))
    docs, stats = ingest(path)
    assert_all_pages(docs)
    assert stats.extra["framing"] == {"content_length": 1}
    assert_recovers_warcio(path, docs, PAGES)


@pytest.mark.parametrize("kind", ["members", "plain"])
def test_a_clipped_last_record(tmp_path: Path, kind: str):
    """A crawler killed mid-write: by default a counted ``truncated`` skip; with
    keep_clipped_records what was read is kept (it is usable HTML), as warcio yields it."""
    last = records()[4]
    cut = clip(last, 900) if kind == "members" else last[:900]
    path = write(tmp_path / f"clipped-{kind}.warc.gz", layout(kind, records()[:4]) + cut)

    docs, stats = ingest(path)
    assert_all_pages(docs, URLS[:4])
    assert dict(stats.removed) == {"truncated": 1}
    assert stats.extra["skip_examples"]["truncated"] == [URLS[4]]
    assert URLS[4] in stats.extra["messages"][0]

    docs, stats = ingest(path, keep_clipped=True)
    assert list(docs) == URLS
    html = docs[URLS[4]]["html"]
    assert 300 < len(html) < len(PAGES[URLS[4]]) and PAGES[URLS[4]].decode().startswith(html)
    assert not stats.removed and stats.extra["framing"] == {"clipped_kept": 1}
    assert "kept what was read" in stats.extra["messages"][0]
    assert_recovers_warcio(path, docs, {u: PAGES[u] for u in URLS[:4]})


@pytest.mark.parametrize("how", ["inflate", "crc"])
def test_a_broken_gzip_member_costs_only_its_record(tmp_path: Path, how: str):
    """Corrupt deflate data, or garbage that decodes until the CRC-32 catches it: the record is a
    ``corrupt`` skip, the members after it are read."""
    recs = records()
    path = write(tmp_path / "broken.warc.gz", members([warcinfo(), *recs[:2]]) + broken_member(recs[2], how)
                 + members(recs[3:]))

    docs, stats = ingest(path)

    assert_all_pages(docs, URLS[:2] + URLS[3:])
    assert dict(stats.removed) == {"corrupt": 1}
    assert stats.extra["skip_examples"]["corrupt"] == [URLS[2]]
    assert stats.extra["messages"] == [f"broken.warc.gz: gzip member corrupt at {URLS[2]}"]
    assert set(warcio_html(path)) < set(docs)  # warcio loses what follows the broken member
    assert_recovers_warcio(path, docs, PAGES)

    docs, stats = ingest(path, keep_clipped=True)  # what inflated before the damage, if usable
    assert set(docs) == set(URLS)
    assert docs[URLS[2]]["html"][:200] == PAGES[URLS[2]].decode()[:200]


def test_a_bad_crc_keeps_the_member_data(tmp_path: Path):
    recs = records()
    path = write(tmp_path / "crc.warc.gz", members(recs[:2]) + bad_crc(gzip_bytes(recs[2])) + members(recs[3:]))

    docs, stats = ingest(path)

    assert_all_pages(docs)
    assert not stats.removed
    assert stats.extra["framing"] == {"gzip_bad_trailer": 1}
    assert set(warcio_html(path)) < set(docs)
    assert_recovers_warcio(path, docs, PAGES)


def test_gzip_members_mixed_with_uncompressed_records(tmp_path: Path):
    recs = records()
    path = write(tmp_path / "mixed.warc.gz", members(recs[:2]) + recs[2] + members(recs[3:4]) + recs[4])

    docs, stats = ingest(path)

    assert_all_pages(docs)
    assert not stats.removed
    assert stats.extra["framing"] == {"uncompressed_records": 2}
    assert_recovers_warcio(path, docs, PAGES)


def test_garbage_between_uncompressed_records(tmp_path: Path):
    recs = records()
    path = write(tmp_path / "garbage.warc", *recs[:2], b"\x00garbage here\r\n" * 40, *recs[2:])

    docs, stats = ingest(path)

    assert_all_pages(docs)
    assert dict(stats.removed) == {"corrupt": 1}
    assert stats.extra["framing"] == {"not_a_record": 1}
    assert_recovers_warcio(path, docs, PAGES)


@pytest.mark.parametrize("compressed", [False, True])
def test_arc_files(tmp_path: Path, compressed: bool):
    """Pre-2013 crawls: ARC v1, one gzip member per record in .arc.gz; the response's HTTP
    semantics apply as in WARC, and a wrong length is re-framed."""
    body = PAGES[URLS[1]]
    arc = [
        arc_record(URLS[0], http(PAGES[URLS[0]])),
        arc_record(URLS[1], http(chunked(gzip_bytes(body), [50]),
                                 [("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")])),
        arc_record(URLS[2], http(PAGES[URLS[2]]), length=len(http(PAGES[URLS[2]])) - 25),
        arc_record("dns:r.example", b"r.example. 300 IN A 192.0.2.1\n", "text/dns"),
        arc_record(URLS[3], http(PAGES[URLS[3]])),
    ]
    name = "crawl-1.arc.gz" if compressed else "crawl-1.arc"
    path = write(tmp_path / name, arc_file(arc, compressed))

    docs, stats = ingest(path)

    assert_all_pages(docs, URLS[:4])
    assert stats.extra["record_types"] == {"filedesc": 1, "response": 5}
    assert stats.extra["http"] == {"chunked": 1, "gzip": 1}
    assert stats.extra["framing"] == {"content_length": 1}
    assert dict(stats.removed) == {"not_http": 1}  # the dns: record
    assert {d["date"] for d in docs.values()} == {"2008-04-30T20:48:25Z"}
    ids = [d["id"] for d in docs.values()]
    assert len(set(ids)) == 4 and ids == [d["id"] for d in ingest(path)[0].values()]  # unique and stable
    assert_recovers_warcio(path, docs, PAGES)

    out, stats_path = tmp_path / "docs.parquet", tmp_path / "stats.json"
    assert main(["ingest", "--params", "{}", "--input", str(path), "--output", str(out),
                 "--stats", str(stats_path)]) == 0
    assert pq.read_table(out).column("url").to_pylist() == URLS[:4]
    assert json.loads(stats_path.read_text())["shard"] == "crawl-1"


def test_real_pages_stored_the_way_crawlers_store_them(tmp_path: Path):
    """Real HTML (the offline bench corpus) plain, chunked, gzip, chunked+gzip, deflate, br and
    with lying headers: every page comes out as it does stored plainly."""
    corpus = bench_corpus()
    if corpus is None:
        pytest.skip("no bench corpus: build it with /work/shared/tools/build_bench_corpus.sh /tmp/bench-corpus "
                    "(or set LLMPIPE_BENCH_CORPUS)")
    pages = real_pages(corpus, 6 * len(crawler_styles()))
    crawl, style_of = real_crawl(pages)
    path = write(tmp_path / "real.warc.gz", crawl)
    plain_path = write(tmp_path / "real-plain.warc.gz", members(response(u, body) for u, body in pages))

    docs, stats = ingest(path)
    plain, _ = ingest(plain_path)

    assert set(docs) == set(plain) == {u for u, _ in pages}
    for u, doc in docs.items():
        assert (doc["html"], doc["charset"]) == (plain[u]["html"], plain[u]["charset"]), (u, style_of[u])
    assert not stats.removed
    n = len(pages) // len(crawler_styles())
    assert stats.extra["http"] == {"chunked": 2 * n, "gzip": 2 * n, "deflate": n, "br": n,
                                   "encoding_mismatch": n, "chunked_fallback": n}
    assert set(warcio_html(path)) <= set(docs)
