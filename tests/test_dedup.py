"""Tests of the dedup stages: signatures equal datasketch's, and the four CLI steps end to end."""
from __future__ import annotations

import json
import os
import random

import datasketch
import numpy as np
import pyarrow.parquet as pq
import pytest
import xxhash
from datasketch.hashfunc import sha1_hash32

from llmpipe import _minhash
from llmpipe.cli import main
from llmpipe.data.dedup import signatures
from llmpipe.data.dedup.common import Params
from llmpipe.data.documents import TEXT
from llmpipe.io import read_documents, read_json, write_documents

CONFIG = {
    "bands": 14, "rows": 8, "threshold": 0.7, "ngram": 5, "seed": 1, "hash": "xxh32", "exact": True, "near": True
}
PARAMS = Params.from_config(CONFIG)
TRICKY = [
    "Hello, World! This is a test of the emergency broadcast system; don't panic.",
    "Ünïcödé  ﬁne, CAFÉ—dash; 日本語 テキスト 123 ½ don't\u00a0nbsp\u200bzw \t tab 🙂 İstanbul ǅ x₂ 𝔘𝔫𝔦",
    "Àé latin-1 only, ÿ and ß",
    "two words",  # shorter than one shingle: the whole text is the shingle
    "",
    "!!! --- ...",  # no words at all
]


def prose(rng: random.Random, vocab: list[str], sentences: int) -> list[str]:
    """Sentences of 8-14 words drawn from ``vocab``."""
    return [
        " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 14))).capitalize() + "."
        for _ in range(sentences)
    ]


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    """A ~300-word article, its exact copy (other case and punctuation), a near copy (one edited
    sentence, paragraphs reordered), an unrelated article and a short text."""
    rng = random.Random(7)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    paragraphs = [prose(rng, vocab, 9) for _ in range(3)]
    article = "\n\n".join(" ".join(p) for p in paragraphs)
    edited = [list(p) for p in paragraphs]
    edited[1][4] = "This one sentence was rewritten by a careful editor today."
    near = "\n\n".join(" ".join(p) for p in (edited[2], edited[0], edited[1]))
    return {
        "article": article,
        "exact": article.upper().replace(".", " !"),
        "near": near,
        "unrelated": "\n\n".join(" ".join(prose(rng, vocab, 9)) for _ in range(3)),
        "short": "Tiny page.",
    }


@pytest.mark.parametrize("length", range(0, 70))
def test_core_hashes_equal_xxhash(length):
    data = bytes(random.Random(length).randrange(256) for _ in range(length))
    assert _minhash.xxh32(data) == xxhash.xxh32_intdigest(data)
    assert _minhash.xxh64(data) == xxhash.xxh64_intdigest(data)


@pytest.mark.parametrize("hashname,hashfunc", [("xxh32", xxhash.xxh32_intdigest), ("sha1", sha1_hash32)])
def test_signatures_equal_datasketch(corpus, hashname, hashfunc):
    params = Params.from_config({**CONFIG, "hash": hashname})
    texts = TRICKY + list(corpus.values())
    sigs = signatures.signatures(texts, params)
    for text, values, count, exact in zip(texts, sigs.values, sigs.shingles, sigs.exact):
        reference = datasketch.MinHash(num_perm=112, seed=1, hashfunc=hashfunc)
        shingles = signatures.shingles(text, 5)
        for shingle in shingles:  # one update() per shingle: datasketch's reference path
            reference.update(shingle)
        np.testing.assert_array_equal(values, reference.hashvalues, err_msg=text)
        assert count == len(shingles)
        assert exact == xxhash.xxh64_intdigest(signatures.normalize(text).encode())
    assert sigs.shingles.tolist()[3:6] == [1, 0, 0]


def test_signatures_index_in_datasketch_lsh(corpus):
    sigs = signatures.signatures(list(corpus.values()), PARAMS)
    lsh = datasketch.MinHashLSH(threshold=0.7, num_perm=112, params=(14, 8))
    for key, values in zip(corpus, sigs.values):
        lsh.insert(key, signatures.to_datasketch(values, PARAMS))
    found = set(lsh.query(signatures.to_datasketch(sigs.values[0], PARAMS)))
    assert {"article", "exact", "near"} <= found and "unrelated" not in found


def llmpipe(*args: str) -> None:
    assert main([args[0], "--params", json.dumps(CONFIG), *args[1:]]) == 0


def run_all(tmp_path, shards: dict[str, list[dict]], order=None) -> dict:
    """The four commands as the rules call them; returns the output paths."""
    names = order or sorted(shards)
    sig_paths = []
    for name in names:
        write_documents(tmp_path / f"quality/{name}.parquet", shards[name], TEXT)
        sig_paths.append(str(tmp_path / f"signatures/{name}.npz"))
        llmpipe("dedup-signatures", "--input", str(tmp_path / f"quality/{name}.parquet"), "--output", sig_paths[-1])
    pair_paths = [str(tmp_path / f"buckets/{band}.parquet") for band in range(14)]
    for band, path in enumerate(pair_paths):
        llmpipe("dedup-buckets", "--band", str(band), "--input", *sig_paths, "--output", path)
    clusters = tmp_path / "clusters.parquet"
    llmpipe(
        "dedup-clusters", "--signatures", *sig_paths, "--pairs", *pair_paths,
        "--output", str(clusters), "--stats", str(tmp_path / "clusters.stats.json"),
    )
    for name in names:
        llmpipe(
            "dedup-filter", "--input", str(tmp_path / f"quality/{name}.parquet"), "--clusters", str(clusters),
            "--output", str(tmp_path / f"docs/{name}.parquet"), "--rejects", str(tmp_path / f"rejects/{name}.parquet"),
            "--stats", str(tmp_path / f"stats/{name}.json"),
        )
    return {"clusters": clusters, "stats": tmp_path / "clusters.stats.json"}


