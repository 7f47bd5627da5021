"""HNSW indexes over unit vectors (inner product = cosine): build, search as the query step does, save and load."""

from __future__ import annotations

import faiss
import numpy as np

from pss_ops import storage


def build_hnsw(vectors: np.ndarray, *, m: int, ef_construction: int) -> faiss.IndexHNSWFlat:
    """An HNSW index of the rows, inner-product metric (the rows are unit length, so it ranks by cosine)."""
    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(vectors)
    return index


def search_hnsw(index: faiss.IndexHNSWFlat, queries: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of each query's k best; efSearch is raised to k, since HNSW cannot return more than it explores."""
    index.hnsw.efSearch = max(ef_search, k)
    return index.search(queries, k)


def write_index(uri: str, index: faiss.Index) -> None:
    """Serialise an index to a file or object, atomically (the serialised buffer written as it is, not copied)."""
    storage.write_bytes(uri, faiss.serialize_index(index).data)


def load_index(uri: str) -> faiss.IndexHNSWFlat:
    """Deserialise an index written by write_index (faiss hands back the concrete HNSW class).

    A local file is read by faiss itself, so the index is never held twice (as bytes and as an index).
    """
    index = (
        faiss.read_index(uri) if not storage.is_s3(uri) else faiss.deserialize_index(np.frombuffer(storage.read_bytes(uri), dtype=np.uint8))
    )
    if not isinstance(index, faiss.IndexHNSWFlat):
        raise ValueError(f"{uri} holds a {type(index).__name__}, not the HNSW index build_index writes")
    return index
