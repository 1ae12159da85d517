"""Decontamination (planted evaluation items are found where they are and dropped; clean data
passes unchanged; n is configurable) and memorisation (copied train spans are measured exactly)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from llmpipe.cli import main
from llmpipe.data.decontaminate import item_entries, words
from llmpipe.eval.memorisation import TrainIndex, memorisation_metrics, window_hashes
from llmpipe.io import read_documents, read_json, read_jsonl, write_documents, write_json, write_jsonl
from llmpipe.model.generate import Sampling, generate_batched

SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
PROBLEM = "Ruby has 4 books and gets 4 more. How many books does Ruby have now?"
CLEAN = [
    {"id": f"clean-{i}", "title": "Notes", "text": f"Page {i}. Tom has {i} shells and keeps all of them at home."}
    for i in range(5)
]


def run_stage(tmp: Path, docs: list[dict], sft: list[dict], evals: dict[str, list[dict]], **params) -> dict:
    """One real ``llmpipe decontaminate`` over a shard, an SFT file and evaluation files."""
    shard, sft_path = tmp / "train" / "s0.parquet", tmp / "sft_train.jsonl"
    shard.parent.mkdir(parents=True, exist_ok=True)
    write_documents(shard, docs, SCHEMA)
    write_jsonl(sft_path, sft)
    pairs = []
    for name, rows in evals.items():
        write_jsonl(tmp / f"{name}.jsonl", rows)
        pairs.append(f"{name}={tmp / f'{name}.jsonl'}")
    out = tmp / "out"
    code = main([
        "decontaminate", "--params", json.dumps(params), "--eval", *pairs, "--train", str(shard),
        "--train-output", str(out / "train" / "s0.parquet"), "--posttrain", str(sft_path),
        "--posttrain-output", str(out / "sft_train.jsonl"), "--report", str(out / "report.json"),
        "--stats", str(out / "stats.json"),
    ])
    assert code == 0
    return {"docs": read_documents(out / "train" / "s0.parquet"), "sft": read_jsonl(out / "sft_train.jsonl"),
            "report": read_json(out / "report.json"), "stats": read_json(out / "stats.json")}


def test_planted_items_are_found_where_they_are_and_dropped(tmp_path):
    # a worksheet page printing the test problem (other case and punctuation), as the toy web does
    planted = {"id": "sheet", "title": "Worksheet", "text": f"Practice. {PROBLEM.upper()} -- The answer is 8!"}
    sft = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
           {"messages": [{"role": "user", "content": PROBLEM}, {"role": "assistant", "content": "The answer is 8."}]}]
    evals = {"rl_test": [{"prompt": PROBLEM, "answer": "8"}, {"prompt": "Mia has 3 cards and gets 2 more. "
                                                                        "How many cards does Mia have now?",
                                                              "answer": "5"}]}
    out = run_stage(tmp_path, [*CLEAN[:2], planted, *CLEAN[2:]], sft, evals)
    assert [d["id"] for d in out["docs"]] == [d["id"] for d in CLEAN]
    assert out["sft"] == sft[:1]
    found = out["report"]["sets"]["rl_test"]
    assert (found["items"], found["contaminated"], found["remaining"]) == (2, 1, 0)
    assert found["found"][0]["item"] == 0
    where = [{"file": "s0.parquet", "id": "sheet"}, {"file": "sft_train.jsonl", "line": 2}]
    assert found["found"][0]["where"] == where
    assert out["stats"]["removed"] == {"contaminated": 1} and out["stats"]["docs_out"] == len(CLEAN)
    assert out["stats"]["extra"]["posttrain_rows_dropped"] == 1


def test_clean_input_passes_unchanged(tmp_path):
    sft = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]
    out = run_stage(tmp_path, CLEAN, sft, {"rl_test": [{"prompt": PROBLEM, "answer": "8"}]})
    assert out["docs"] == CLEAN and out["sft"] == sft
    assert out["report"]["sets"]["rl_test"]["contaminated"] == 0
    assert out["stats"]["removed"] == {}


def test_report_action_keeps_everything_but_lists_it(tmp_path):
    planted = {"id": "sheet", "title": "", "text": PROBLEM}
    out = run_stage(tmp_path, [planted], [], {"rl_test": [{"prompt": PROBLEM, "answer": "8"}]}, action="report")
    assert out["docs"] == [planted]
    assert out["report"]["sets"]["rl_test"]["contaminated"] == out["report"]["sets"]["rl_test"]["remaining"] == 1


def test_n_is_configurable_and_short_items_match_whole(tmp_path):
    item = {"prompt": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen", "answer": ""}
    doc = {"id": "d", "title": "", "text": "zero ONE two, three four five six seven eight nine. end"}  # 9 shared words
    assert run_stage(tmp_path / "n13", [doc], [], {"e": [item]})["report"]["sets"]["e"]["contaminated"] == 0
    assert run_stage(tmp_path / "n8", [doc], [], {"e": [item]}, ngram=8)["docs"] == []
    assert item_entries("The capital of France is Paris", 13) == {("the", "capital", "of", "france", "is", "paris")}
    assert words("Don't STOP—now!") == ["don", "t", "stop", "now"]


def test_report_only_sets_and_in_distribution_items_drop_nothing_held_out_items_do(tmp_path):
    docs = [{"id": "a", "title": "", "text": "The capital of France is Paris."},
            {"id": "b", "title": "", "text": "The capital of Ghana is Accra."},
            {"id": "c", "title": "", "text": "What is 3 plus 4? 7"}]
    probes = [{"prompt": "The capital of France is", "answer": "Paris", "kind": "capital", "phrasing": "train"},
              {"prompt": "The capital of Ghana is", "answer": "Accra", "kind": "capital", "phrasing": "train",
               "held_out": True}]
    fewshot = [{"prompt": "What is 3 plus 4?", "answer": "7", "kind": "add", "held_out": False}]
    out = run_stage(tmp_path, docs, [], {"fact_probes": probes, "arithmetic_fewshot": fewshot},
                    report_only=["fact_probes/train"])
    # recall by design stays, an in-distribution item stays, a held-out item never does
    assert [d["id"] for d in out["docs"]] == ["a", "c"]
    sets = out["report"]["sets"]
    by_design, held_out = sets["fact_probes/train"], sets["fact_probes/train/held_out"]
    assert (by_design["contaminated"], by_design["remaining"], by_design["report_only"]) == (1, 1, True)
    assert (held_out["contaminated"], held_out["remaining"], held_out["report_only"]) == (1, 0, False)
    in_dist = sets["arithmetic_fewshot/in_distribution"]
    assert (in_dist["contaminated"], in_dist["remaining"], in_dist["report_only"]) == (1, 1, True)


def write_token_shard(path: Path, docs: list[list[int]], vocab_size: int) -> str:
    """A tokenized shard in the tokenize stage's format (tokens, offsets, header)."""
    tokens = np.array([t for d in docs for t in d], dtype="<u2")
    tokens.tofile(path.with_suffix(".bin"))
    np.save(path.with_suffix(".idx.npy"), np.cumsum([0, *map(len, docs)]).astype(np.int64))
    header = path.with_suffix(".json")
    write_json(header, {"dtype": "uint16", "vocab_size": vocab_size, "bos_id": 0, "eos_id": 1, "pad_id": 2,
                        "count": len(tokens), "tokens": path.with_suffix(".bin").name,
                        "offsets": path.with_suffix(".idx.npy").name})
    return str(header)


