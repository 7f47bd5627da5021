"""The faiss index families over unit vectors (inner product = cosine): build, search as the query step does, save, load.

- flat: exact search. Every query compares every row; right for a small partition.
- ivf: an inverted file. k-means lists of about IVF_LIST_ROWS rows each; a query scans the `nprobe` lists whose
  centroids are nearest. The job is a batch self-join, and an inverted file answers a big batch with dense
  products, which a CPU does best. Lists of constant length keep a query's cost constant as the partition grows;
  past FLAT_COARSE_MAX_LISTS the centroids themselves are found through a small HNSW graph (the coarse quantiser).
  A batch is searched in the order of its queries' nearest lists, so consecutive queries scan the same lists while
  they are in cache (measured at 1M rows, 100k queries: 1.7-2x faster than the batch's own order).
- hnsw: a graph. Built for single low-latency queries; kept for partitions where it measures cheapest.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from pss_ops import storage
from pss_ops.manifests import IndexSpec

# Rows per inverted list the ivf family aims at. A query's cost is nprobe lists of this length plus finding them.
IVF_LIST_ROWS = 256
# k-means trains on this many rows per list (faiss warns below 39): more costs build time and gains little recall.
IVF_TRAIN_ROWS_PER_LIST = 64
IVF_TRAIN_ITERATIONS = 10
# Up to this many lists a query compares every centroid (one dense product for the whole batch); beyond, through a
# graph over the centroids. Measured at 1M x 128 (3,906 lists): the graph built 3.6x slower and searched 1.5x slower
# at lower recall than comparing every centroid, so the graph waits for far more lists.
FLAT_COARSE_MAX_LISTS = 16_384
# Beyond this many lists k-means is trained in two levels (faiss.contrib.clustering): sqrt(nlist) clusters, then each
# split in proportion to its size, so a training row costs about 2*sqrt(nlist) distance computations, not nlist.
TWO_LEVEL_MIN_LISTS = 1024
COARSE_HNSW_M = 32
# An ivf index needs this many rows: below, a partition is searched exactly.
IVF_MIN_ROWS = 4 * IVF_LIST_ROWS


def ivf_lists(rows: int) -> int:
    """The number of inverted lists for a partition of `rows`: about IVF_LIST_ROWS rows each."""
    return max(1, round(rows / IVF_LIST_ROWS))


def coarse_quantizer_for(nlist: int) -> str:
    """'flat' while comparing every centroid is cheap, else 'hnsw'."""
    return "flat" if nlist <= FLAT_COARSE_MAX_LISTS else "hnsw"


def _train_centroids(vectors: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """Unit k-means centroids of a sample of the rows (spherical: the metric is the inner product)."""
    rows = len(vectors)
    take = min(rows, nlist * IVF_TRAIN_ROWS_PER_LIST)
    picks = np.sort(np.random.default_rng(seed).choice(rows, size=take, replace=False)) if take < rows else slice(None)
    sample = np.ascontiguousarray(vectors[picks], dtype=np.float32)
    if nlist >= TWO_LEVEL_MIN_LISTS:
        from faiss.contrib.clustering import two_level_clustering

        first = max(1, int(math.sqrt(nlist)))
        centroids, _ = two_level_clustering(sample, first, nlist, clustering_niter=IVF_TRAIN_ITERATIONS, spherical=True, seed=seed)
    else:
        kmeans = faiss.Kmeans(
            vectors.shape[1], nlist, niter=IVF_TRAIN_ITERATIONS, spherical=True, seed=seed, max_points_per_centroid=IVF_TRAIN_ROWS_PER_LIST
        )
        kmeans.train(sample)
        centroids = kmeans.centroids
    return np.ascontiguousarray(centroids, dtype=np.float32)


def build_index(vectors: np.ndarray, spec: IndexSpec, *, seed: int = 0) -> faiss.Index:
    """An index of the rows in the spec's family, inner-product metric (the rows are unit length: it ranks by cosine)."""
    dim = vectors.shape[1]
    if spec.family == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif spec.family == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
    else:
        nlist = min(spec.nlist, len(vectors))
        if spec.coarse_quantizer == "hnsw":
            quantizer: faiss.Index = faiss.IndexHNSWFlat(dim, COARSE_HNSW_M, faiss.METRIC_INNER_PRODUCT)
        else:
            quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(_train_centroids(vectors, nlist, seed))
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()  # type: ignore[attr-defined]  # the IVF index owns (and frees) its quantiser
        index.is_trained = True
    index.add(vectors)
    return index


