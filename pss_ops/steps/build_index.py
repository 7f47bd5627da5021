"""Step 4, build_index: one faiss HNSW index per index partition, its id table, and its TF-IDF rows per lexical retriever."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.config import ExactRetriever
from pss_ops.features.embedded import read_vectors
from pss_ops.features.retriever_inputs import read_input, searched_rows, write_rows
from pss_ops.manifests import BuiltIndex, EfCalibration, IndexPartition, RunContext
from pss_ops.search.filters import candidates_per_query
from pss_ops.search.hnsw import build_hnsw, write_index
from pss_ops.search.tuning import calibrate_ef_search
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def build_index(ctx: RunContext, partition: IndexPartition) -> BuiltIndex:
    """Build, serialise and write the index and its ids; the manifest is written last."""
    hnsw_m, ef_construction, ef_search = partition.hnsw_m, partition.ef_construction, partition.ef_search
    with timed(f"build_index {partition.name}") as timer:
        tables, blocks = [], []
        for piece in partition.slices:
            ids, vectors = read_vectors(piece.uri, piece.start, piece.stop)
            tables.append(ids)
            blocks.append(vectors)
        # One slice (the usual case) is used as read: a copy would hold the partition's vectors twice.
        vectors = blocks[0] if len(blocks) == 1 else np.vstack(blocks)
        del blocks
        index = build_hnsw(vectors, m=hnsw_m, ef_construction=ef_construction)
        calibration = None
        if ctx.config.index.tuning is not None:
            calibration = _calibrate(ctx, partition, index, vectors, ef_search)
            ef_search = calibration.ladder[-1][0]
        index_uri = layout.index_file(ctx.run_uri, partition.name)
        ids_uri = layout.index_ids(ctx.run_uri, partition.name)
        storage.write_parquet(ids_uri, pa.concat_tables(tables))
        write_index(index_uri, index)
        retriever_rows = {r.name: _build_retriever_rows(ctx, partition, r) for r in ctx.config.exact_retrievers}
    result = BuiltIndex(
        number=partition.number,
        name=partition.name,
        scope=partition.scope,
        index_uri=index_uri,
        ids_uri=ids_uri,
        rows=int(index.ntotal),
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        seconds=timer.seconds,
        ef_search=ef_search,
        measured_recall=calibration.ladder[-1][1] if calibration is not None else None,
        calibration=calibration,
        retriever_rows=retriever_rows,
    )
    result.write(layout.index_manifest(ctx.run_uri, partition.name))
    log.info("build_index %s: %d vectors in %.1fs", partition.name, result.rows, result.seconds)
    return result


def _build_retriever_rows(ctx: RunContext, partition: IndexPartition, retriever: ExactRetriever) -> str:
    """The partition's rows as an exact retriever searches them (TF-IDF with its scope's IDF, or unit vectors)."""
    blocks = [read_input(piece.retriever_inputs[retriever.name], piece.start, piece.stop) for piece in partition.slices]
    uri = layout.retriever_rows(ctx.run_uri, partition.name, retriever.name)
    write_rows(uri, searched_rows(retriever, blocks, partition.lexical_idf.get(retriever.name)))
    return uri


def _calibrate(ctx: RunContext, partition: IndexPartition, index: faiss.IndexHNSWFlat, vectors: np.ndarray, start_ef: int) -> EfCalibration:
    """efSearch for this partition measured on the index just built, searched as the query step searches it."""
    tuning = ctx.config.index.tuning
    assert tuning is not None
    calibration = calibrate_ef_search(
        index,
        vectors,
        start_ef=start_ef,
        k=ctx.config.k,
        # The query step's first fetch, plus the query itself (search.candidates: it searches fetch + 1).
        search_k=candidates_per_query(ctx.config) + 1,
        target_recall=tuning.target_recall,
        queries=tuning.sample_queries,
        seed=tuning.seed + partition.number,
    )
    ef, measured = calibration.ladder[-1]
    log.info(
        "build_index %s: efSearch %d -> %d, recall@%d %.4f on %d of its rows (target %.4f)",
        partition.name,
        start_ef,
        ef,
        ctx.config.k,
        measured,
        calibration.queries,
        tuning.target_recall,
    )
    return calibration
