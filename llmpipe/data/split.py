"""Split: assign each document to train, val or test by a salted hash of its id.

A document's split depends only on (salt, id): it never moves when other documents are
added or removed, and growing one fraction moves documents only between that split and train.

The shard is streamed batch by batch (``llmpipe.io.BATCH_SIZE`` documents) into the three
split files, so memory is one batch, not the shard.
"""
from __future__ import annotations

import contextlib
import hashlib

from llmpipe.config import ConfigError, stage_params
from llmpipe.data.documents import text_bytes
from llmpipe.data.stage import _shard_name
from llmpipe.io import DocumentWriter, read_document_batches, read_schema
from llmpipe.stats import StageStats

SECTION = "split"
SPLITS = ("train", "val", "test")
HASH_BYTES = 8


def check_fractions(params: dict) -> None:
    """The one rule JSON Schema cannot say: val and test together leave room for train."""
    val, test = params["val_fraction"], params["test_fraction"]
    if not 0 <= val <= 1 or not 0 <= test <= 1 or val + test >= 1:
        raise ConfigError(
            f"config keys 'split.val_fraction' ({val}) and 'split.test_fraction' ({test}): "
            "each must be in [0, 1] and their sum below 1"
        )


def unit_hash(doc_id: str, salt: str) -> float:
    """A stable, uniform number in [0, 1) for ``doc_id`` (blake2b, not Python's hash())."""
    # The NUL keeps (salt, id) pairs apart: ("ab", "c") and ("a", "bc") hash differently.
    message = f"{salt}\0{doc_id}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(message, digest_size=HASH_BYTES).digest()
    return int.from_bytes(digest, "big") / 2 ** (8 * HASH_BYTES)


def assign(doc_id: str, val_fraction: float, test_fraction: float, salt: str) -> str:
    """val takes [0, val), test takes [1 - test, 1), train the middle."""
    u = unit_hash(doc_id, salt)
    if u < val_fraction:
        return "val"
    if u >= 1 - test_fraction:
        return "test"
    return "train"


def split_docs(docs: list[dict], params: dict, stats: StageStats) -> dict[str, list[dict]]:
    """Documents per split; a document without an id cannot be placed and is dropped."""
    parts: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for doc in docs:
        nbytes = text_bytes(doc)
        stats.read(nbytes)
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or not doc_id:
            stats.dropped("missing_id", nbytes)
            continue
        stats.kept(nbytes)
        name = assign(doc_id, params["val_fraction"], params["test_fraction"], params["salt"])
        parts[name].append(doc)
    return parts


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--input", required=True, help="documents Parquet shard")
    for name in SPLITS:
        parser.add_argument(f"--{name}", required=True, help=f"the shard's {name} documents")
    parser.add_argument("--stats", required=True, help="stats.json")


def run(args, stage: str) -> int:
    params = stage_params(args.params, args.config, SECTION)
    check_fractions(params)
    stats = StageStats(stage=SECTION, shard=_shard_name(args.input))
    schema = read_schema(args.input)
    counts = dict.fromkeys(SPLITS, 0)
    with contextlib.ExitStack() as outputs:  # the three files appear only if the whole shard is done
        writers = {name: outputs.enter_context(DocumentWriter(getattr(args, name), schema)) for name in SPLITS}
        for docs in read_document_batches(args.input):
            for name, part in split_docs(docs, params, stats).items():
                writers[name].write(part)
                counts[name] += len(part)
    stats.extra["docs_per_split"] = counts
    if not stats.docs_out:
        stats.extra["empty_output"] = True
    stats.record_peak_rss()
    stats.write(args.stats)
    print(f"split: {stats.extra['docs_per_split']} from {stats.docs_in} documents")
    return 0