def doc(doc_id: str, text: str | None) -> dict:
    return {"id": doc_id, "url": f"http://example.com/{doc_id}", "title": doc_id, "text": text}


def test_pipeline_finds_exact_and_near_copies(tmp_path, corpus):
    shards = {
        "shard-a": [doc("a0", corpus["article"]), doc("a1", corpus["short"]), doc("a2", "")],
        "shard-b": [
            doc("b0", corpus["near"]), doc("b1", corpus["unrelated"]), doc("b2", corpus["exact"]),
            doc("b3", corpus["short"].lower()), doc("b4", None), doc("b5", "- -"),
        ],
    }
    out = run_all(tmp_path, shards)
    kept = {name: [d["id"] for d in read_documents(tmp_path / f"docs/{name}.parquet")] for name in shards}
    assert kept == {"shard-a": ["a0", "a1", "a2"], "shard-b": ["b1", "b4", "b5"]}
    rejects = {d["id"]: d["reason"] for d in read_documents(tmp_path / "rejects/shard-b.parquet")}
    assert rejects == {"b0": "near_duplicate", "b2": "exact_duplicate", "b3": "exact_duplicate"}
    stats = read_json(out["stats"])
    assert stats["removed"] == {"exact_duplicate": 2, "near_duplicate": 1}
    assert (stats["docs_in"], stats["docs_out"]) == (9, 6)
    assert stats["extra"]["clusters"] == 2 and stats["extra"]["cluster_sizes"] == {"2": 1, "3": 1}
    assert stats["extra"]["docs_without_words"] == 3
    shard_stats = read_json(tmp_path / "stats/shard-b.json")
    assert shard_stats["removed"] == {"exact_duplicate": 2, "near_duplicate": 1} and shard_stats["docs_out"] == 3


def test_survivor_is_first_in_shard_order_whatever_the_argument_order(tmp_path, corpus):
    shards = {
        "s1": [doc("x", corpus["unrelated"]), doc("first", corpus["near"])],
        "s0": [doc("second", corpus["article"])],
        "s2": [doc("third", corpus["exact"])],
    }
    forward = pq.read_table(run_all(tmp_path / "f", shards)["clusters"])
    backward = pq.read_table(run_all(tmp_path / "b", shards, order=["s2", "s1", "s0"])["clusters"])
    assert forward.equals(backward)
    rows = forward.to_pylist()
    assert [(r["shard"], r["row"], r["id"], r["keep"]) for r in rows if r["keep"]] == [("s0", 0, "second", True)]
    assert {r["id"]: r["reason"] for r in rows if not r["keep"]} == {
        "first": "near_duplicate", "third": "exact_duplicate"
    }


def test_empty_shard_flows_through_every_command(tmp_path, corpus):
    out = run_all(tmp_path, {"empty": [], "one": [doc("only", corpus["article"])]})
    assert read_documents(tmp_path / "docs/empty.parquet") == []
    assert pq.read_schema(tmp_path / "docs/empty.parquet").names == TEXT.names
    assert read_json(tmp_path / "stats/empty.json")["extra"]["empty_output"] is True
    assert pq.read_table(out["clusters"]).num_rows == 0
    assert [d["id"] for d in read_documents(tmp_path / "docs/one.parquet")] == ["only"]


def test_mismatched_settings_and_stale_clusters_are_clear_errors(tmp_path, corpus, capsys):
    shards = {"s0": [doc("a", corpus["article"]), doc("b", corpus["exact"])]}
    out = run_all(tmp_path, shards)
    other = json.dumps({**CONFIG, "seed": 2})
    args = ["--band", "0", "--input", str(tmp_path / "signatures/s0.npz"), "--output", str(tmp_path / "p.parquet")]
    assert main(["dedup-buckets", "--params", other, *args]) == 1
    assert "s0.npz: written with" in capsys.readouterr().err
    write_documents(tmp_path / "quality/s0.parquet", [doc("a", "x"), doc("changed", "y")], TEXT)
    args = [
        "--input", str(tmp_path / "quality/s0.parquet"), "--clusters", str(out["clusters"]),
        "--output", str(tmp_path / "o.parquet"), "--rejects", str(tmp_path / "r.parquet"),
        "--stats", str(tmp_path / "s.json"),
    ]
    assert main(["dedup-filter", "--params", json.dumps(CONFIG), *args]) == 1
    assert "row 1 has id 'changed', clusters say 'b' (stale?)" in capsys.readouterr().err
    assert not any(os.path.exists(tmp_path / name) for name in ("p.parquet", "o.parquet", "s.json"))
