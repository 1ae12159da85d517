"""File I/O shared by every stage: atomic writes, JSON, and Parquet document shards.

Outputs are written under a temporary name in the same directory and renamed into place,
so a killed job never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSONL file, streamed.

    A line that is not JSON raises ValueError naming the file, line and column.
    """
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Every value of a JSONL file (blank lines skipped)."""
    return [value for _, value in iter_jsonl(path)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """One JSON value a line (UTF-8, not ASCII-escaped), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def public(row: dict) -> dict:
    """``row`` without its bookkeeping keys (those starting with ``_``), as files show it."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in stats; everything else is a bug worth seeing.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_documents(
    path: str | os.PathLike, docs: list[dict], schema: pa.Schema | None = None
) -> None:
    """Write documents (dicts) as one zstd Parquet file, atomically.

    ``schema`` fixes the columns; it is required to write an empty shard, which downstream
    stages must still be able to read.
    """
    if schema is not None:
        docs = [{name: d.get(name) for name in schema.names} for d in docs]
        table = pa.Table.from_pylist(docs, schema=schema)
    elif docs:
        table = pa.Table.from_pylist(docs)
    else:
        raise ValueError(f"{path}: cannot write an empty shard without a schema")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_documents(path: str | os.PathLike, columns: list[str] | None = None) -> list[dict]:
    """Read a Parquet shard into a list of dicts."""
    return pq.read_table(path, columns=columns).to_pylist()


def read_schema(path: str | os.PathLike) -> pa.Schema:
    return pq.read_schema(path)