def search_parameters(index: faiss.Index, effort: int, k: int, selector: Any = None) -> Any:
    """faiss search parameters at this effort (efSearch, raised to k; or nprobe), with an optional IDSelector."""
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=max(effort, k), sel=selector)  # type: ignore[attr-defined]
    if isinstance(index, faiss.IndexIVF):
        # The coarse graph must explore at least the lists probed.
        graph = isinstance(faiss.downcast_index(index.quantizer), faiss.IndexHNSW)
        coarse = faiss.SearchParametersHNSW(efSearch=max(2 * effort, 16)) if graph else None  # type: ignore[attr-defined]
        params = faiss.SearchParametersIVF(nprobe=min(effort, index.nlist), sel=selector)  # type: ignore[call-arg]
        if coarse is not None:
            params.quantizer_params = coarse
            params.keep_alive = coarse  # type: ignore[attr-defined]  # python-side reference: faiss holds a raw pointer
        return params
    return faiss.SearchParameters(sel=selector) if selector is not None else None  # type: ignore[call-arg]


# A batch this large is reordered by nearest list before an ivf search; a smaller one is searched as it comes.
ORDERED_BATCH_MIN = 1_000


def search(index: faiss.Index, queries: np.ndarray, k: int, effort: int, selector: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of each query's k best at this search effort; missing slots are row -1."""
    if isinstance(index, faiss.IndexIVF) and len(queries) >= ORDERED_BATCH_MIN:
        return _ordered_ivf_search(index, queries, k, effort, selector)
    params = search_parameters(index, effort, k, selector)
    return index.search(queries, k, params=params) if params is not None else index.search(queries, k)


def _ordered_ivf_search(index: faiss.IndexIVF, queries: np.ndarray, k: int, effort: int, selector: Any) -> tuple[np.ndarray, np.ndarray]:
    """An ivf search of a batch in the order of its queries' nearest lists, results returned in the batch's order.

    The lists each query probes are found once, and reused by the search unless a selector needs faiss's own path.
    """
    nprobe = min(effort, index.nlist)
    quantizer = faiss.downcast_index(index.quantizer)
    coarse_params = search_parameters(quantizer, 2 * nprobe, nprobe)
    centroid_scores, lists = quantizer.search(queries, nprobe, params=coarse_params)
    order = np.argsort(lists[:, 0], kind="stable")
    ordered = np.ascontiguousarray(queries[order], dtype=np.float32)
    if selector is None:
        index.nprobe = nprobe
        # faiss's Python wrapper takes (x, k, Iq, Dq); the stubs describe the C++ signature.
        scores, rows = index.search_preassigned(ordered, k, lists[order], centroid_scores[order])  # type: ignore[call-arg, arg-type, func-returns-value, misc]
    else:
        scores, rows = index.search(ordered, k, params=search_parameters(index, effort, k, selector))
    out_scores, out_rows = np.empty_like(scores), np.empty_like(rows)
    out_scores[order], out_rows[order] = scores, rows
    return out_scores, out_rows


def distances_per_query(spec: IndexSpec, rows: int, fetch: int) -> float:
    """About how many vectors one unfiltered query compares: what an exact search of that many rows costs."""
    if spec.family == "flat":
        return float(rows)
    if spec.family == "hnsw":
        return float(max(spec.search_effort, fetch) * 2 * spec.hnsw_m)  # the base layer links 2M neighbours
    nlist = max(1, min(spec.nlist, rows))
    coarse = nlist if spec.coarse_quantizer == "flat" else 2 * spec.search_effort * COARSE_HNSW_M
    return float(coarse + min(spec.search_effort, nlist) * rows / nlist)


def stored_vectors(index: faiss.Index) -> np.ndarray | None:
    """The index's vectors as a (rows, dim) view in row order, no copy; None for an ivf index (kept per list)."""
    if isinstance(index, faiss.IndexHNSW):
        flat = faiss.downcast_index(index.storage)
    elif isinstance(index, faiss.IndexFlat):
        flat = index
    else:
        return None
    return faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)  # type: ignore[attr-defined]


def write_index(uri: str, index: faiss.Index) -> None:
    """Serialise an index to a file or object, atomically (the serialised buffer written as it is, not copied)."""
    storage.write_bytes(uri, faiss.serialize_index(index).data)


def load_index(uri: str) -> faiss.Index:
    """Deserialise an index written by write_index (faiss hands back the concrete class).

    A local file is read by faiss itself, so the index is never held twice (as bytes and as an index).
    """
    index = (
        faiss.read_index(uri) if not storage.is_s3(uri) else faiss.deserialize_index(np.frombuffer(storage.read_bytes(uri), dtype=np.uint8))
    )
    if not isinstance(index, faiss.IndexHNSWFlat | faiss.IndexFlatIP | faiss.IndexIVFFlat):
        raise ValueError(f"{uri} holds a {type(index).__name__}, not an index build_index writes")
    return index


def write_row_vectors(uri: str, vectors: np.ndarray) -> None:
    """The partition's vectors in index row order, for a family whose index keeps them per list (ivf)."""
    storage.write_npy(uri, np.ascontiguousarray(vectors, dtype=np.float32))


def read_row_vectors(uri: str) -> np.ndarray:
    """Vectors written by write_row_vectors (memory-mapped when local)."""
    return storage.read_npy(uri)
