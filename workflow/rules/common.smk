# Helpers shared by all rule files (paths, shards, config sections as params, code versions).
import glob
import gzip
import hashlib
import os
import posixpath
import re
import sys
from pathlib import Path

from llmpipe import layout
from llmpipe.cli import STAGES
from llmpipe.code_version import code_version
from llmpipe.config import canonical_json
from llmpipe.eval.sets import KEYS as EVAL_SET_KEYS

RESULTS = config["results"]
EVAL_SET_KEYS = list(EVAL_SET_KEYS)  # the evaluate keys the eval_sets rule reads

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


# Remote inputs (README, "Remote inputs"): a URL in input.warc or a Common Crawl file list is
# downloaded by a Snakemake storage plugin (URL scheme -> provider) right before its ingest job.
STORAGE_PROVIDERS = {"http": "http", "https": "http", "s3": "s3"}
STORAGE_PLUGINS = {"http": "snakemake-storage-plugin-http", "s3": "snakemake-storage-plugin-s3"}


def _scheme(location):
    """A location's URL scheme (lowercase), or None for a local path."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", location)
    return match.group(1).lower() if match else None


def _storage_provider(location):
    """The storage provider that fetches `location`, or None for a local path."""
    scheme = _scheme(location)
    if scheme is None:
        return None
    if scheme not in STORAGE_PROVIDERS:
        raise ValueError(
            f"input: {location!r} is a {scheme}:// URL; inputs are local paths or"
            f" {', '.join(f'{s}://' for s in STORAGE_PROVIDERS)} URLs"
        )
    return STORAGE_PROVIDERS[scheme]


def _location_name(location):
    """The shard name a file or URL gets before collisions: its file name without .warc(.gz)."""
    if _scheme(location) is None:
        return _shard_name(location)
    from urllib.parse import unquote, urlsplit

    return _shard_name(unquote(urlsplit(location).path).rstrip(posixpath.sep)) or "url"


def shard_names(locations):
    """shard name -> location (local path or URL), names stable and unique.

    A file's name is its file name (a URL's path's last part) without `.gz`/`.warc`/`.arc`, other
    characters than [A-Za-z0-9_-] made `_`. Where two locations share a name, each of them gets
    `-` and the first 8 hex digits of the SHA-256 of the location, as written, appended.
    """
    by_name = {}
    for location in locations:
        by_name.setdefault(_location_name(location), []).append(location)
    shards = {}
    for name, group in by_name.items():
        if len(group) == 1:
            shards[name] = group[0]
            continue
        for location in group:
            digest = hashlib.sha256(location.encode()).hexdigest()[:8]
            shards[f"{name}-{digest}"] = location
    if len(shards) != len(locations):
        raise ValueError(f"input: {len(locations)} WARC locations make only {len(shards)} distinct shard names")
    return shards


def _join(base, path):
    """`path` from a Common Crawl file list, relative to `base` (a URL or a local directory)."""
    if _scheme(path) is not None or (_scheme(base) is None and os.path.isabs(path)):
        return path
    if _scheme(base) is None:
        return os.path.join(base, path)
    return posixpath.join(base, path.lstrip(posixpath.sep))


def _s3_client():
    """A boto3 S3 client with input.s3's settings (the ones the s3 storage provider gets)."""
    try:
        import boto3
        import botocore
        from botocore.config import Config
    except ImportError as err:
        raise ValueError(
            f"input: reading s3:// needs boto3 (comes with the S3 storage plugin): pip install 'llmpipe[remote]' ({err})"
        ) from err
    s3 = config["input"]["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        config=Config(signature_version=botocore.UNSIGNED) if s3["anonymous"] else None,
    )


def _read_remote(url, what, attempts=4):
    """The bytes at a URL, read now (parse time). HTTP(S) retries timeouts and 429/5xx answers
    (Common Crawl answers "503 Slow Down" when busy); boto3 retries S3 requests itself."""
    import http.client
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    if _scheme(url) == "s3":
        client = _s3_client()
        parts = urlsplit(url)
        try:
            return client.get_object(Bucket=parts.netloc, Key=parts.path[1:])["Body"].read()
        except Exception as err:  # botocore's errors: no such key or bucket, credentials, endpoint
            raise ValueError(f"input: cannot read {what} {url}: {type(err).__name__}: {err}") from err
    last = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "llmpipe (snakemake workflow)"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code != 429 and err.code < 500:
                raise ValueError(f"input: cannot read {what} {url}: HTTP {err.code} {err.reason}") from err
            last = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
    raise ValueError(f"input: cannot read {what} {url} ({attempts} tries): {last}")


def _parse_paths_list(data, source):
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"input: {source} is not a complete gzip file: {err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"input: {source} is not a text list of WARC paths: {err}") from err
    paths = [line.strip() for line in text.splitlines()]
    paths = [p for p in paths if p and not p.startswith("#")]
    if not paths:
        raise ValueError(f"input: {source} lists no WARC paths")
    return paths


