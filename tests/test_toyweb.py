"""Toy web: deterministic real WARC files, a truth table that matches them, planted defects
that are really there, facts the probes can find, and the scoring functions."""
from __future__ import annotations

import itertools
import json
import random
import re
import zlib
from pathlib import Path

import pandas as pd
import pytest
from fastwarc.warc import ArchiveIterator as FastIterator
from fastwarc.warc import WarcRecordType
from warcio.archiveiterator import ArchiveIterator

from llmpipe.cli import main as cli
from llmpipe.config import ConfigError, load_config
from llmpipe.data import scoring
from llmpipe.data.toyweb.articles import WRITERS
from llmpipe.data.toyweb.crawl import build_crawl
from llmpipe.data.toyweb.defects import BLOCKED_CATEGORIES, CHARSET_SPECIALS
from llmpipe.data.toyweb.pages import Page
from llmpipe.data.url_filter import check_url, load_rules
from llmpipe.tasks import world
from tests.conftest import HELD, WORLD

REPO = Path(__file__).resolve().parent.parent
SMALL = {"seed": 11, "files": 2, "articles": 60}
KINDS = {"article", "spam", "link_farm", "blocked_domain", "binary", "exact_copy", "near_copy",
         "boilerplate", "non_english", "truncated"}


def make_web(directory: Path, **params) -> tuple[list[Path], pd.DataFrame]:
    """Run the stage's CLI exactly as the rule does; return the WARC paths and the truth."""
    params = {**SMALL, **params}
    warcs = [directory / f"toyweb-{i:03d}.warc.gz" for i in range(params["files"])]
    cli(["toyweb", "--params", json.dumps(params), "--world", WORLD, "--warc", *map(str, warcs),
         "--truth", str(directory / "truth.parquet"), "--stats", str(directory / "stats.json")])
    return warcs, pd.read_parquet(directory / "truth.parquet")


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> tuple[list[Path], pd.DataFrame]:
    return make_web(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def default_pages() -> list[Page]:
    """The default-size crawl's pages (built in memory, as the stage builds them)."""
    params = load_config(REPO / "config.yaml")["toyweb"]
    return [p for pages in build_crawl(params["seed"], params["articles"], params["files"], HELD)
            for p in pages]


def members(path: Path) -> list[tuple[bytes, bool]]:
    """(decompressed bytes, complete?) of each gzip member of a file."""
    data, out = path.read_bytes(), []
    while data:
        z = zlib.decompressobj(31)
        out.append((z.decompress(data), z.eof))
        data = z.unused_data
    return out


def page_text(page: Page) -> str:
    return page.body.decode(page.charset_true) if page.charset_true else ""


# ---------------------------------------------------------------------------------------------
# The crawl and its truth


def test_same_seed_gives_identical_bytes(web, tmp_path):
    warcs, truth = web
    again, truth_again = make_web(tmp_path)
    for a, b in zip(warcs, again):
        assert a.read_bytes() == b.read_bytes()
    pd.testing.assert_frame_equal(truth.assign(warc_file=None), truth_again.assign(warc_file=None))
    other, _ = make_web(tmp_path / "other", seed=12)
    assert other[0].read_bytes() != warcs[0].read_bytes()
    assert all(m[:3] == b"\x1f\x8b\x08" and m[4:8] == b"\0\0\0\0"  # gzip mtime 0
               for m in [w.read_bytes() for w in warcs])


def test_every_kind_genre_and_planted_oddity_is_present(web):
    _, truth = web
    assert set(truth["kind"]) == KINDS
    assert set(truth.loc[truth["kind"] == "article", "genre"]) == set(WRITERS)
    assert set(truth["blocked_category"].dropna()) == set(BLOCKED_CATEGORIES)
    assert {"de", "fr", "es"} <= set(truth["language"].dropna())
    assert {*CHARSET_SPECIALS, "escaped_script", "special_token", "truncated",
            "binary_both", "binary_type_only", "binary_extension_only"} <= set(truth["special"].dropna())
    assert truth["id"].is_unique and truth["url"].is_unique
    stats = json.loads((Path(web[0][0]).parent / "stats.json").read_text())
    assert stats["extra"]["kinds"] == truth["kind"].value_counts().to_dict()


def test_records_parse_with_warcio_and_fastwarc_and_ids_match_truth(web):
    warcs, truth = web
    for path in warcs:
        rows = truth[truth["warc_file"] == path.name]
        complete = list(rows.loc[rows["kind"] != "truncated", "id"])
        with open(path, "rb") as fh:
            records = []
            try:
                for record in ArchiveIterator(fh):
                    if record.rec_type == "response":
                        body = record.content_stream().read()
                        length = int(record.http_headers.get_header("Content-Length"))
                        records.append((record.rec_headers.get_header("WARC-Record-ID"), length, len(body)))
                        assert record.rec_headers.protocol == "WARC/1.1"
            except Exception:  # warcio gives up on the cut-off member; everything before it counts
                assert "truncated" in set(rows["kind"])
        warcio_ids = [rid.removeprefix("<urn:uuid:").removesuffix(">") for rid, _, _ in records]
        assert warcio_ids[: len(complete)] == complete
        assert all(length == n for _, length, n in records[: len(complete)])
        with open(path, "rb") as fh:
            fast = [r.record_id for r in FastIterator(fh, record_types=WarcRecordType.response)]
        fast_ids = [rid.removeprefix("<urn:uuid:").removesuffix(">") for rid in fast]
        assert fast_ids[: len(complete)] == complete


def test_truncated_record_is_the_last_of_exactly_one_file(web):
    warcs, truth = web
    broken = []
    for path in warcs:
        parts = members(path)
        assert all(done for _, done in parts[:-1])
        if not parts[-1][1]:
            broken.append((path, parts[-1][0]))
    assert len(broken) == 1
    path, raw = broken[0]
    cut = truth[truth["kind"] == "truncated"]
    assert list(cut["warc_file"]) == [path.name]
    assert f"<urn:uuid:{cut['id'].iloc[0]}>".encode() in raw
    declared = int(re.search(rb"\r\nContent-Length: (\d+)\r\n\r\n<!DOCTYPE", raw).group(1))
    body = raw.split(b"\r\n\r\n", 2)[2]
    assert 0 < len(body) < declared


def test_truth_charsets_match_the_bytes(web):
    warcs, truth = web
    bodies = {}
    for path in warcs:
        with open(path, "rb") as fh:
            for record in FastIterator(fh, record_types=WarcRecordType.response):
                rid = record.record_id.removeprefix("<urn:uuid:").removesuffix(">")
                bodies[rid] = record.reader.read()
    rows = truth[truth["kind"] != "truncated"].set_index("id")
    for rid, charset in rows["charset_true"].dropna().items():
        bodies[rid].decode(charset)  # strict: the truth's charset is right
    trap = rows[rows["special"] == "cp1252_as_utf8"].iloc[0]
    assert trap["charset_declared"] == "utf-8" and trap["charset_true"] == "cp1252"
    with pytest.raises(UnicodeDecodeError):
        bodies[trap.name].decode("utf-8")
    split = rows[rows["special"] == "utf8_header_latin1"].iloc[0]
    assert split["charset_declared"] == "iso-8859-1"
    assert b'<meta charset="utf-8">' in bodies[split.name] and not bodies[split.name].isascii()
    for special, literal, escaped in (
        ("escaped_script", '<script>alert("x")</script>', b'&lt;script&gt;alert("x")&lt;/script&gt;'),
        ("special_token", "<|user|>", b"&lt;|user|&gt;"),
    ):
        row = rows[rows["special"] == special].iloc[0]
        assert literal in row["main_text"] and escaped in bodies[row.name]
        assert literal.encode() not in bodies[row.name]


def test_url_filter_and_ingest_see_exactly_the_planted_removals(web):
    warcs, truth = web
    from llmpipe.data.ingest import Skip, iter_warc

    rules = load_rules(load_config(REPO / "config.yaml")["url_filter"])
    rejected = {u for u in truth["url"] if check_url(u, rules) is not None}
    expected = truth[(truth["kind"] == "blocked_domain")
                     | ((truth["kind"] == "binary") & (truth["special"] != "binary_type_only"))]
    assert rejected == set(expected["url"])
    kept = {d["id"] for path in warcs for d in iter_warc(path, 5_000_000) if not isinstance(d, Skip)}
    assert set(truth["id"]) - kept == set(truth.loc[truth["kind"].isin(["binary", "truncated"]), "id"])


def test_articles_pass_and_spam_fails_gopher_style_rules(web):
    _, truth = web
    stop = {"the", "be", "to", "of", "and", "that", "have", "with"}
    for row in truth[truth["kind"].isin(["article", "near_copy"])].itertuples():
        words = row.main_text.split()
        assert len(words) >= 50, row.url
        assert sum(any(c.isalpha() for c in w) for w in words) / len(words) >= 0.85, row.url
        assert 3 <= sum(len(w) for w in words) / len(words) <= 10, row.url
        assert sum(w.lower() in stop for w in words) >= 2, row.url
        lines = row.main_text.split("\n")
        assert all(line.endswith((".", "!", "?")) for line in lines), row.url
        assert len(set(lines)) == len(lines), row.url  # no repeated paragraph (Gopher repetition)
    for text in truth.loc[truth["kind"] == "spam", "main_text"]:
        lines = text.split("\n")
        assert 1 - len(set(lines)) / len(lines) > 0.3  # Gopher's duplicate-line limit


def shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + 5]) for i in range(len(words) - 4)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_copies_are_near_and_distinct_articles_are_not(web):
    warcs, truth = web
    text_of = dict(zip(truth["url"], truth["main_text"]))
    for row in truth[truth["kind"] == "near_copy"].itertuples():
        assert 0.75 <= jaccard(row.main_text, text_of[row.duplicate_of]) < 1  # dedup: 0.7
    for row in truth[truth["kind"] == "exact_copy"].itertuples():
        assert row.main_text == text_of[row.duplicate_of] and row.url != row.duplicate_of
    articles = list(truth.loc[truth["kind"] == "article", "main_text"])
    assert max(jaccard(a, b) for a, b in itertools.combinations(articles, 2)) < 0.6


