"""The HTML report on a small hand-made results tree: sections, escaping, inline plots, no network."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmpipe.cli import main
from llmpipe.report import sections as sec
from llmpipe.tokenizer.bpe import Tokenizer

PLANTED = "<script>alert(1)</script>"
SECTION_IDS = ["summary", "funnel", "dedup", "decontamination", "tokenizer", "packing", "pretrain",
               "evaluation", "generations", "sft", "dpo", "rl"]


def stats(stage: str, shard: str | None, docs_in: int, docs_out: int, removed: dict | None = None,
          extra: dict | None = None) -> dict:
    return {"stage": stage, "shard": shard, "docs_in": docs_in, "docs_out": docs_out,
            "bytes_in": docs_in * 100, "bytes_out": docs_out * 100, "removed": removed or {},
            "removed_bytes": {k: v * 100 for k, v in (removed or {}).items()},
            "extra": extra or {}, "wall_seconds": 0.5}


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(obj), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in obj))
    elif path.suffix == ".tsv":
        path.write_text("s\th:m:s\tmax_rss\n" + "".join(f"{s}\t0:00:01\t{rss}\n" for s, rss in obj))
    else:
        path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results tree shaped like a real run's: data stages, tokenizer, pretrain, DPO, two evals.

    SFT and RL are left out on purpose: their sections must say "not run". Web text and model
    output carry a planted script tag that must come out escaped.
    """
    root = tmp_path_factory.mktemp("results")
    shard = "toyweb-000"
    write(root / "toyweb/stats.json", stats("toyweb", None, 10, 10))
    doc = {"id": "d1", "url": "https://a.example/x?q=<b>", "title": "t",
           "text": f"A page that says {PLANTED} and more."}
    write(root / "toyweb/truth.parquet", [{"id": "d1", "url": doc["url"], "kind": "article",
                                           "special": "escaped_script"}])
    write(root / f"ingest/stats/{shard}.json", stats("ingest", shard, 10, 10))
    for stage, reason in [("url_filter", "blocklist:spam"), ("extract", "extract_empty"),
                          ("quality", "gopher_quality"), ("dedup", "near_duplicate")]:
        write(root / f"{stage}/stats/{shard}.json", stats(stage, shard, 10, 9, {reason: 1}))
        write(root / f"{stage}/rejects/{shard}.parquet",
              [{"id": f"r-{stage}", "url": "https://spam.example/", "text": f"bad {PLANTED}", "reason": reason}])
        write(root / f"{stage}/docs/{shard}.parquet", [doc])
    write(root / f"split/stats/{shard}.json",
          stats("split", shard, 9, 9, extra={"docs_per_split": {"train": 7, "val": 1, "test": 1}}))
    write(root / f"split/train/{shard}.parquet", [doc])
    write(root / "dedup/clusters.parquet",
          [{"shard": shard, "row": 0, "id": "d1", "cluster": 0, "keep": True, "reason": None},
           {"shard": shard, "row": 0, "id": "r-dedup", "cluster": 0, "keep": False, "reason": "near_duplicate"}])
    write(root / "dedup/clusters.stats.json", stats("dedup-clusters", None, 10, 9, {"near_duplicate": 1},
                                                   {"clusters": 1, "cluster_sizes": {"2": 1}}))
    tokenizer = Tokenizer.train(["The capital of France is Paris. " * 20, "Twelve plus thirty is 42. " * 20],
                                vocab_size=300)
    tokenizer.save(root / "tokenizer/tokenizer.json")
    write(root / "tokenizer/stats.json", stats("tokenizer", None, 7, 7, extra={"vocab_size": 300}))
    for split in sec.SPLITS:
        write(root / f"tokens/{split}/{shard}.json",
              {"count": 50, "n_docs": 2, "stats": {"bytes_in": 200, "extra": {"tokens": 50}}})
        write(root / f"pack/{split}/header.json",
              {"method": "best_fit", "context_length": 16, "n_seq": 4,
               "stats": {"extra": {"tokens": 64, "padding_fraction": 0.1, "docs_cut_fraction": 0.25}}})
    write(root / "pretrain/metrics.jsonl",
          [{"step": s, "loss": 5.0 / s, "lr": 1e-3, "grad_norm": 1.0, "tokens": 64 * s, "tokens_per_s": 900.0,
            **({"val_loss": 4.0 / s} if s % 2 == 0 else {})} for s in range(1, 7)])
    write(root / "pretrain/stats.json", stats("pretrain", None, 0, 0, extra={"params": 1000, "device": "cpu"}))
    write(root / "dpo/metrics.jsonl",
          [{"step": s, "loss": 0.7 - 0.05 * s, "rewards_chosen": 0.1 * s, "rewards_rejected": -0.1 * s,
            "reward_accuracy": 0.5 + 0.05 * s, "reward_margin": 0.2 * s} for s in range(1, 6)])
    write(root / "dpo/stats.json", stats("dpo", None, 0, 0))
    write(root / "decontaminate/contamination.json", {"ngram": 13, "action": "drop", "sets": {
        "rl_test": {"items": 4, "contaminated": 1, "remaining": 0, "report_only": False, "found": [
            {"item": 2, "prompt": f"Tom has {PLANTED} apples", "answer": "3", "hits": 2,
             "where": [{"file": "toyweb-000.parquet", "id": "d9"}, {"file": "sft_train.jsonl", "line": 7}]}]},
        "chat": {"items": 5, "contaminated": 0, "remaining": 0, "report_only": False, "found": []}},
        "training_files": {"toyweb-000.parquet": {"documents": 7, "contaminated": 1, "dropped": 1}}})
    write(root / "decontaminate/stats.json", stats("decontaminate", None, 7, 6, {"contaminated": 1},
                                                  {"posttrain_rows_dropped": 1}))
    for model in ("pretrain", "dpo"):
        write(root / f"evaluate/{model}.json", {
            "val": {"loss": 1.5, "bits_per_byte": 0.4}, "test": {"loss": 1.6, "bits_per_byte": 0.41},
            "memorisation": {"rate": 0.125, "longest_span": 57, "reference_rate": 0.0625},
            "facts_heldout_phrasing": {"choice_accuracy": 0.3},
            "arithmetic_held_out": {"accuracy": 0.1}, "arithmetic_in_distribution": {"accuracy": 0.6},
            "samples": [{"prompt": "The capital of France is", "completion": f" Paris {PLANTED}"}],
            "chat": {"facts_held_out": {"accuracy": 0.5, "examples": [
                {"prompt": "Capital of France?", "answer": "Paris", "reply": f"Paris {PLANTED}", "correct": True}]},
                "facts_in_distribution": {"accuracy": 0.875, "examples": []},
                "arithmetic_held_out": {"accuracy": 0.25, "examples": []},
                "arithmetic_in_distribution": {"accuracy": 0.75, "examples": []}},
        })
    write(root / "benchmarks/pretrain/pretrain.tsv", [(12.5, 300.0)])
    write(root / "benchmarks/ingest/toyweb-000.tsv", [(1.5, 100.0)])
    return root