def commoncrawl_paths_cache(url):
    """Where a remote file list is kept once read: results/input/<12 hex of its URL>-<file name>."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(url.rstrip(posixpath.sep))) or "paths"
    return f"{RESULTS}/input/{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def commoncrawl_paths():
    """The WARC paths of input.commoncrawl's file list (read at parse time: they are the shards).

    A remote list is fetched once and cached under results/input/; delete the file to refetch.
    """
    cc = config["input"]["commoncrawl"]
    source = cc.get("paths") or _join(cc["base_url"], f"crawl-data/{cc['crawl']}/warc.paths.gz")
    if _scheme(source) is None:
        if not os.path.isfile(source):
            raise ValueError(f"input.commoncrawl.paths: no such file: {source}")
        with open(source, "rb") as fh:
            return _parse_paths_list(fh.read(), source)
    _storage_provider(source)  # a supported scheme
    cache = commoncrawl_paths_cache(source)
    if os.path.isfile(cache):
        with open(cache, "rb") as fh:
            return _parse_paths_list(fh.read(), f"{cache} (cached copy of {source})")
    data = _read_remote(source, "the Common Crawl file list")
    paths = _parse_paths_list(data, source)  # a bad download is never cached
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = f"{cache}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, cache)
    print(f"llmpipe: read {len(paths)} WARC paths from {source} (kept in {cache})", file=sys.stderr)
    return paths


def commoncrawl_locations():
    """input.commoncrawl's chosen files: the first `limit`, or a seeded sample of `limit`, as locations.

    The sample orders the list by SHA-256 of "<seed>:<path>" and takes the first `limit`, so a
    larger limit keeps every file a smaller one chose (their shards are not redone).
    """
    cc = config["input"]["commoncrawl"]
    paths = list(dict.fromkeys(commoncrawl_paths()))
    if cc["sample"]:
        paths.sort(key=lambda p: hashlib.sha256(f"{cc['seed']}:{p}".encode()).hexdigest())
    if cc["limit"] is not None:
        paths = paths[: cc["limit"]]
    return [_join(cc["base_url"], path) for path in paths]


def input_locations():
    """The input WARC files of a warc / commoncrawl source: local paths and URLs, deduplicated."""
    source = config["input"]["source"]
    if source == "commoncrawl":
        return commoncrawl_locations()
    locations = []
    for entry in config["input"]["warc"]:
        if _scheme(entry) is not None:
            _storage_provider(entry)
            locations.append(entry)  # a URL is taken as written, never globbed
        else:
            locations.extend(sorted(glob.glob(entry)))
    locations = sorted(set(locations))
    if not locations:
        raise ValueError(f"config input.warc matches no files: {config['input']['warc']}")
    return locations


def s3_settings():
    """The s3 storage provider's settings from input.s3; unset keys are left to the command line
    (--storage-s3-*), SNAKEMAKE_STORAGE_S3_* and boto3's own AWS_* environment variables."""
    s3 = config["input"]["s3"]
    settings = {key: s3[key] for key in ("endpoint_url", "region") if s3[key] is not None}
    if s3["anonymous"]:
        import botocore

        settings["signature_version"] = botocore.UNSIGNED  # unsigned requests: no credentials
    return settings


def _require_storage_plugin(provider, example):
    from snakemake_interface_storage_plugins.registry import StoragePluginRegistry

    if not StoragePluginRegistry().is_installed(provider):
        raise ValueError(
            f"input: {example} needs the Snakemake storage plugin {STORAGE_PLUGINS[provider]}, which is not"
            f" installed: pip install 'llmpipe[remote]' (or pip install {STORAGE_PLUGINS[provider]})"
        )


INPUT_LOCATIONS = {} if config["input"]["source"] == "toyweb" else shard_names(input_locations())
# Only the providers this run's inputs use are declared: a plain local run needs no plugin.
NEEDED_PROVIDERS = {}
for _location in INPUT_LOCATIONS.values():
    if _storage_provider(_location) is not None:
        NEEDED_PROVIDERS.setdefault(_storage_provider(_location), _location)
for _provider, _example in NEEDED_PROVIDERS.items():
    _require_storage_plugin(_provider, _example)

if "http" in NEEDED_PROVIDERS:

    storage http:
        provider="http",


if "s3" in NEEDED_PROVIDERS:

    storage s3:
        provider="s3",
        **s3_settings(),


def warc_inputs():
    """shard name -> WARC input: the toy web's files, or the user's crawl (local files, and
    URLs as storage-plugin inputs that Snakemake downloads before the ingest job)."""
    if config["input"]["source"] == "toyweb":
        return {
            f"toyweb-{i:03d}": layout.toyweb_warc_file(RESULTS, f"toyweb-{i:03d}")
            for i in range(config["toyweb"]["files"])
        }
    shards = {}
    for name, location in INPUT_LOCATIONS.items():
        provider = _storage_provider(location)
        shards[name] = location if provider is None else getattr(storage, provider)(location)
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


def corpus_file(split, shard):
    """The documents a split's models see: train decontaminated (results/decontaminate/train), val and test as split."""
    if split == "train":
        return layout.decontaminated_train_file(RESULTS, shard)
    return layout.split_file(RESULTS, split, shard)


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
