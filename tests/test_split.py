"""Split: deterministic by (salt, id), fractions within tolerance, stable when the corpus
changes, all three outputs written (empty ones with the schema) through ``llmpipe split``."""
from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llmpipe.cli import main
from llmpipe.config import ConfigError
from llmpipe.data.documents import TEXT
from llmpipe.data.split import SPLITS, assign, check_fractions, unit_hash
from llmpipe.io import write_documents

IDS = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(10_000)]


def doc(doc_id: str | None) -> dict:
    return {"id": doc_id, "url": f"https://example.com/{doc_id}", "title": "t",
            "text": f"text of {doc_id}", "date": "2024-01-01", "warc_file": "w.warc.gz"}


def run_split(tmp_path: Path, docs: list[dict], **section) -> tuple[dict[str, list[str]], dict]:
    shard = tmp_path / "docs" / "shard-000.parquet"
    write_documents(shard, docs, TEXT)
    out = {name: tmp_path / name / "shard-000.parquet" for name in SPLITS}
    stats_path = tmp_path / "stats.json"
    args = ["split", "--params", json.dumps(section), "--input", str(shard),
            "--stats", str(stats_path)]
    for name, path in out.items():
        args += [f"--{name}", str(path)]
    assert main(args) == 0
    tables = {name: pq.read_table(path) for name, path in out.items()}
    assert all(table.schema == TEXT for table in tables.values())
    return {name: t.column("id").to_pylist() for name, t in tables.items()}, json.loads(
        stats_path.read_text()
    )


def test_hash_is_stable_uniform_and_salted():
    assert unit_hash("doc-1", "llmpipe") == unit_hash("doc-1", "llmpipe")
    assert unit_hash("doc-1", "llmpipe") != unit_hash("doc-1", "other")
    assert unit_hash("ab", "c") != unit_hash("a", "bc")
    values = [unit_hash(i, "llmpipe") for i in IDS]
    assert all(0 <= v < 1 for v in values)
    deciles = Counter(int(v * 10) for v in values)
    assert all(abs(deciles[d] - 1000) < 150 for d in range(10))


def test_fractions_within_tolerance_on_10k_ids():
    counts = Counter(assign(i, 0.1, 0.2, "llmpipe") for i in IDS)
    # binomial sd at n=10k: ~30 (p=0.1) and ~40 (p=0.2); allow 4 sd
    assert abs(counts["val"] - 1000) < 120
    assert abs(counts["test"] - 2000) < 160
    assert counts["train"] == len(IDS) - counts["val"] - counts["test"]


def test_growing_one_fraction_only_moves_documents_out_of_train():
    before = {i: assign(i, 0.05, 0.05, "s") for i in IDS}
    after = {i: assign(i, 0.05, 0.10, "s") for i in IDS}
    moved = {(before[i], after[i]) for i in IDS if before[i] != after[i]}
    assert moved == {("train", "test")}


def test_stage_is_deterministic_and_stable_when_documents_come_and_go(tmp_path: Path):
    docs = [doc(i) for i in IDS[:2000]]
    first, stats = run_split(tmp_path / "a", docs)
    again, _ = run_split(tmp_path / "b", docs)
    assert first == again
    assert stats["docs_in"] == stats["docs_out"] == 2000
    assert stats["extra"]["docs_per_split"] == {n: len(first[n]) for n in SPLITS}
    assert min(len(first["val"]), len(first["test"])) > 50  # defaults: 5% each

    # drop every third document and add new ones: the survivors keep their split
    changed = [d for k, d in enumerate(docs) if k % 3] + [doc(i) for i in IDS[5000:6000]]
    later, _ = run_split(tmp_path / "c", changed)
    where = {i: name for name, ids in first.items() for i in ids}
    for name, ids in later.items():
        assert all(where[i] == name for i in ids if i in where)
    assert sum(len(ids) for ids in later.values()) == len(changed)


def test_empty_and_id_less_shards_still_write_all_outputs(tmp_path: Path):
    parts, stats = run_split(tmp_path / "empty", [])
    assert parts == {name: [] for name in SPLITS}
    assert stats["docs_in"] == 0 and stats["extra"]["empty_output"] is True

    parts, stats = run_split(tmp_path / "noid", [doc(None), doc(IDS[0])], val_fraction=0.0,
                             test_fraction=0.0)
    assert parts == {"train": [IDS[0]], "val": [], "test": []}
    assert stats["removed"] == {"missing_id": 1}


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.9, 0.3), (1.0, 0.0)])
def test_fractions_summing_to_one_or_more_are_a_clear_error(tmp_path: Path, val, test):
    with pytest.raises(ConfigError, match="val_fraction.*test_fraction.*below 1"):
        check_fractions({"val_fraction": val, "test_fraction": test})
    # the stage refuses before touching its input (which does not even exist)
    with pytest.raises(ConfigError, match="split.val_fraction"):
        main(["split", "--params", json.dumps({"val_fraction": val, "test_fraction": test}),
              "--input", str(tmp_path / "absent.parquet"), "--train", "t", "--val", "v",
              "--test", "x", "--stats", "s"])


def test_out_of_range_fraction_is_a_schema_error_naming_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="test_fraction"):
        main(["split", "--params", json.dumps({"test_fraction": -0.1}),
              "--input", str(tmp_path / "absent.parquet"), "--train", "t", "--val", "v",
              "--test", "x", "--stats", "s"])
