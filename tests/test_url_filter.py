"""URL filter: every drop reason fires and is counted, on a real WARC run through ingest and
the ``llmpipe url-filter`` CLI; blocklists, word lists and awkward URLs checked directly."""
from __future__ import annotations

import collections
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from llmpipe.cli import main
from llmpipe.config import ConfigError, stage_params
from llmpipe.data.documents import RAW, with_reason
from llmpipe.data.url_filter import BLOCKLIST_DIR, check_url, load_rules, read_list
from tests.conftest import WORLD

# URL -> the reason it is dropped (None: kept), each reason at least once.
CASES = {
    "https://www.example.com/articles/paris-is-the-capital-of-france": None,
    "https://blog.example.org/2024/05/a-wedding-toast?page=2#comments": None,
    "http://example.com/a path with spaces/ünïcødé": None,
    "http://bücher.example/straße": None,
    "https://例え.テスト/ページ": None,
    "https://example.com/therapist-analysis-essex": None,  # innocent sub-strings
    "https://example.com/sexy-shoes": None,  # one soft word is not enough
    "http://hot-singles-tonight.example/": "blocklist:adult",
    "https://deep.sub.free-codec-download.example/get": "blocklist:malware",
    "http://WWW.Best-SEO-Links.Example./x": "blocklist:spam",
    "https://news.example.com/gallery/PORN-stars": "banned_word",
    "https://example.com/sexy%20nude%20pics": "soft_banned_words",
    "https://example.com/Big-Tits_Gallery": "banned_subword",
    "https://example.com/files/report.PDF?download=1": "extension",
    "https://example.com/setup.exe": "extension",
    "https://example.com/" + "a" * 2100: "url_too_long",
    "http://93.184.216.34/index.html": "ip_host",
    "http://[2001:db8::1]:8080/": "ip_host",
    "http://127.1/": "ip_host",
    "http://0x7f000001/": "ip_host",
    "http://[::1/broken": "invalid_url",
    "http://exa mple.com/": "invalid_url",
    "ftp://example.com/file": "invalid_url",
    "http://a..b.example/": "invalid_url",
}


def params(**overrides) -> dict:
    """The url_filter section as the stage gets it: validated, defaults filled in."""
    return stage_params(json.dumps(overrides), None, "url_filter")


@pytest.fixture(scope="module")
def default_rules():
    return load_rules(params())


@pytest.mark.parametrize("url, reason", CASES.items())
def test_each_url_gets_its_reason(default_rules, url, reason):
    assert check_url(url, default_rules) == reason


def test_missing_or_empty_url_is_invalid(default_rules):
    assert check_url(None, default_rules) == "invalid_url"
    assert check_url("   ", default_rules) == "invalid_url"


def test_subdomains_match_but_lookalikes_do_not(default_rules):
    assert check_url("https://a.b.c.spicy-dating.example/x", default_rules) == "blocklist:adult"
    assert check_url("https://spicy-dating.example.com/x", default_rules) is None
    assert check_url("https://notspicy-dating.example/x", default_rules) is None


def test_shipped_lists_keep_their_entries():
    domains = {entry for _, entry in read_list(BLOCKLIST_DIR / "adult.txt")}
    assert {"hot-singles-tonight.example", "pornhub.com"} <= domains


def test_user_list_files_block_domains_and_idn(tmp_path: Path):
    listed = tmp_path / "mine.txt"
    listed.write_text(
        "# my list\nblocked.example  # inline comment\n"
        "0.0.0.0 ads.tracker.example\nbücher.example\n"
    )
    rules = load_rules(params(blocklist_files=[str(listed)], blocklist_categories=[]))
    assert check_url("https://www.blocked.example/", rules) == "blocklist:user"
    assert check_url("https://x.ads.tracker.example/", rules) == "blocklist:user"
    assert check_url("https://tracker.example/", rules) is None
    # the same IDN host written in Unicode and in punycode
    assert check_url("http://bücher.example/", rules) == "blocklist:user"
    assert check_url("http://xn--bcher-kva.example/", rules) == "blocklist:user"
    # the shipped categories are off here
    assert check_url("http://hot-singles-tonight.example/", rules) is None


def test_bad_list_files_are_config_errors_naming_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no-such-list.txt"):
        load_rules(params(blocklist_files=[str(tmp_path / "no-such-list.txt")]))
    bad = tmp_path / "bad.txt"
    bad.write_text("fine.example\nnot a domain!\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2"):
        load_rules(params(blocklist_files=[str(bad)]))
    with pytest.raises(ConfigError, match="banned_words"):
        load_rules(params(banned_words=["two words"]))


