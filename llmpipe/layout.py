"""Names the rules, the stages and the report share: stage and split names, file names, result paths.

Bottom layer, importing nothing from llmpipe; path functions return "/"-joined strings ("{shard}" makes a pattern).
"""
from __future__ import annotations

import os

# Stages, in the DAG's order.
FILTER_STAGES = ("url_filter", "extract", "quality", "dedup")  # each writes docs, rejects, stats per shard
FUNNEL_STAGES = ("ingest", *FILTER_STAGES, "split")  # each writes stats per shard
MODEL_STAGES = ("pretrain", "sft", "dpo", "rl")  # each writes a model directory
SPLITS = ("train", "val", "test")

# File names.
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json")  # a model directory: weights, config, tokenizer
PACKED_FILES = ("header.json", "tokens.bin", "segments.bin")  # a packed split
POSTTRAIN_FILES = ("sft_train", "sft_heldout", "dpo_train", "dpo_heldout", "rl_train", "rl_test")  # .jsonl each
SHARD_SUFFIXES = {"docs": ".parquet", "rejects": ".parquet", "stats": ".json"}  # a data stage's per-shard files
TOKEN_SUFFIXES = {"tokens": ".bin", "offsets": ".idx.npy", "header": ".json"}  # a tokenized shard's files
METRICS, STATS = "metrics.jsonl", "stats.json"  # what a training stage logs, besides its model directory

def _path(results: str | os.PathLike[str], *parts: str) -> str:
    return "/".join([os.fspath(results), *parts])


def _check(name: str, names: tuple[str, ...], what: str) -> str:
    if name not in names:
        raise ValueError(f"{name!r} is not {what}: one of {', '.join(names)}")
    return name


# Data stages: results/<stage>/{docs,rejects,stats}/<shard>.*, results/split/<split>/<shard>.parquet


def toyweb_warc_file(results: str | os.PathLike[str], shard: str) -> str:
    return _path(results, "toyweb", f"{shard}.warc.gz")


def toyweb_truth_file(results: str | os.PathLike[str]) -> str:
    """What the toy web planted in each page."""
    return _path(results, "toyweb", "truth.parquet")


def toyweb_stats_file(results: str | os.PathLike[str]) -> str:
    return _path(results, "toyweb", "stats.json")


def shard_dir(results: str | os.PathLike[str], stage: str, kind: str) -> str:
    """A data stage's folder of per-shard ``kind`` files ("docs", "rejects", "stats")."""
    _check(kind, tuple(SHARD_SUFFIXES), "a kind of shard file")
    return _path(results, stage, kind)


def shard_file(results: str | os.PathLike[str], stage: str, kind: str, shard: str) -> str:
    return f"{shard_dir(results, stage, kind)}/{shard}{SHARD_SUFFIXES[kind]}"


def clusters_file(results: str | os.PathLike[str]) -> str:
    """Dedup's cluster membership (one row per duplicate, which survives)."""
    return _path(results, "dedup", "clusters.parquet")


def clusters_stats_file(results: str | os.PathLike[str]) -> str:
    return _path(results, "dedup", "clusters.stats.json")


def split_dir(results: str | os.PathLike[str], split: str) -> str:
    return _path(results, "split", split)


def split_file(results: str | os.PathLike[str], split: str, shard: str) -> str:
    return f"{split_dir(results, split)}/{shard}.parquet"


# Tokenizer half: results/tokenizer/, results/tokens/<split>/<shard>.*, results/pack/<split>/


def tokenizer_file(results: str | os.PathLike[str]) -> str:
    """llmpipe's own tokenizer.json (the Hugging Face copy is in ``tokenizer/hf/``)."""
    return _path(results, "tokenizer", "tokenizer.json")


def tokenizer_stats_file(results: str | os.PathLike[str]) -> str:
    return _path(results, "tokenizer", "stats.json")


def tokens_dir(results: str | os.PathLike[str], split: str) -> str:
    return _path(results, "tokens", split)


