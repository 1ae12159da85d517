"""The tokenizer -> tokenize -> pack stages through the real CLI, on TEXT-schema Parquet shards.

The packed output is read back with the trainer's reader (llmpipe.train.data), the contract.
"""
from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest

from llmpipe.cli import main
from llmpipe.data.documents import TEXT
from llmpipe.io import read_json, write_documents
from llmpipe.tokenizer import Tokenizer
from llmpipe.tokenizer.pack import best_fit_rows, concat_rows, fill

CORPUS = "".join(topics[k] for k in sorted(topics))
TEXTS = [CORPUS[i : i + 3000] for i in range(0, 150 * 3000, 3000)]
TOKENIZER = {"vocab_size": 600, "pattern": "gpt4",
             "special_tokens": ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]}


def docs(texts: list[str | None], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "url": f"https://example.org/{i}", "title": "t", "text": t,
             "date": "2024-01-01", "warc_file": "x.warc.gz"} for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> Path:
    """Run `tokenizer` and `tokenize` (two train shards, one val shard) as the rules do."""
    root = tmp_path_factory.mktemp("results")
    shards = {"train/a": TEXTS[0:60], "train/b": TEXTS[60:120] + ["", None], "val/a": TEXTS[120:150]}
    for name, ts in shards.items():
        write_documents(root / f"split/{name}.parquet", docs(ts, name), TEXT)
    assert main(["tokenizer", "--params", json.dumps(TOKENIZER),
                 "--train", str(root / "split/train/a.parquet"), str(root / "split/train/b.parquet"),
                 "--val", str(root / "split/val/a.parquet"), "--output", str(root / "tokenizer/tokenizer.json"),
                 "--hf", str(root / "tokenizer/hf/tokenizer.json"),
                 "--stats", str(root / "tokenizer/stats.json")]) == 0
    for name in shards:
        assert main(["tokenize", "--tokenizer", str(root / "tokenizer/tokenizer.json"),
                     "--input", str(root / f"split/{name}.parquet"), "--output", str(root / f"tokens/{name}.bin"),
                     "--offsets", str(root / f"tokens/{name}.idx.npy"),
                     "--header", str(root / f"tokens/{name}.json")]) == 0
    return root


def run_pack(root: Path, split: str, method: str, context_length: int) -> Path:
    out = root / f"pack-{method}-{context_length}/{split}"
    headers = sorted(str(p) for p in (root / f"tokens/{split}").glob("*.json"))
    assert main(["pack", "--params", json.dumps({"context_length": context_length, "method": method}),
                 "--input", *headers, "--tokens", str(out / "tokens.bin"),
                 "--segments", str(out / "segments.bin"), "--header", str(out / "header.json")]) == 0
    return out


def test_tokenizer_stage_outputs(stages):
    stats = read_json(stages / "tokenizer/stats.json")
    assert stats["docs_in"] == 122 and stats["extra"]["vocab_size"] == 600
    assert 2.0 < stats["extra"]["val_bytes_per_token"] < 6.0
    assert (stages / "tokenizer/hf/tokenizer_config.json").exists()
    assert (stages / "tokenizer/hf/special_tokens_map.json").exists()


def test_tokenize_shard_documents_start_with_bos(stages):
    tok = Tokenizer.load(stages / "tokenizer/tokenizer.json")
    header = read_json(stages / "tokens/train/b.json")
    assert header["dtype"] == "uint16" and header["vocab_size"] == 600
    assert header["stats"]["removed"] == {"empty_text": 2} and header["n_docs"] == 60
    tokens = np.fromfile(stages / "tokens/train/b.bin", dtype="<u2")
    offsets = np.load(stages / "tokens/train/b.idx.npy")
    assert len(tokens) == header["count"] == offsets[-1]
    for d in (0, 7, 59):
        doc = tokens[offsets[d] : offsets[d + 1]].tolist()
        assert doc == [tok.bos_id] + tok.encode(TEXTS[60 + d])


@pytest.mark.parametrize("method", ["concat", "best_fit"])
def test_pack_is_read_by_the_trainer(stages, method):
    from llmpipe.train.data import PackedData

    out = run_pack(stages, "train", method, 63)
    header = read_json(out / "header.json")
    assert header["format"] == "llmpipe-packed/1" and header["seq_len"] == 64 and header["method"] == method
    data = PackedData(out)
    tokens = np.asarray(data.tokens).reshape(-1, 64)
    segments = np.asarray(data.segments).reshape(-1, 64)
    assert tokens.shape[0] == header["n_seq"]
    assert np.all(tokens[segments == 0] == header["pad_id"])
    stream = np.concatenate([np.fromfile(stages / f"tokens/train/{s}.bin", dtype="<u2") for s in "ab"])
    assert sorted(tokens[segments > 0].tolist()) == sorted(stream.tolist())  # every token once
    extra = header["stats"]["extra"]
    assert extra["tokens"] == len(stream)
    if method == "concat":
        assert np.array_equal(tokens[segments > 0], stream)  # stream order, padding only at the end
        assert np.all(segments[:-1] > 0)
    else:
        assert extra["padding_fraction"] < 0.2 and extra["docs_cut_fraction"] <= 1.0


def test_pack_empty_val_and_uint32_dtype(tmp_path):
    stream = np.arange(10, dtype="<u4")
    rows = concat_rows(np.array([0, 4, 10]), 6)
    assert rows == [[(0, 4), (4, 6)], [(6, 10)]]
    tokens, segments = fill(rows, stream, 6, pad_id=99)
    assert tokens.dtype == np.dtype("<u4") and tokens[1].tolist() == [6, 7, 8, 9, 99, 99]
    assert segments.tolist() == [[1, 1, 1, 1, 2, 2], [1, 1, 1, 1, 0, 0]]


def test_best_fit_keeps_short_documents_whole():
    lengths = [5, 3, 9, 2, 7, 1, 20]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = best_fit_rows(offsets, 10)
    pieces = [p for row in rows for p in row]
    assert all(sum(e - s for s, e in row) <= 10 for row in rows)
    assert sum(e - s for s, e in pieces) == offsets[-1]
    whole = {(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:]) if b - a <= 10}
    assert whole <= set(pieces)  # only the 20-token document is split
    assert len(rows) == 5  # 2 full rows for the 20-token document + ceil(27 / 10) for the rest
