"""Index tuning to a recall target under a memory budget, by measuring HNSW on a sample (like autofaiss).

The budget bounds the rows of one index partition; larger partitions are preferred, since every query
searches every partition of its scope and the merge grows with their number. For each HNSW setting
(M, efConstruction) two nested samples are indexed, recall@k against exact inner-product search is
measured on the same queries for a ladder of efSearch values, and the recall at the real partition
size is extrapolated from the two (HNSW misses grow with the log of the index size). The cheapest
setting whose predicted recall meets the target wins; its cost is the measured CPU time of building
and searching, scaled to the scope.
"""

from __future__ import annotations

import logging
import math
import time

import faiss
import numpy as np

from pss_ops.config import IndexTuningConfig, parse_memory
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import EfCalibration, EmbeddedPartition, IndexTuning, TuningTrial
from pss_ops.quality.recall import recall_with_ties
from pss_ops.search.hnsw import build_hnsw, search_hnsw

log = logging.getLogger(__name__)

# (M, efConstruction) pairs tried. Clustered data needs efConstruction well above faiss's default 40 for
# the graph to link clusters at all (recall then stalls near 0.99 whatever efSearch is).
BUILD_CHOICES: tuple[tuple[int, int], ...] = ((16, 100), (32, 100), (32, 200))
EF_SEARCH_CHOICES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SMALL_SAMPLE_DIVISOR = 4  # the second, nested sample: the pair measures how recall falls with size
LINK_OVERHEAD = 1.1  # faiss HNSW: upper-level links and per-node bookkeeping over the 2*M level-0 links
PROCESS_BYTES = 512 << 20  # Python, faiss, pyarrow and pandas loaded in a step process
MIN_PARTITION_ROWS = 1_000
MAX_EF_SEARCH = 4096  # calibration's ceiling: past it, HNSW search nears brute force in cost


def hnsw_bytes(rows: int, dim: int, m: int) -> int:
    """Memory of an IndexHNSWFlat: float32 vectors plus 2*M int32 links per vector at level 0, ~10% more above."""
    return int(rows * (4 * dim + m * 2 * 4 * LINK_OVERHEAD))


def partition_peak_bytes(rows: int, dim: int, m: int) -> int:
    """Peak memory of building one partition: the heaviest step per partition."""
    # build_index holds the index, its serialised copy and the bytes written (three index-sized buffers),
    # and the input vectors twice (the Arrow column and the stacked float32 matrix).
    return 3 * hnsw_bytes(rows, dim, m) + 2 * rows * dim * 4 + PROCESS_BYTES


def max_partition_rows(budget_bytes: int, dim: int, m: int) -> int:
    """The most rows one index partition may hold within the budget (0 if not even one fits)."""
    per_row = 3 * (4 * dim + m * 2 * 4 * LINK_OVERHEAD) + 2 * dim * 4
    rows = max(0, int((budget_bytes - PROCESS_BYTES) / per_row))
    # partition_peak_bytes rounds down per partition, not per row: step back where the float guess overshoots.
    while rows and partition_peak_bytes(rows, dim, m) > budget_bytes:
        rows -= 1
    return rows


def partitioning(scope_rows: int, max_rows: int) -> tuple[int, int]:
    """(partitions, rows of the largest) when plan_index balances scope_rows into pieces of at most max_rows."""
    count = max(1, math.ceil(scope_rows / max_rows))
    return count, math.ceil(scope_rows / count)


def sample_scope(embedded: list[EmbeddedPartition], rows: int, seed: int) -> tuple[str, int, np.ndarray]:
    """(scope, its rows, a uniform sample of its vectors) for the largest scope, read one partition at a time."""
    sizes: dict[str, int] = {}
    for part in embedded:
        sizes[part.scope] = sizes.get(part.scope, 0) + part.rows
    scope = max(sorted(sizes), key=lambda s: sizes[s])
    members = [p for p in embedded if p.scope == scope]
    total = sizes[scope]
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(rows, total), replace=False))
    blocks, offset = [], 0
    for part in members:
        local = picks[(picks >= offset) & (picks < offset + part.rows)] - offset
        offset += part.rows
        if len(local):
            blocks.append(read_vectors(part.uri)[1][local])
    # Shuffled, so the first rows (the small sample and the queries) are not from the first partitions only.
    sample = np.vstack(blocks)[np.random.default_rng(seed + 1).permutation(len(picks))]
    return scope, total, np.ascontiguousarray(sample)