@pytest.fixture(scope="module")
def page(results, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("page") / "report.html"
    code = main(["report", "--params", "{}", "--results", str(results), "--output", str(out),
                 "--run-config", json.dumps({"toyweb": {"seed": 7}, "note": PLANTED})])
    assert code == 0
    return out.read_text()


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(page: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(page)
    return parser.tags


def test_every_section_is_present(page):
    ids = {attrs.get("id") for tag, attrs in tags(page) if tag == "section"}
    assert set(SECTION_IDS) <= ids


def test_data_is_escaped_and_no_script_runs(page):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert PLANTED not in page
    assert not [t for t, _ in tags(page) if t in ("script", "iframe", "object", "embed")]
    # no inline event handlers either: nothing from data became an attribute
    assert not [a for _, attrs in tags(page) for a in attrs if a.startswith("on")]


def test_page_is_self_contained(page):
    for tag, attrs in tags(page):
        for attr in ("src", "href", "action", "xlink:href"):
            value = attrs.get(attr) or ""
            assert not re.match(r"\s*(https?:)?//", value), (tag, attr, value)
    assert "@import" not in page
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)  # only in-page references (SVG clip paths)


def test_plots_are_inline_svg(page):
    figures = page.count('<figure class="plot"')
    # timing, funnel, 4 pretrain curves (no MFU logged), evaluation, 4 DPO curves
    assert figures >= 10
    assert page.count("<svg") == figures
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page


def test_missing_stages_say_not_run(page):
    sft = page[page.index('<section id="sft">'):page.index('<section id="dpo">')]
    assert "not run" in sft
    table = page[page.index('id="eval-table"'):page.index("</table>", page.index('id="eval-table"'))]
    assert table.count("not run") == 2 * len(sec.EVAL_ROWS)  # sft and rl columns


def test_contamination_table_per_evaluation_set(page):
    part = page[page.index('<section id="decontamination">'):page.index('<section id="tokenizer">')]
    table = part[part.index('id="contamination-table"'):]
    rows = re.findall(r"<tr><td>(\w+)</td><td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td>", table)
    assert rows == [("chat", "5", "0"), ("rl_test", "4", "1")]
    assert "toyweb-000.parquet:d9, sft_train.jsonl:7" in part  # where the item was found


def test_memorisation_sits_next_to_the_losses(page):
    table = page[page.index('id="eval-table"'):page.index("</table>", page.index('id="eval-table"'))]
    labels = re.findall(r"<tr><td>([^<]+)</td>", table)
    assert labels.index("memorisation: longest copied train span (tokens)") == labels.index("test bits per byte") + 2
    assert ">57<" in table and ">0.125<" in table


def test_held_out_and_in_distribution_side_by_side(page, results):
    """Each model gets an in-distribution and a held-out column, in that order."""
    table = page[page.index('id="split-table"'):page.index("</table>", page.index('id="split-table"'))]
    rows = {r["metric"]: r["cells"] for r in sec.split_table(
        {m: sec.read_json_file(results / f"evaluate/{m}.json") for m in ("pretrain", "dpo")})}
    models = list(sec.MODELS)
    cells = rows["chat: arithmetic word problems, greedy pass@1"]
    at = 2 * models.index("dpo")
    assert cells[at:at + 2] == [sec.fmt(0.75), sec.fmt(0.25)]
    assert rows["arithmetic, few-shot completion: pass@1"][at:at + 2] == [sec.fmt(0.6), sec.fmt(0.1)]
    assert cells.count("not run") == 4  # sft and rl, both sides
    assert table.count("in-distribution") == len(models) and table.count("held-out") >= len(models)


def test_funnel_counts_and_removals(results):
    stats = {stage: sec.read_stage_stats(results, stage) for stage in sec.FUNNEL_STAGES}
    funnel = sec.funnel_section(sec.read_json_file(results / "toyweb/stats.json"), stats)
    by_stage = {r["stage"]: r for r in funnel["rows"]}
    assert by_stage["quality"]["docs_out"] == 9 and by_stage["quality"]["removed"] == 1
    assert {(r["stage"], r["reason"]) for r in funnel["removals"]} >= {("dedup", "near_duplicate")}
    assert funnel["splits"] == {"train": 7, "val": 1, "test": 1}


def test_planted_page_fate_and_text(results):
    rejects = {stage: sec.read_rejects(results, stage, 1, 100) for stage in sec.FILTER_STAGES}
    truth = sec.read_rows(results / "toyweb/truth.parquet", ["id", "url", "kind", "special"])
    rows = sec.planted_section(truth, rejects, {"d1": {"split": "train", "text": PLANTED}})
    assert rows == [{"special": "escaped_script", "kind": "article", "url": truth[0]["url"],
                     "fate": "kept (train)", "text": PLANTED}]
    gone = sec.planted_section([{"id": "r-quality"}], rejects, {})
    assert gone[0]["fate"] == "removed by quality: gopher_quality"


def test_training_curves_skip_absent_metrics():
    rows = [{"step": 1, "loss": 2.0, "tokens": 10}, {"step": 2, "loss": 1.0, "tokens": 20, "val_loss": 1.1}]
    section = sec.training_section("pretrain", rows, None)
    assert [p["title"] for p in section["plots"]] == ["Loss against tokens seen"]
    assert dict(section["last"])["val_loss"] == "1.1"
    assert sec.training_section("rl", [], None) == {"stage": "rl", "not_run": True}


def test_broken_metrics_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": \n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        sec.read_jsonl(path)


def test_reject_examples_are_capped_per_reason(tmp_path):
    docs = [{"id": str(i), "url": f"https://x.example/{i}", "text": "word " * 100, "reason": "language"}
            for i in range(5)]
    write(tmp_path / "quality/rejects/a.parquet", docs)
    rejects = sec.read_rejects(tmp_path, "quality", per_reason=2, chars=50)
    assert len(rejects) == 5  # every removal counts for the planted pages' fates
    examples = sec.examples_section({"quality": rejects}, {}, per_reason=2, chars=50)
    (quality,) = [e for e in examples if e["stage"] == "quality"]
    assert [len(g["docs"]) for g in quality["removed"]] == [2]
    assert all(len(d["text"]) <= 50 for d in quality["removed"][0]["docs"])
