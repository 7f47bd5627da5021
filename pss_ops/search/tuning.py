"""Index tuning to a recall target under a memory budget, by measuring each index family on a sample (like autofaiss).

The job is a batch self-join: every item queries its scope's index once. Which family is cheapest depends on the
scope's size: exact search for small scopes, an inverted file (search.indexes) for large ones, a graph where it
measures cheaper. On a sample of the largest scope the tuner measures, per family, the cheapest setting meeting the
recall target (recall@k against exact search, the sample's rows as queries) and its CPU cost per row built and per
query searched. From those it predicts each scope's cost, partitions included, and picks the cheapest family that
meets the target within the memory budget. The ranking is kept: when calibration on a built index would have to
raise the search effort past its bound, build_index builds the next family instead (search.calibration).

Sampling costs time too, so the expensive measurement (graph builds) is skipped when a lower bound on the graph's
cost (its build alone, measured on a small sample) already exceeds the best family measured.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import faiss
import numpy as np

from pss_ops.config import IndexTuningConfig, parse_memory
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import EmbeddedPartition, FamilyCost, IndexSpec, IndexTuning, TuningTrial
from pss_ops.quality.recall import recall_with_ties
from pss_ops.search.index_cost import (
    MIN_PARTITION_ROWS,
    choose_for_scope,
    max_partition_rows,
    partition_peak_bytes,
    predicted_seconds,
)
from pss_ops.search.indexes import IVF_MIN_ROWS, build_index, coarse_quantizer_for, ivf_lists, search

log = logging.getLogger(__name__)

# (M, efConstruction) pairs tried. Clustered data needs efConstruction well above faiss's default 40 for
# the graph to link clusters at all (recall then stalls near 0.99 whatever efSearch is).
BUILD_CHOICES: tuple[tuple[int, int], ...] = ((16, 100), (32, 100), (32, 200))
EF_SEARCH_CHOICES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Fine steps: a query's cost grows with nprobe in proportion, so a coarse ladder overshoots the target's cost.
NPROBE_CHOICES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128)
SMALL_SAMPLE_DIVISOR = 4  # the second, nested sample: the pair measures how recall falls with size
# Rows of the small sample whose graph build bounds the graph family's cost from below.
GRAPH_PROBE_ROWS = 3_000
# Below this many predicted CPU seconds for the best family measured, measuring a graph would cost more than it
# could save: it is not measured.
GRAPH_WORTH_SECONDS = 5.0


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


def _predict(recall_small: float, rows_small: int, recall_large: float, rows_large: int, rows: int) -> float:
    """Recall at `rows`, with misses linear in log(size) through the two measurements (never falling with size)."""
    if rows_large <= rows_small:
        return recall_large
    slope = max(0.0, (recall_small - recall_large) / math.log(rows_large / rows_small))
    return float(min(1.0, max(0.0, recall_large - slope * math.log(max(rows, 1) / rows_large))))


class _Truth:
    """The sample with exact answers for its first `queries` rows, and what exact search of it cost."""

    def __init__(self, vectors: np.ndarray, queries: int, k: int) -> None:
        self.vectors, self.queries, self.k = vectors, queries, k
        started = time.process_time()
        self.scores, self.ids = faiss.knn(vectors[:queries], vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        # CPU seconds over all threads: wall time would measure whatever else shares the machine.
        self.seconds_per_query = (time.process_time() - started) / queries
        self.seconds_per_pair = self.seconds_per_query / len(vectors)

    def recall(self, index: faiss.Index, effort: int, search_k: int) -> tuple[float, float]:
        """(recall@k, CPU seconds per query) of the index at this effort, searched as the query step searches."""
        started = time.process_time()
        found, found_ids = search(index, self.vectors[: self.queries], search_k, effort)
        seconds = (time.process_time() - started) / self.queries
        return recall_at_k(found, found_ids, self.scores, self.ids, self.k), seconds


def _timed_build(vectors: np.ndarray, spec: IndexSpec, seed: int) -> tuple[faiss.Index, float]:
    started = time.process_time()
    index = build_index(vectors, spec, seed=seed)
    return index, (time.process_time() - started) / len(vectors)


def _measure_exact(truth: _Truth) -> FamilyCost:
    return FamilyCost(
        index=IndexSpec(family="flat"),
        recall_sample=1.0,
        predicted_recall=1.0,
        build_seconds_per_row=0.0,
        search_seconds_per_query=truth.seconds_per_query,
        sample_rows=len(truth.vectors),
        exact_seconds_per_pair=truth.seconds_per_pair,
        meets_target=True,
    )


def _record(
    truth: _Truth,
    tried: IndexSpec,
    recall: float,
    predicted: float,
    build_per_row: float,
    per_query: float,
    target: float,
    trials: list[TuningTrial],
) -> FamilyCost:
    """One setting measured on the sample: appended to the trials, and returned as its family's cost."""
    trials.append(
        TuningTrial(
            index=tried,
            sample_rows=len(truth.vectors),
            recall_sample=round(recall, 5),
            predicted_recall=round(predicted, 5),
            build_seconds_per_row=build_per_row,
            search_seconds_per_query=per_query,
            meets_target=predicted >= target,
        )
    )
    return FamilyCost(
        index=tried,
        recall_sample=round(recall, 5),
        predicted_recall=round(predicted, 5),
        build_seconds_per_row=build_per_row,
        search_seconds_per_query=per_query,
        sample_rows=len(truth.vectors),
        exact_seconds_per_pair=truth.seconds_per_pair,
        meets_target=predicted >= target,
    )