def test_longest_match_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    train = [rng.integers(3, 200, 300).tolist() for _ in range(3)]
    index = TrainIndex.build([write_token_shard(tmp_path / "t", train, 256)], k=4)
    copied = train[1][40:100]  # 60 train tokens, then tokens that break the match
    query = [250, 251, *copied, 252, 253]
    assert index.longest_match(query) == (60, False)
    assert index.longest_match([250, 251, 252, 253, 254, 255]) == (0, False)
    assert index.longest_match(train[2][:3]) == (0, False)  # shorter than the index window: not seen
    assert len(window_hashes(np.array(query), 4)) == len(query) - 3


def test_memorisation_counts_continuations_that_copy_train(tmp_path, tiny_model_dir):
    from llmpipe.model.directory import load_model, load_tokenizer

    directory = tiny_model_dir(context_length=128)
    model, tok = load_model(directory), load_tokenizer(directory)
    docs = [[tok.bos_id, *tok.encode(f"Document {i} says hello to the world")] for i in range(4)]
    p = {"memorisation_prefix_tokens": 8, "memorisation_new_tokens": 24, "memorisation_span": 20,
         "memorisation_prefixes": 4, "batch_size": 2, "generation_batch_size": 2}
    sampling = Sampling(24, temperature=0, stop_ids=(tok.eos_id, tok.bos_id))
    continuations = [c.tokens for c in generate_batched(model, [d[:8] for d in docs], sampling, tok.pad_id, 2)]
    unrelated = write_token_shard(tmp_path / "a", [[tok.bos_id, *tok.encode("nothing like it " * 8)]], tok.vocab_size)
    with torch.no_grad():
        clean = memorisation_metrics(model, tok, TrainIndex.build([unrelated], 8), docs, p)
    assert clean["n"] == 4 and clean["rate"] == 0.0
    # the same continuations written into the train shards: every one is now a copy
    seen = write_token_shard(tmp_path / "b", [[tok.bos_id, *c] for c in continuations], tok.vocab_size)
    with torch.no_grad():
        copied = memorisation_metrics(model, tok, TrainIndex.build([seen], 8), docs, p)
    long_enough = sum(len(c) >= 20 for c in continuations)
    assert long_enough > 0
    assert copied["rate"] == long_enough / 4 and copied["longest_span"] == max(map(len, continuations))


@pytest.mark.parametrize("n", [1, 13])
def test_item_entries_cover_every_window(n):
    text = " ".join(f"w{i}" for i in range(20))
    entries = item_entries(text, n)
    assert len(entries) == 20 - n + 1 and all(len(e) == n for e in entries)
