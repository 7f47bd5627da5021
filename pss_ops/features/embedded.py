"""The embedded-partition file: item id and attribute columns plus the vectors as one fixed-size float32 list column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pss_ops import storage

VECTOR_COLUMN = "vector"


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, dim) float32 matrix as the file's vector column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def read_vectors(uri: str, start: int = 0, stop: int | None = None) -> tuple[pa.Table, np.ndarray]:
    """An embedded partition's id/attribute columns and its vectors (rows [start, stop)) as a float32 matrix."""
    table = storage.read_parquet(uri)
    table = table.slice(start, (stop if stop is not None else table.num_rows) - start)
    column = table.column(VECTOR_COLUMN).combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    return table.drop_columns([VECTOR_COLUMN]), np.ascontiguousarray(vectors)