def _measure_ivf(truth: _Truth, search_k: int, target: float, scope_rows: int, seed: int, trials: list[TuningTrial]) -> FamilyCost | None:
    """The smallest nprobe predicted to meet the target at the scope's size, on ivf indexes of the sample.

    Lists keep their length as the partition grows, so a query scans as many rows at the same nprobe; recall at a
    fixed nprobe still falls with size on real data (a sample is sparser than the catalog). As for graphs, two nested
    samples are measured and recall at the scope's size extrapolated from the pair; calibration on the built
    index checks the prediction.
    """
    rows = len(truth.vectors)
    if rows < IVF_MIN_ROWS:
        return None
    rows_small = max(rows // SMALL_SAMPLE_DIVISOR, IVF_MIN_ROWS)
    small_truth = _Truth(truth.vectors[:rows_small], min(truth.queries, rows_small), truth.k) if rows_small < rows else truth

    small_index, _, _ = _built_ivf(small_truth, seed)
    index, spec, build_per_row = _built_ivf(truth, seed)
    best: FamilyCost | None = None
    for nprobe in [n for n in NPROBE_CHOICES if n <= spec.nlist]:
        recall_small = small_truth.recall(small_index, nprobe, search_k)[0]
        recall, per_query = truth.recall(index, nprobe, search_k)
        predicted = _predict(recall_small, rows_small, recall, rows, scope_rows)
        tried = spec.model_copy(update={"search_effort": nprobe})
        best = _record(truth, tried, recall, predicted, build_per_row, per_query, target, trials)
        if best.meets_target:
            break
    return best


def _built_ivf(sample: _Truth, seed: int) -> tuple[faiss.Index, IndexSpec, float]:
    """An ivf index of the sample with lists of IVF_LIST_ROWS rows, and its build's CPU seconds per row."""
    lists = ivf_lists(len(sample.vectors))
    spec = IndexSpec(family="ivf", nlist=lists, coarse_quantizer=coarse_quantizer_for(lists))
    index, per_row = _timed_build(sample.vectors, spec, seed)
    return index, spec, per_row


def _measure_hnsw(
    truth: _Truth, search_k: int, target: float, scope_rows: int, bound: float, trials: list[TuningTrial]
) -> FamilyCost | None:
    """The cheapest (M, efConstruction, efSearch) predicted to meet the target at the scope's size, if it can win.

    A graph of the sample's first GRAPH_PROBE_ROWS rows at the cheapest setting is built first: its build cost per
    row, scaled to the scope, bounds the family's cost from below. When that alone exceeds `bound` (the best family
    measured so far), the grid is not measured: that would cost more sampling time than the choice could save.
    """
    if bound < GRAPH_WORTH_SECONDS:
        log.info("index tuning: HNSW not measured: the best family measured needs %.1f CPU s in all", bound)
        return None
    rows = len(truth.vectors)
    m, ef_construction = BUILD_CHOICES[0]
    probe_rows = min(rows, GRAPH_PROBE_ROWS)
    _, probe_per_row = _timed_build(truth.vectors[:probe_rows], IndexSpec(family="hnsw", hnsw_m=m, ef_construction=ef_construction), 0)
    lower_bound = probe_per_row * scope_rows * math.log(max(scope_rows, 2)) / math.log(max(probe_rows, 2))
    if lower_bound > bound:
        log.info(
            "index tuning: HNSW not measured: its build alone (%.0f CPU s predicted) exceeds the best family (%.0f)", lower_bound, bound
        )
        return None
    rows_small = max(rows // SMALL_SAMPLE_DIVISOR, min(rows, 2 * truth.k + 2))
    small_truth = _Truth(truth.vectors[:rows_small], min(truth.queries, rows_small), truth.k)
    efs = sorted({max(ef, search_k) for ef in EF_SEARCH_CHOICES})
    best: FamilyCost | None = None
    for m, ef_construction in BUILD_CHOICES:
        spec = IndexSpec(family="hnsw", hnsw_m=m, ef_construction=ef_construction)
        small, _ = _timed_build(small_truth.vectors, spec, 0)
        large, build_per_row = _timed_build(truth.vectors, spec, 0) if rows > rows_small else (small, 0.0)
        for ef in efs:
            recall_small = small_truth.recall(small, ef, search_k)[0]
            recall_large, per_query = truth.recall(large, ef, search_k)
            predicted = _predict(recall_small, rows_small, recall_large, rows, scope_rows)
            tried = spec.model_copy(update={"search_effort": ef})
            cost = _record(truth, tried, recall_large, predicted, build_per_row, per_query, target, trials)
            if best is None or (cost.meets_target, -predicted_seconds(cost, scope_rows, scope_rows)) > (
                best.meets_target,
                -predicted_seconds(best, scope_rows, scope_rows),
            ):
                best = cost
            if cost.meets_target:
                break  # a larger efSearch only costs more for this (M, efConstruction)
    return best


def tune_index(
    sample: np.ndarray,
    *,
    scope: str,
    scope_rows: int,
    scope_sizes: Mapping[str, int] | None = None,
    k: int,
    candidates_per_query: int,
    tuning: IndexTuningConfig,
) -> IndexTuning:
    """Measure every family on the sample of the largest scope and choose, per scope, the cheapest meeting the target."""
    started = time.perf_counter()
    budget = parse_memory(tuning.memory_budget)
    dim = sample.shape[1]
    sizes = dict(scope_sizes) if scope_sizes else {scope: scope_rows}
    cap = max(sizes.values())
    smallest = min(MIN_PARTITION_ROWS, scope_rows)
    if max_partition_rows(budget, dim, IndexSpec(family="flat")) < smallest:
        need = partition_peak_bytes(smallest, dim, IndexSpec(family="flat"))
        raise ValueError(
            f"memory budget {tuning.memory_budget!r} ({budget} bytes) is too small: an index partition of "
            f"{smallest} rows of width {dim} needs about {need} bytes"
        )
    # The query step searches k*multiplier candidates plus the query itself.
    search_k = candidates_per_query + 1
    queries = min(tuning.sample_queries, len(sample))
    truth = _Truth(sample, queries, k)
    trials: list[TuningTrial] = []
    families = [_measure_exact(truth)]
    ivf = _measure_ivf(truth, search_k, tuning.target_recall, scope_rows, tuning.seed, trials)
    if ivf is not None:
        families.append(ivf)
    best_so_far = min(predicted_seconds(f, scope_rows, scope_rows) for f in families if f.meets_target)
    graph = _measure_hnsw(truth, search_k, tuning.target_recall, scope_rows, best_so_far, trials)
    if graph is not None:
        families.append(graph)
    scopes = tuple(choose_for_scope(families, name, rows, dim=dim, budget=budget, cap=cap) for name, rows in sorted(sizes.items()))
    largest = next(c for c in scopes if c.scope == scope)
    chosen_cost = next(f for f in families if f.index.family == largest.index.family)
    result = IndexTuning(
        target_recall=tuning.target_recall,
        memory_budget=tuning.memory_budget,
        memory_budget_bytes=budget,
        k=k,
        candidates_per_query=candidates_per_query,
        sample_scope=scope,
        scope_rows=scope_rows,
        sample_rows=len(sample),
        sample_queries=queries,
        families=tuple(families),
        scopes=scopes,
        trials=tuple(trials),
        chosen=largest.index,
        measured_recall=chosen_cost.recall_sample,
        predicted_recall=chosen_cost.predicted_recall,
        met_target=chosen_cost.meets_target,
        seconds=round(time.perf_counter() - started, 3),
    )
    for choice in scopes:
        log.info(
            "index tuning: scope %s (%d rows): %s in %d partition(s), %.1f CPU s predicted; ranking %s",
            choice.scope,
            choice.rows,
            choice.index.describe(),
            choice.partitions,
            choice.predicted_cpu_seconds,
            "; ".join(f"{name} {seconds:.1f}s{'' if meets else ' (misses target)'}" for name, seconds, meets in choice.ranking),
        )
    if not result.met_target:
        log.warning(
            "index tuning: no setting is predicted to reach recall %.4f; the best predicts %.4f",
            tuning.target_recall,
            result.predicted_recall,
        )
    return result