def test_config_words_thresholds_and_switches():
    rules = load_rules(
        params(
            default_word_lists=False,
            banned_words=["Casino"],
            soft_banned_words=["cheap", "pills", "online"],
            soft_banned_threshold=3,
            banned_subwords=["free money"],
            blocked_extensions=[".TXT"],
            max_url_length=40,
            drop_ip_hosts=False,
        )
    )
    assert check_url("https://example.com/casino-night", rules) == "banned_word"
    assert check_url("https://example.com/porn", rules) is None  # shipped lists are off
    assert check_url("https://example.com/cheap-pills", rules) is None
    assert check_url("https://example.com/cheap-pills-online", rules) == "soft_banned_words"
    assert check_url("https://example.com/get-FreeMoney", rules) == "banned_subword"
    assert check_url("https://example.com/notes.txt", rules) == "extension"
    assert check_url("https://example.com/" + "x" * 30, rules) == "url_too_long"
    assert check_url("http://10.0.0.1/", rules) is None


# ---- the stage end to end: real WARC -> llmpipe ingest -> llmpipe url-filter ----


def warc(path: Path, urls: list[str]) -> None:
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, url in enumerate(urls):
            body = f"<html><head><title>{i}</title></head><body><p>page {i}</p></body></html>"
            http = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
            )
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(body.encode()), http_headers=http
            )
            writer.write_record(record)


def run_stage(tmp_path: Path, urls: list[str], **overrides) -> tuple[Path, Path, dict]:
    warc(tmp_path / "crawl.warc.gz", urls)
    raw = tmp_path / "ingest.parquet"
    assert main(["ingest", "--params", json.dumps({"max_record_bytes": 1_000_000}),
                 "--input", str(tmp_path / "crawl.warc.gz"), "--output", str(raw),
                 "--stats", str(tmp_path / "ingest.json")]) == 0
    kept, rejects, stats = (tmp_path / n for n in ("kept.parquet", "rejects.parquet", "s.json"))
    assert main(["url-filter", "--params", json.dumps(overrides), "--input", str(raw),
                 "--output", str(kept), "--rejects", str(rejects), "--stats", str(stats)]) == 0
    return kept, rejects, json.loads(stats.read_text())


def test_stage_counts_every_reason_and_writes_rejects(tmp_path: Path):
    # "http://[::1/broken" cannot be a WARC target URI (ingest would not read it back)
    urls = [u for u in CASES if u != "http://[::1/broken"]
    kept_path, rejects_path, stats = run_stage(tmp_path, urls)
    expected = [CASES[u] for u in urls]
    kept = pq.read_table(kept_path)
    rejects = pq.read_table(rejects_path)
    assert kept.schema == RAW
    assert rejects.schema == with_reason(RAW)
    assert stats["docs_in"] == len(urls)
    assert stats["docs_out"] == kept.num_rows == expected.count(None)
    wanted = {r: expected.count(r) for r in set(expected) - {None}}
    assert stats["removed"] == wanted
    assert set(stats["removed"]) >= {
        "blocklist:adult", "blocklist:malware", "blocklist:spam", "banned_word",
        "soft_banned_words", "banned_subword", "extension", "url_too_long", "ip_host",
        "invalid_url",
    }
    got = dict(zip(rejects.column("url").to_pylist(), rejects.column("reason").to_pylist()))
    assert {CASES[u] for u in got} == set(wanted)
    assert all(CASES[url] == reason for url, reason in got.items())


def test_all_rejected_shard_gives_an_empty_kept_file_with_the_schema(tmp_path: Path):
    kept_path, rejects_path, stats = run_stage(
        tmp_path, ["http://hot-singles-tonight.example/", "http://10.1.2.3/"]
    )
    kept = pq.read_table(kept_path)
    assert kept.num_rows == 0 and kept.schema == RAW
    assert pq.read_table(rejects_path).num_rows == 2
    assert stats["docs_out"] == 0 and stats["extra"]["empty_output"] is True
    assert stats["removed"] == {"blocklist:adult": 1, "ip_host": 1}


def test_bad_params_fail_before_reading_naming_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="max_url_length"):
        main(["url-filter", "--params", json.dumps({"max_url_length": "long"}),
              "--input", str(tmp_path / "absent.parquet"), "--output", str(tmp_path / "k"),
              "--rejects", str(tmp_path / "r"), "--stats", str(tmp_path / "s")])


def test_toy_web_urls_blocked_and_binary_dropped_articles_kept(tmp_path: Path, default_rules):
    truth = tmp_path / "truth.parquet"
    assert main(["toyweb", "--params", json.dumps({"seed": 7, "files": 1, "articles": 600}), "--world", WORLD,
                 "--warc", str(tmp_path / "toy.warc.gz"), "--truth", str(truth),
                 "--stats", str(tmp_path / "toyweb.json")]) == 0
    rows = pq.read_table(truth).to_pylist()
    verdicts = collections.Counter()
    for row in rows:
        reason = check_url(row["url"], default_rules)
        if row["kind"] == "blocked_domain":
            expected = f"blocklist:{row['blocked_category']}"
        elif row["kind"] == "binary" and row["special"] != "binary_type_only":
            expected = "extension"  # a binary with no extension is ingest's (Content-Type)
        else:
            expected = None
        assert reason == expected, row["url"]
        verdicts[row["kind"], reason] += 1
    assert verdicts["article", None] == 600
    assert {c for kind, c in verdicts if kind == "blocked_domain"} == {
        "blocklist:adult", "blocklist:malware", "blocklist:spam"
    }
