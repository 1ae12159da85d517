# Helpers shared by all rule files (paths, shards, config sections as params, code versions).
import glob
import re
from pathlib import Path

from llmpipe import layout
from llmpipe.cli import STAGES
from llmpipe.code_version import code_version
from llmpipe.config import canonical_json

RESULTS = config["results"]

# The names the rules share with the stages and the report (llmpipe/layout.py).
FILTER_STAGES = layout.FILTER_STAGES
FUNNEL_STAGES = layout.FUNNEL_STAGES
MODEL_STAGES = layout.MODEL_STAGES
SPLITS = layout.SPLITS


def section(name, keys=None):
    """A rule's params: only its own config section (or just `keys` of it), keys sorted.

    Sorted keys mean reordering config.yaml reruns nothing; `keys` lets a step that reads
    part of a section (MinHash signatures ignore dedup.threshold) skip reruns for the rest.
    """
    values = config[name]
    if keys is not None:
        values = {key: values[key] for key in keys}
    return canonical_json(values)


def stage_code(stage):
    """The code version of `llmpipe <stage>`, so that editing what it runs reruns the rule.

    A hash of every llmpipe file its module (llmpipe/cli.py's STAGES) imports, transitively, with
    the package data files they read: computed from the source (llmpipe/code_version.py), never listed.
    """
    if stage not in STAGES:
        raise ValueError(f"stage_code: {stage!r} is not a stage of llmpipe/cli.py (one of {', '.join(STAGES)})")
    return code_version(STAGES[stage][0])


def _shard_name(path):
    stem = Path(path).name
    for suffix in (".gz", ".warc", ".arc"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def warc_inputs():
    """shard name -> WARC path: the toy web's files, or the user's crawl from config."""
    source = config["input"]["source"]
    if source == "toyweb":
        return {
            f"toyweb-{i:03d}": layout.toyweb_warc_file(RESULTS, f"toyweb-{i:03d}")
            for i in range(config["toyweb"]["files"])
        }
    paths = sorted({p for pattern in config["input"]["warc"] for p in glob.glob(pattern)})
    if not paths:
        raise ValueError(f"config input.warc matches no files: {config['input']['warc']}")
    shards = {}
    for path in paths:
        name = _shard_name(path)
        if name in shards:
            raise ValueError(f"two input WARC files map to shard name {name!r}: {shards[name]}, {path}")
        shards[name] = path
    return shards


WARCS = warc_inputs()
SHARDS = sorted(WARCS)


def log_path(rule_name, name="{shard}"):
    return f"{RESULTS}/logs/{rule_name}/{name}.log"


def benchmark_path(rule_name, name="{shard}"):
    return f"{RESULTS}/benchmarks/{rule_name}/{name}.tsv"


def all_targets():
    """The default target: the report (which needs every stage) and each model's evaluation."""
    return [layout.report_file(RESULTS)] + [layout.evaluation_file(RESULTS, stage) for stage in MODEL_STAGES]


def shard_outputs(stage):
    """A filter stage's outputs per shard: docs, rejects, stats."""
    return {kind: layout.shard_file(RESULTS, stage, kind, "{shard}") for kind in layout.SHARD_SUFFIXES}


def packed(split):
    """A packed split's files: header, tokens, segments."""
    return layout.packed_files(RESULTS, split)


def packed_outputs(split):
    """A packed split's files as named outputs, in layout.PACKED_FILES's order."""
    return dict(zip(("header", "tokens", "segments"), packed(split)))


def model_outputs(stage):
    """A model stage's model directory as named outputs, in layout.MODEL_FILES's order."""
    return dict(zip(("model", "config", "tokenizer"), layout.model_files(RESULTS, stage)))


def pretrain_launcher():
    """`llmpipe` on one device; torchrun with one process per GPU (DDP) when there are more."""
    gpus = config["pretrain"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} -m llmpipe.cli"
    return "llmpipe"