def recall_at_k(found: np.ndarray, found_ids: np.ndarray, exact: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Recall@k of in-index queries (query i is row i), self excluded, ties at the k-th exact score counted as hits."""

    def others(scores: np.ndarray, ids: np.ndarray, row: int) -> np.ndarray:
        return scores[(ids != row) & (ids >= 0)][:k]

    rows = range(len(found))
    return recall_with_ties((others(found[r], found_ids[r], r) for r in rows), (others(exact[r], exact_ids[r], r) for r in rows))


class _Sampled:
    """One trial HNSW index on a sample, with exact answers for its first `queries` rows."""

    def __init__(self, vectors: np.ndarray, queries: int, m: int, ef_construction: int, search_k: int, k: int) -> None:
        self.vectors, self.queries, self.search_k, self.k = vectors, queries, search_k, k
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        self.exact, self.exact_ids = flat.search(vectors[:queries], k + 1)
        # CPU seconds over all threads: wall time would measure whatever else shares the machine.
        started = time.process_time()
        self.index = build_hnsw(vectors, m=m, ef_construction=ef_construction)
        self.build_seconds_per_row = (time.process_time() - started) / len(vectors)

    def measure(self, ef: int) -> tuple[float, float]:
        """(recall@k, seconds per query) at this efSearch, searched as the query step searches."""
        started = time.process_time()
        found, found_ids = search_hnsw(self.index, self.vectors[: self.queries], self.search_k, ef)
        seconds = (time.process_time() - started) / self.queries
        return recall_at_k(found, found_ids, self.exact, self.exact_ids, self.k), seconds


def _predict(recall_small: float, rows_small: int, recall_large: float, rows_large: int, rows: int) -> float:
    """Recall at `rows`, with misses linear in log(size) through the two measurements (never falling with size)."""
    if rows_large <= rows_small:
        return recall_large
    slope = max(0.0, (recall_small - recall_large) / math.log(rows_large / rows_small))
    return float(min(1.0, max(0.0, recall_large - slope * math.log(max(rows, 1) / rows_large))))


def tune_index(
    sample: np.ndarray,
    *,
    scope: str,
    scope_rows: int,
    k: int,
    candidates_per_query: int,
    tuning: IndexTuningConfig,
) -> IndexTuning:
    """Measure every BUILD_CHOICES × EF_SEARCH_CHOICES setting on the sample and choose the cheapest meeting the target."""
    started = time.perf_counter()
    budget = parse_memory(tuning.memory_budget)
    dim = sample.shape[1]
    fits = {m: max_partition_rows(budget, dim, m) for m, _ in BUILD_CHOICES}
    smallest = min(m for m, _ in BUILD_CHOICES)
    if fits[smallest] < min(MIN_PARTITION_ROWS, scope_rows):
        need = partition_peak_bytes(min(MIN_PARTITION_ROWS, scope_rows), dim, smallest)
        raise ValueError(
            f"memory budget {tuning.memory_budget!r} ({budget} bytes) is too small: an index partition of "
            f"{min(MIN_PARTITION_ROWS, scope_rows)} rows of width {dim} with HNSW M={smallest} needs about {need} bytes"
        )
    # The query step searches k*multiplier candidates plus the query itself.
    search_k = candidates_per_query + 1
    efs = sorted({max(ef, search_k) for ef in EF_SEARCH_CHOICES})
    rows_large = len(sample)
    rows_small = max(rows_large // SMALL_SAMPLE_DIVISOR, min(rows_large, 2 * k + 2))
    queries = min(tuning.sample_queries, rows_small)

    trials: list[TuningTrial] = []
    for m, ef_construction in BUILD_CHOICES:
        if fits[m] < min(MIN_PARTITION_ROWS, scope_rows):
            continue
        count, part_rows = partitioning(scope_rows, fits[m])
        small = _Sampled(sample[:rows_small], queries, m, ef_construction, search_k, k)
        large = _Sampled(sample, queries, m, ef_construction, search_k, k) if rows_large > rows_small else small
        # HNSW insertion and search both cost about log(size) per vector.
        growth = math.log(max(part_rows, 2)) / math.log(max(rows_large, 2))
        for ef in efs:
            recall_small = small.measure(ef)[0]
            recall_large, per_query = large.measure(ef)
            predicted = _predict(recall_small, rows_small, recall_large, rows_large, part_rows)
            seconds = (large.build_seconds_per_row + per_query * count) * scope_rows * growth
            trials.append(
                TuningTrial(
                    hnsw_m=m,
                    ef_construction=ef_construction,
                    ef_search=ef,
                    partition_size=fits[m] if fits[m] < scope_rows else scope_rows,
                    partitions=count,
                    recall_small=round(recall_small, 5),
                    recall_sample=round(recall_large, 5),
                    predicted_recall=round(predicted, 5),
                    build_seconds_per_row=large.build_seconds_per_row,
                    search_seconds_per_query=per_query,
                    estimated_cpu_seconds=round(seconds, 3),
                    meets_target=predicted >= tuning.target_recall,
                )
            )
            if trials[-1].meets_target:
                break  # a larger efSearch only costs more for this (M, efConstruction)
    meeting = [t for t in trials if t.meets_target]
    if meeting:
        best = min(meeting, key=lambda t: (t.estimated_cpu_seconds, t.partitions))
    else:
        best = max(trials, key=lambda t: (t.predicted_recall, -t.estimated_cpu_seconds))
        log.warning(
            "index tuning: no setting is predicted to reach recall %.4f; the best predicts %.4f",
            tuning.target_recall,
            best.predicted_recall,
        )
    result = IndexTuning(
        target_recall=tuning.target_recall,
        memory_budget=tuning.memory_budget,
        memory_budget_bytes=budget,
        k=k,
        candidates_per_query=candidates_per_query,
        hnsw_m=best.hnsw_m,
        ef_construction=best.ef_construction,
        ef_search=best.ef_search,
        partition_size=best.partition_size,
        partition_peak_bytes=partition_peak_bytes(partitioning(scope_rows, best.partition_size)[1], dim, best.hnsw_m),
        measured_recall=best.recall_sample,
        predicted_recall=best.predicted_recall,
        met_target=best.meets_target,
        sample_scope=scope,
        scope_rows=scope_rows,
        sample_rows=rows_large,
        sample_queries=queries,
        trials=tuple(trials),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "index tuning: M=%d efConstruction=%d efSearch=%d, %d rows per partition; "
        "recall@%d %.4f on %d sampled rows, %.4f predicted (target %.4f)",
        result.hnsw_m,
        result.ef_construction,
        result.ef_search,
        result.partition_size,
        k,
        result.measured_recall,
        result.sample_rows,
        result.predicted_recall,
        result.target_recall,
    )
    return result


def calibrate_ef_search(
    index: faiss.IndexHNSWFlat,
    vectors: np.ndarray,
    *,
    start_ef: int,
    k: int,
    search_k: int,
    target_recall: float,
    queries: int,
    seed: int,
    max_ef: int = MAX_EF_SEARCH,
) -> EfCalibration:
    """The efSearch that meets the target on this built index, measured on a sample of its own rows (as autofaiss).

    The tuner predicts recall at the partition's size from samples, but HNSW recall at a fixed efSearch
    keeps falling as the index grows, so the prediction can fall short on the real index. Here the
    partition's own rows are the queries: exact top-`search_k` by inner product over `vectors` (the
    index's rows, in its order; searched in place, not copied), then the HNSW index at efSearch =
    start_ef, doubled until recall@k (self excluded, ties counted) meets the target or max_ef is
    reached. The index's efSearch is left at the value returned.
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
    ef, measured = max(start_ef, 1), 0.0
    while True:
        found, found_ids = search_hnsw(index, sample, width, ef)
        measured = recall_at_k(found, as_sample_ids(found_ids), exact, exact_local, k)
        ladder.append((ef, round(measured, 5)))
        if measured >= target_recall or ef >= max_ef:
            break
        ef = min(ef * 2, max_ef)
    met = measured >= target_recall
    if not met:
        log.warning("efSearch calibration: recall@%d %.4f at efSearch %d, short of %.4f", k, measured, ef, target_recall)
    return EfCalibration(
        planned_ef_search=start_ef,
        target_recall=target_recall,
        k=k,
        search_k=width,
        queries=len(picks),
        ladder=tuple(ladder),
        met_target=met,
        seconds=round(time.perf_counter() - started, 3),
    )
