"""File I/O shared by every stage: atomic writes, JSON, and Parquet document shards.

Outputs are written under a temporary name in the same directory and renamed into place,
so a killed job never leaves a file that looks complete.

Shards are streamed: ``read_document_batches`` yields a shard ``BATCH_SIZE`` documents at a time
and ``DocumentWriter`` writes them back as Parquet row groups, so a stage holds one batch, never
the whole shard. ``read_documents`` / ``write_documents`` (a whole shard as one list) remain for
small files and tests.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Documents a streaming stage holds at once, and the rows of each row group it writes. Read at
# call time, so a test can lower it (``monkeypatch.setattr(llmpipe.io, "BATCH_SIZE", 7)``).
BATCH_SIZE = 1000
# ...and a row group also ends once its documents' strings reach this many characters: pages are
# big and uneven, so a count alone does not bound a batch (ingest's batch_bytes has the same default).
BATCH_CHARS = 64_000_000
# Parquet is read through a buffered stream of this many bytes with pre-buffering off. pyarrow's
# default (pre_buffer=True) reads a whole row group's column chunks at once, and keeps growing
# while iter_batches walks the row groups: a single-row-group shard would be held compressed in full.
READ_BUFFER_BYTES = 1 << 20


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


def open_parquet(path: str | os.PathLike) -> pq.ParquetFile:
    """A ParquetFile that reads page by page through a small buffer (see ``READ_BUFFER_BYTES``)."""
    return pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)


def read_batches(
    path: str | os.PathLike, columns: list[str] | None = None, batch_size: int | None = None
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows as record batches of at most ``batch_size`` (``BATCH_SIZE``) rows, in order.

    A batch never spans two row groups, so a writer that ends row groups early (ingest's, at a
    byte budget, for big pages) bounds the batches of every stage that reads its file.
    """
    with open_parquet(path) as file:
        for group in range(file.num_row_groups):
            yield from file.iter_batches(
                batch_size=batch_size or BATCH_SIZE, row_groups=[group], columns=columns, use_threads=False
            )


def read_document_batches(
    path: str | os.PathLike, columns: list[str] | None = None, batch_size: int | None = None
) -> Iterator[list[dict]]:
    """A shard's documents (dicts) in order, ``batch_size`` (``BATCH_SIZE``) at a time: memory holds one batch."""
    for batch in read_batches(path, columns, batch_size):
        yield batch.to_pylist()


class DocumentWriter:
    """A Parquet document shard written batch by batch, as a context manager.

    ``write`` takes documents (dicts; keys not in ``schema`` are ignored, missing ones are null)
    and every ``row_group_size`` (``BATCH_SIZE``) of them, or fewer once their string values hold
    ``row_group_chars`` (``BATCH_CHARS``) characters, become one zstd row group: memory holds one
    row group, not the shard, and a stage reading the file gets batches no larger. The file is
    written under a temporary name and renamed onto ``path`` only when the ``with`` block ends
    without an exception (``atomic_path``); a shard nothing was written to is still a valid,
    empty file with the schema.

        with DocumentWriter(path, TEXT) as out:
            for docs in read_document_batches(source):
                out.write(step(docs))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        schema: pa.Schema,
        row_group_size: int | None = None,
        row_group_chars: int | None = None,
    ):
        self.path = Path(path)
        self.schema = schema
        self.row_group_size = row_group_size or BATCH_SIZE
        self.row_group_chars = row_group_chars or BATCH_CHARS
        self.rows = 0  # documents written so far
        self._buffer: list[dict] = []
        self._chars = 0
        self._writer: pq.ParquetWriter | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> DocumentWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
            stack.callback(self._writer.close)  # closed before atomic_path renames or removes it
            self._stack = stack.pop_all()
        return self

    def write(self, docs: Iterable[dict]) -> None:
        if self._writer is None:
            raise RuntimeError("DocumentWriter.write outside its with block")
        names = self.schema.names
        for doc in docs:
            row = {name: doc.get(name) for name in names}
            self._buffer.append(row)
            self._chars += sum(len(value) for value in row.values() if isinstance(value, str))
            if len(self._buffer) >= self.row_group_size or self._chars >= self.row_group_chars:
                self._flush()

    def flush(self) -> None:
        """End the current row group now (a writer bounding row groups by bytes, say)."""
        self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self.rows += len(self._buffer)
            self._buffer = []
        self._chars = 0

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        stack, self._stack = self._stack, contextlib.ExitStack()
        if exc_type is None:
            try:
                self._flush()
            except BaseException as err:  # the last row group failed: nothing is renamed into place
                stack.__exit__(type(err), err, err.__traceback__)
                raise
        # the block's exception (if any) reaches atomic_path, which then removes the temporary file
        stack.__exit__(exc_type, exc, tb)
        self._writer = None
        return False