def tokens_file(results: str | os.PathLike[str], split: str, shard: str, kind: str) -> str:
    """A tokenized shard's ``kind`` file: "tokens" (``.bin``), "offsets" (``.idx.npy``), "header" (``.json``)."""
    return f"{tokens_dir(results, split)}/{shard}{TOKEN_SUFFIXES[_check(kind, tuple(TOKEN_SUFFIXES), 'a token file')]}"


def packed_dir(results: str | os.PathLike[str], split: str) -> str:
    return _path(results, "pack", split)


def packed_file(results: str | os.PathLike[str], split: str, name: str) -> str:
    return f"{packed_dir(results, split)}/{_check(name, PACKED_FILES, 'a packed-split file')}"


def packed_files(results: str | os.PathLike[str], split: str) -> list[str]:
    return [packed_file(results, split, name) for name in PACKED_FILES]


# Model half: results/<stage>/ (a model directory and its logs), results/evaluate/<stage>.json


def model_dir(results: str | os.PathLike[str], stage: str) -> str:
    """A model stage's directory: its model files, ``metrics.jsonl``, ``stats.json``."""
    return _path(results, stage)


def model_files(results: str | os.PathLike[str], stage: str) -> list[str]:
    return [f"{model_dir(results, stage)}/{name}" for name in MODEL_FILES]


def metrics_file(results: str | os.PathLike[str], stage: str) -> str:
    return f"{model_dir(results, stage)}/{METRICS}"


def training_stats_file(results: str | os.PathLike[str], stage: str) -> str:
    return f"{model_dir(results, stage)}/{STATS}"


def evaluation_file(results: str | os.PathLike[str], stage: str) -> str:
    """The evaluation of a model stage's model."""
    return _path(results, "evaluate", f"{stage}.json")


def posttrain_dir(results: str | os.PathLike[str]) -> str:
    return _path(results, "posttrain_data")


def posttrain_file(results: str | os.PathLike[str], name: str) -> str:
    """One of the post-training data files (``POSTTRAIN_FILES``), as JSONL."""
    return f"{posttrain_dir(results)}/{_check(name, POSTTRAIN_FILES, 'a post-training data file')}.jsonl"


def report_file(results: str | os.PathLike[str]) -> str:
    """The run's report: one self-contained HTML page."""
    return _path(results, "report.html")


# Evaluation sets: results/eval_sets/<name>.jsonl, written by a rule, read by evaluate and decontaminate.
# Each row has at least "prompt", "answer", "kind" (and "held_out" where the set marks it).
EVAL_SETS = ("fact_probes", "chat", "chat_arithmetic", "arithmetic_fewshot")


def eval_set_file(results: str | os.PathLike[str], name: str) -> str:
    return _path(results, "eval_sets", f"{_check(name, EVAL_SETS, 'an evaluation set')}.jsonl")


def eval_sets_stats_file(results: str | os.PathLike[str]) -> str:
    return _path(results, "eval_sets", "stats.json")


# Decontamination: results/decontaminate/train/<shard>.parquet (the train documents tokenisation
# reads), results/decontaminate/posttrain/<name>.jsonl (the post-training train files sft/dpo/rl
# read), the per-evaluation-set findings and the stage's stats.
POSTTRAIN_TRAIN_FILES = ("sft_train", "dpo_train", "rl_train")  # the post-training files models train on


def decontaminated_train_file(results: str | os.PathLike[str], shard: str) -> str:
    return _path(results, "decontaminate", "train", f"{shard}.parquet")


def decontaminated_posttrain_file(results: str | os.PathLike[str], name: str) -> str:
    name = _check(name, POSTTRAIN_TRAIN_FILES, "a post-training train file")
    return _path(results, "decontaminate", "posttrain", f"{name}.jsonl")


def contamination_file(results: str | os.PathLike[str]) -> str:
    """Per evaluation set: its contaminated items and where each was found."""
    return _path(results, "decontaminate", "contamination.json")


def decontaminate_stats_file(results: str | os.PathLike[str]) -> str:
    return _path(results, "decontaminate", "stats.json")
