"""The search effort (HNSW efSearch, IVF nprobe) calibrated on a built index, as autofaiss does.

The tuner predicts recall at a partition's size from a sample, but the built index decides: HNSW recall at a fixed
efSearch keeps falling as the graph grows, and an inverted file's lists differ from the sample's. Here the
partition's own rows are the queries: exact top-`search_k` by inner product over the partition's rows, then the
index at the planned effort, raised rung by rung until recall@k (self excluded, ties counted) meets the target.
The effort is not raised past `max_effort`: a family that would need more is replaced by the next (build_index).
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from pss_ops.manifests import IndexSpec, SearchCalibration
from pss_ops.search.indexes import search
from pss_ops.search.tuning import EF_SEARCH_CHOICES, NPROBE_CHOICES, recall_at_k

log = logging.getLogger(__name__)

# Calibration may multiply the planned effort by at most this: past it, a query's cost would explode, and the next
# family in the tuner's ranking is built instead.
MAX_EFFORT_GROWTH = 8
# Without a plan to start from (an untuned config's index), the effort may rise to this.
MAX_EF_SEARCH = 4096


def effort_ladder(spec: IndexSpec, max_effort: int) -> list[int]:
    """The efforts tried, from the spec's: efSearch through the tuner's ladder, then doubling; nprobe likewise."""
    start = max(spec.search_effort, 1)
    choices = NPROBE_CHOICES if spec.family == "ivf" else EF_SEARCH_CHOICES
    rungs = [start, *(c for c in choices if start < c <= max_effort)]
    while rungs[-1] * 2 <= max_effort:
        rungs.append(rungs[-1] * 2)
    if spec.family == "ivf":
        rungs = [min(r, spec.nlist) for r in rungs]
    return list(dict.fromkeys(rungs))


def calibrate_search(
    index: faiss.Index,
    spec: IndexSpec,
    vectors: np.ndarray,
    *,
    k: int,
    search_k: int,
    target_recall: float,
    queries: int,
    seed: int,
    max_effort: int,
) -> SearchCalibration:
    """The smallest effort on the ladder whose recall@k over a sample of the index's own rows meets the target.

    `vectors` are the index's rows in its row order (searched in place, not copied). The last rung is the one kept.
    """
    started = time.perf_counter()
    rows = len(vectors)
    picks = np.sort(np.random.default_rng(seed).choice(rows, size=min(queries, rows), replace=False))
    sample = vectors[picks]  # queries x dim: the only copy made
    width = min(search_k, rows)
    # faiss.knn runs IndexFlatIP's exhaustive kernel on the array as it is (no index holding a second copy).
    exact, exact_ids = faiss.knn(sample, vectors, width, metric=faiss.METRIC_INNER_PRODUCT)

    def as_sample_ids(ids: np.ndarray) -> np.ndarray:
        # recall_at_k takes query i to be row i: self becomes i, other rows move past 0..queries-1, -1 stays.
        others = np.where(ids < 0, -1, rows + ids)
        return np.where(ids == picks[:, None], np.arange(len(picks))[:, None], others)

    exact_local = as_sample_ids(exact_ids)
    ladder: list[tuple[int, float]] = []
    measured = 0.0
    for effort in effort_ladder(spec, max_effort):
        found, found_ids = search(index, sample, width, effort)
        measured = recall_at_k(found, as_sample_ids(found_ids), exact, exact_local, k)
        ladder.append((effort, round(measured, 5)))
        if measured >= target_recall:
            break
    met = measured >= target_recall
    if not met:
        log.warning("%s: recall@%d %.4f at effort %d, short of %.4f", spec.describe(), k, measured, ladder[-1][0], target_recall)
    return SearchCalibration(
        index=spec,
        target_recall=target_recall,
        k=k,
        search_k=width,
        queries=len(picks),
        ladder=tuple(ladder),
        met_target=met,
        max_effort=max_effort,
        seconds=round(time.perf_counter() - started, 3),
    )
