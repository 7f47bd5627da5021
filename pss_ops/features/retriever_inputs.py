"""What the exact retrievers search: each item's input (written by embed), and the matrices built from it.

A lexical retriever's input is the item's hashed term frequencies, weighted into TF-IDF with its scope's IDF
(features.lexical) when an index partition is built and when its queries are searched. A vector retriever's
input is the item's catalog vector, L2-normalised. Neither depends on the rest of the catalog when written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from scipy import sparse

from pss_ops import storage
from pss_ops.config import ExactRetriever, LexicalRetriever
from pss_ops.features.lexical import (
    document_frequencies,
    read_sparse,
    read_vocabulary,
    term_frequencies,
    tfidf_rows,
    write_sparse,
)
from pss_ops.features.normalise import l2_normalise
from pss_ops.search.exact import Matrix


def write_input(uri: str, retriever: ExactRetriever, texts: Sequence[str], table: pa.Table) -> None:
    """One partition's input for a retriever: term frequencies (with their document frequencies) or unit vectors."""
    if isinstance(retriever, LexicalRetriever):
        tf = term_frequencies(texts, retriever)
        buckets, counts = document_frequencies(tf)
        write_sparse(uri, tf, df_buckets=buckets, df_counts=counts)
        return
    column = table.column(retriever.column).combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    vectors = values.reshape(len(column), retriever.dim) if len(column) else np.zeros((0, retriever.dim), np.float32)
    storage.write_arrays(uri, vectors=l2_normalise(np.ascontiguousarray(vectors)))


def read_input(uri: str, start: int = 0, stop: int | None = None) -> Matrix:
    """Rows [start, stop) of an input or rows file: CSR for a lexical retriever, a float32 array for a vector one."""
    arrays = storage.read_arrays(uri)
    if "vectors" in arrays:
        return arrays["vectors"][start:stop]
    return read_sparse(uri, start, stop)[0]


def searched_rows(retriever: ExactRetriever, blocks: list[Matrix], vocabulary_uri: str | None) -> Matrix:
    """The rows a retriever searches, from their inputs: TF-IDF with the scope's IDF, or the unit vectors as they are."""
    if isinstance(retriever, LexicalRetriever):
        assert vocabulary_uri is not None, "plan_index fits every lexical retriever's vocabulary"
        return tfidf_rows(sparse.vstack(blocks, format="csr"), read_vocabulary(vocabulary_uri))
    return np.vstack(blocks) if blocks else np.zeros((0, retriever.dim), np.float32)


def write_rows(uri: str, rows: Matrix) -> None:
    if isinstance(rows, np.ndarray):
        storage.write_arrays(uri, vectors=rows)
    else:
        write_sparse(uri, rows)


def query_matrix(retriever: ExactRetriever, input_uri: str, vocabulary_uri: str | None) -> Matrix:
    """A query partition's rows as the retriever compares them: weighted like the index rows of its scope."""
    return searched_rows(retriever, [read_input(input_uri)], vocabulary_uri)
