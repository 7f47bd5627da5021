"""Step 4, build_index: one faiss index per index partition (search.indexes), its id table, and its TF-IDF rows per
lexical retriever. With index.tuning the search effort is calibrated on the built index, and a family that would
need more than its bound gives way to the next one the tuner ranked (exact search last)."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.config import ExactRetriever
from pss_ops.features.embedded import read_vectors
from pss_ops.features.retriever_inputs import read_input, searched_rows, write_rows
from pss_ops.manifests import BuiltIndex, IndexPartition, IndexSpec, RunContext, SearchCalibration
from pss_ops.search.calibration import MAX_EF_SEARCH, MAX_EFFORT_GROWTH, calibrate_search
from pss_ops.search.filters import candidates_per_query
from pss_ops.search.indexes import build_index as build_faiss_index
from pss_ops.search.indexes import stored_vectors, write_index, write_row_vectors
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def build_index(ctx: RunContext, partition: IndexPartition) -> BuiltIndex:
    """Build, serialise and write the index and its ids; the manifest is written last."""
    with timed(f"build_index {partition.name}") as timer:
        tables, blocks = [], []
        for piece in partition.slices:
            ids, vectors = read_vectors(piece.uri, piece.start, piece.stop)
            tables.append(ids)
            blocks.append(vectors)
        # One slice (the usual case) is used as read: a copy would hold the partition's vectors twice.
        vectors = blocks[0] if len(blocks) == 1 else np.vstack(blocks)
        del blocks
        index, spec, calibrations = _build_calibrated(ctx, partition, vectors)
        index_uri = layout.index_file(ctx.run_uri, partition.name)
        ids_uri = layout.index_ids(ctx.run_uri, partition.name)
        vectors_uri = None
        if stored_vectors(index) is None:
            vectors_uri = layout.index_vectors(ctx.run_uri, partition.name)
            write_row_vectors(vectors_uri, vectors)
        storage.write_parquet(ids_uri, pa.concat_tables(tables))
        write_index(index_uri, index)
        retriever_rows = {r.name: _build_retriever_rows(ctx, partition, r) for r in ctx.config.exact_retrievers}
    # Exact search finds the exact answer: nothing to measure.
    measured = 1.0 if spec.family == "flat" else calibrations[-1].ladder[-1][1] if calibrations else None
    result = BuiltIndex(
        number=partition.number,
        name=partition.name,
        scope=partition.scope,
        index_uri=index_uri,
        ids_uri=ids_uri,
        vectors_uri=vectors_uri,
        rows=int(index.ntotal),
        index=spec,
        seconds=timer.seconds,
        measured_recall=measured,
        calibrations=tuple(calibrations),
        retriever_rows=retriever_rows,
    )
    result.write(layout.index_manifest(ctx.run_uri, partition.name))
    log.info("build_index %s: %d vectors, %s, in %.1fs", partition.name, result.rows, spec.describe(), result.seconds)
    return result


def _build_calibrated(
    ctx: RunContext, partition: IndexPartition, vectors: np.ndarray
) -> tuple[faiss.Index, IndexSpec, list[SearchCalibration]]:
    """The plan's index, its effort calibrated with index.tuning; the next alternative when calibration hits its bound.

    Exact search needs no calibration. Without tuning the plan's index is built and searched as configured.
    """
    tuning = ctx.config.index.tuning
    seed = (tuning.seed if tuning is not None else 0) + partition.number
    if tuning is None:
        return build_faiss_index(vectors, partition.index, seed=seed), partition.index, []
    calibrations: list[SearchCalibration] = []
    candidates = [partition.index, *partition.alternatives]
    for number, spec in enumerate(candidates):
        index = build_faiss_index(vectors, spec, seed=seed)
        if spec.family == "flat":
            return index, spec, calibrations
        last = number == len(candidates) - 1
        calibration = calibrate_search(
            index,
            spec,
            vectors,
            k=ctx.config.k,
            # The query step's first fetch, plus the query itself (search.candidates: it searches fetch + 1).
            search_k=candidates_per_query(ctx.config) + 1,
            target_recall=tuning.target_recall,
            queries=tuning.sample_queries,
            seed=seed,
            # The last choice may go as far as it must; the others give way at their bound.
            max_effort=MAX_EF_SEARCH if last else spec.search_effort * MAX_EFFORT_GROWTH,
        )
        calibrations.append(calibration)
        effort, measured = calibration.ladder[-1]
        log.info(
            "build_index %s: %s: effort %d -> %d, recall@%d %.4f on %d of its rows (target %.4f)",
            partition.name,
            spec.describe(),
            spec.search_effort,
            effort,
            ctx.config.k,
            measured,
            calibration.queries,
            tuning.target_recall,
        )
        if calibration.met_target or last:
            return index, spec.model_copy(update={"search_effort": effort}), calibrations
        log.info("build_index %s: %s would need more than %d: the next choice", partition.name, spec.describe(), calibration.max_effort)
        del index
    raise AssertionError("unreachable: the last choice always returns")


def _build_retriever_rows(ctx: RunContext, partition: IndexPartition, retriever: ExactRetriever) -> str:
    """The partition's rows as an exact retriever searches them (TF-IDF with its scope's IDF, or unit vectors)."""
    blocks = [read_input(piece.retriever_inputs[retriever.name], piece.start, piece.stop) for piece in partition.slices]
    uri = layout.retriever_rows(ctx.run_uri, partition.name, retriever.name)
    write_rows(uri, searched_rows(retriever, blocks, partition.lexical_idf.get(retriever.name)))
    return uri
