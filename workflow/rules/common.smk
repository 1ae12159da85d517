# Helpers shared by all rule files (paths, shards, config sections as params, code versions).
import glob
import hashlib
import importlib.util
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
    """Hash of the code a stage runs, so editing it reruns that stage.

    Each item is a file under the package ("data/url_filter.py"), a glob of data files there
    ("data/blocklists/*.txt": names and contents count), or a compiled module by name
    ("_bpe"): the built file Python imports, which changes whenever its ext/ sources are
    rebuilt (the build is byte-for-byte reproducible) and exists in every kind of install.
    """
    digest = hashlib.sha256()
    for module in modules:
        if "*" in module:
            paths = sorted(PACKAGE_DIR.glob(module))
            if not paths:
                raise ValueError(f"code_version: no file matches {PACKAGE_DIR / module}")
            for path in paths:
                digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
                digest.update(path.read_bytes())
        elif module.isidentifier():
            spec = importlib.util.find_spec(f"llmpipe.{module}")
            if spec is None or not spec.origin:
                raise ValueError(f"code_version: no compiled module llmpipe.{module}; run pip install -e .")
            digest.update(Path(spec.origin).read_bytes())
        else:
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
    """The default target: the report (which needs every stage) and each model's evaluation."""
    return [f"{RESULTS}/report.html"] + expand(f"{RESULTS}/evaluate/{{model}}.json", model=["pretrain", "sft", "dpo", "rl"])


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