# ---------------------------------------------------------------------------------------------
# Facts and probes


def test_train_probes_are_written_and_heldout_prompts_never_are(default_pages):
    text = "\n".join(page_text(p) for p in default_pages)
    probes = world.fact_probes(heldout=False)
    missing = [p for p in probes if f"{p.prompt} {p.answer}." not in text]
    assert not missing, missing[:5]
    for kind, subject, answer in world.fact_items():
        statements = 0
        for template in world.TRAIN_TEMPLATES[kind]:
            prompt = template.format(subject) + " "
            for match in re.finditer(re.escape(prompt), text):  # every statement of a fact is right
                assert text.startswith(answer, match.end()), (prompt, text[match.end():match.end() + 30])
                statements += 1
        assert statements >= 5, (kind, subject)  # often enough for a tiny model to learn it
    heldout = world.fact_probes(heldout=True)
    assert len(heldout) == len(probes)
    assert {p.prompt for p in heldout}.isdisjoint(p.prompt for p in probes)
    lowered = text.lower()
    assert not [p.prompt for p in heldout if p.prompt.lower() in lowered]


def test_arithmetic_problems_have_correct_answers():
    for question, answer in world.arithmetic_problems(random.Random(3), 200, HELD):
        a, b = map(int, re.findall(r"\d+", question))
        expected = a + b if "more" in question else a - b if "away" in question else a * b
        assert answer == expected and question.endswith("?")


