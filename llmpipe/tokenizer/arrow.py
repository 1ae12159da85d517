"""Zero-copy access to the UTF-8 bytes of a Parquet `text` column, for the compiled core.

Arrow stores a string column as one UTF-8 buffer plus offsets: exactly the (buffer, offsets)
segments that pre-token counting and encoding take, so no Python string is ever built.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def utf8_segments(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 buffer, int64 offsets) of a string column; nulls become empty documents."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:  # a null's offsets may span garbage bytes: make it an empty string
        array = pc.fill_null(array, "")
    if pa.types.is_string(array.type):
        offset_dtype = np.int32
    elif pa.types.is_large_string(array.type):
        offset_dtype = np.int64
    else:
        raise TypeError(f"expected a string column, got {array.type}")
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_dtype)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    offsets = offsets.astype(np.int64)
    return data, offsets


def parquet_text_batches(path: str | os.PathLike, column: str = "text") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One (buffer, offsets) batch per row group of a Parquet file's text column."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: cannot read Parquet: {err}") from None
    if column not in parquet.schema_arrow.names:
        raise ValueError(f"{path}: no column {column!r} (has {parquet.schema_arrow.names})")
    for group in range(parquet.num_row_groups):
        yield utf8_segments(parquet.read_row_group(group, columns=[column]).column(0))
