# Helpers shared by all rule files (paths, shards, config sections as params, code versions).
import glob
import hashlib
import re
from pathlib import Path

import llmpipe
from llmpipe.config import canonical_json

RESULTS = config["results"]
# The installed package the rules run (editable installs point back into this checkout).
PACKAGE_DIR = Path(llmpipe.__file__).parent



def section(name, keys=None):
    """A rule's params: only its own config section (or just `keys` of it), keys sorted.

    Sorted keys mean reordering config.yaml reruns nothing; `keys` lets a step that reads
    part of a section (MinHash signatures ignore dedup.threshold) skip reruns for the rest.
    """
    values = config[name]
    if keys is not None:
        values = {key: values[key] for key in keys}
    return canonical_json(values)


def code_version(*modules):
    """Hash of the stage's source files, so editing a stage's code reruns that stage."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update((PACKAGE_DIR / module).read_bytes())
    return digest.hexdigest()[:16]


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
            f"toyweb-{i:03d}": f"{RESULTS}/toyweb/toyweb-{i:03d}.warc.gz"
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
    targets = expand(f"{RESULTS}/split/{{split}}/{{shard}}.parquet", split=["train", "val", "test"], shard=SHARDS)
    targets += expand(f"{RESULTS}/pack/{{split}}/header.json", split=["train", "val", "test"])
    targets += [f"{RESULTS}/evaluate/pretrain.json"]
    return targets


# The model half: packed splits, model directories, launcher.
PACKED_FILES = ["header.json", "tokens.bin", "segments.bin"]
MODEL_FILES = ["model.safetensors", "config.json", "tokenizer.json"]
MODEL_CODE = ["model/gpt.py", "train/data.py", "train/checkpoint.py", "train/runtime.py"]


def packed(split):
    return [f"{RESULTS}/pack/{split}/{name}" for name in PACKED_FILES]


def pretrain_launcher():
    """`llmpipe` on one device; torchrun with one process per GPU (DDP) when there are more."""
    gpus = config["pretrain"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} -m llmpipe.cli"
    return "llmpipe"