def test_files_must_match_the_number_of_warc_paths(tmp_path):
    with pytest.raises(ConfigError, match="toyweb.files"):
        cli(["toyweb", "--params", json.dumps(SMALL), "--world", WORLD, "--warc", str(tmp_path / "one.warc.gz"),
             "--truth", str(tmp_path / "t.parquet"), "--stats", str(tmp_path / "s.json")])


# ---------------------------------------------------------------------------------------------
# Scoring, on small hand-made frames


def truth_frame(rows: list[tuple]) -> pd.DataFrame:
    cols = ["id", "url", "kind", "genre", "special", "duplicate_of", "title", "main_text"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


def test_removal_scores():
    truth = truth_frame([
        ("a", "https://ok.example/a", "article", "qa", None, None, "A", "x"),
        ("b", "https://bad.example/b", "blocked_domain", None, None, None, None, ""),
        ("c", "https://cdn.example/c.png", "binary", None, None, None, None, ""),
        ("d", "https://cdn.example/d", "binary", None, None, None, None, ""),
        ("t", "https://ok.example/t", "truncated", "stories", "truncated", None, "T", "y"),
    ])
    # ingest skipped c (binary) and t (cut off); url_filter rejected b and, wrongly, a; d slipped through
    scores = scoring.removal_scores(truth, ingested_ids={"a", "b", "d"}, url_rejected_ids={"a", "b"})
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["missed"] == ["https://cdn.example/d"]
    assert scores["wrongly_removed"] == ["https://ok.example/a"]
    assert scores["truncated_removed"] is True


def test_extraction_scores():
    truth = truth_frame([
        ("a", "u1", "article", "qa", None, None, "Big title", "the cat sat\non the mat"),
        ("b", "u2", "article", "qa", None, None, "T", "one two three four"),
        ("c", "u3", "article", "qa", None, None, "T", "lost page"),
        ("s", "u4", "spam", None, None, None, "S", "buy now"),
    ])
    extracted = pd.DataFrame({"id": ["a", "b", "s"],
                              "text": ["Big title\nthe cat sat on the mat", "one two three cookies accept", "buy"]})
    table = scoring.extraction_table(truth, extracted).set_index("id")
    assert list(table.index) == ["a", "b", "c"]  # only clean articles are scored
    assert table.loc["a", "recall"] == 1 and table.loc["a", "chrome"] == 0  # the title is no chrome
    assert table.loc["b", "recall"] == pytest.approx(3 / 4) and table.loc["b", "chrome"] == pytest.approx(2 / 5)
    assert table.loc["c", "missing"] and table.loc["c", "recall"] == 0
    summary = scoring.extraction_scores(table.reset_index())
    assert summary["missing"] == 1 and summary["share_recall_ok"] == pytest.approx(1 / 3)
    assert summary["mean_chrome"] == pytest.approx(0.2)


def test_dedup_scores():
    truth = truth_frame([
        ("o1", "u1", "article", "qa", None, None, "", ""), ("c1", "v1", "exact_copy", "qa", None, "u1", "", ""),
        ("o2", "u2", "article", "qa", None, None, "", ""), ("c2", "v2", "near_copy", "qa", None, "u2", "", ""),
        ("o3", "u3", "article", "qa", None, None, "", ""), ("c3", "v3", "near_copy", "qa", None, "u3", "", ""),
        ("o4", "u4", "article", "qa", None, None, "", ""), ("c4", "v4", "near_copy", "qa", None, "u4", "", ""),
        ("x", "w", "article", "qa", None, None, "", ""),
    ])
    # c1 removed; o2 removed with c2 kept (found either way); c3 and o3 both kept (missed);
    # o4 never reached dedup (pair not scored); x removed wrongly
    scores = scoring.dedup_scores(truth, kept_ids={"o1", "c2", "o3", "c3", "c4"},
                                  removed_ids={"c1", "o2", "x"})
    assert scores["pairs"] == 3 and scores["found"] == 2
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["recall_by_kind"] == {"exact_copy": 1.0, "near_copy": 0.5}
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["missed"] == ["v3"] and scores["wrongly_removed"] == ["w"]


def test_read_stage(tmp_path):
    (tmp_path / "dedup" / "rejects").mkdir(parents=True)
    for shard, ids in (("s0", ["a"]), ("s1", ["b", "c"])):
        pd.DataFrame({"id": ids, "reason": "near_duplicate"}).to_parquet(
            tmp_path / "dedup" / "rejects" / f"{shard}.parquet"
        )
    assert list(scoring.read_stage(tmp_path, "dedup", "rejects", ["id"])["id"]) == ["a", "b", "c"]
    assert scoring.read_stage(tmp_path, "extract", "docs", ["id", "text"]).empty
