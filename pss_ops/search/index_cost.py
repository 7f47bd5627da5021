"""What an index partition costs: its memory, and its CPU seconds predicted from a family's costs measured on a sample.

search.tuning measures the families (FamilyCost); this module scales them to a partition's size and chooses, per
scope, the cheapest family and partitioning within the memory budget.
"""

from __future__ import annotations

import math

from pss_ops.manifests import FamilyCost, IndexSpec, ScopeChoice
from pss_ops.search.indexes import (
    FLAT_COARSE_MAX_LISTS,
    IVF_MIN_ROWS,
    IVF_TRAIN_ITERATIONS,
    IVF_TRAIN_ROWS_PER_LIST,
    TWO_LEVEL_MIN_LISTS,
    coarse_quantizer_for,
    ivf_lists,
)

LINK_OVERHEAD = 1.1  # faiss HNSW: upper-level links and per-node bookkeeping over the 2*M level-0 links
PROCESS_BYTES = 512 << 20  # Python, faiss, pyarrow and pandas loaded in a step process
MIN_PARTITION_ROWS = 1_000


def row_bytes(spec: IndexSpec, dim: int) -> float:
    """Index memory per row: float32 vectors, plus an ivf's 8-byte id or a graph's 2*M int32 links (~10% more above)."""
    if spec.family == "hnsw":
        return 4 * dim + spec.hnsw_m * 2 * 4 * LINK_OVERHEAD
    return 4 * dim + (8 if spec.family == "ivf" else 0)


def hnsw_bytes(rows: int, dim: int, m: int) -> int:
    """Memory of an IndexHNSWFlat: float32 vectors plus 2*M int32 links per vector at level 0, ~10% more above."""
    return int(rows * row_bytes(IndexSpec(family="hnsw", hnsw_m=m), dim))


def partition_peak_bytes(rows: int, dim: int, spec: IndexSpec) -> int:
    """Peak memory of building one partition: the heaviest step per partition."""
    # build_index holds the index, its serialised copy and the bytes written (three index-sized buffers),
    # and the input vectors twice (the Arrow column and the stacked float32 matrix).
    return int(3 * rows * row_bytes(spec, dim)) + 2 * rows * dim * 4 + PROCESS_BYTES


def max_partition_rows(budget_bytes: int, dim: int, spec: IndexSpec) -> int:
    """The most rows one index partition may hold within the budget (0 if not even one fits)."""
    per_row = 3 * row_bytes(spec, dim) + 2 * dim * 4
    rows = max(0, int((budget_bytes - PROCESS_BYTES) / per_row))
    # partition_peak_bytes rounds down per partition, not per row: step back where the float guess overshoots.
    while rows and partition_peak_bytes(rows, dim, spec) > budget_bytes:
        rows -= 1
    return rows


def partitioning(scope_rows: int, max_rows: int) -> tuple[int, int]:
    """(partitions, rows of the largest) when plan_index balances scope_rows into pieces of at most max_rows."""
    count = max(1, math.ceil(scope_rows / max_rows))
    return count, math.ceil(scope_rows / count)


def spec_for_rows(cost: FamilyCost, rows: int) -> IndexSpec:
    """The family's setting for a partition of `rows`: an ivf gets lists of the same length as on the sample."""
    if cost.index.family != "ivf":
        return cost.index
    nlist = ivf_lists(rows)
    return cost.index.model_copy(update={"nlist": nlist, "coarse_quantizer": coarse_quantizer_for(nlist)})


def _ivf_dense_pairs(rows: int) -> tuple[float, float]:
    """(query-centroid comparisons per query, row-centroid comparisons per row built) of an ivf of `rows`.

    Building trains k-means on IVF_TRAIN_ROWS_PER_LIST rows per list for IVF_TRAIN_ITERATIONS rounds (in two levels
    past TWO_LEVEL_MIN_LISTS) and assigns every row to a list; a query first finds its lists. Past
    FLAT_COARSE_MAX_LISTS a graph finds them at a cost growing with their log only, taken as the cap's.
    """
    lists = ivf_lists(rows)
    compared = min(lists, FLAT_COARSE_MAX_LISTS)
    trained = min(rows, lists * IVF_TRAIN_ROWS_PER_LIST)
    per_training_row = 2 * math.sqrt(lists) if lists >= TWO_LEVEL_MIN_LISTS else lists
    return float(compared), (IVF_TRAIN_ITERATIONS * trained * per_training_row + rows * compared) / max(rows, 1)


def predicted_seconds(cost: FamilyCost, rows: int, queries: int) -> float:
    """Predicted CPU seconds to build one partition of `rows` and search it with `queries` queries.

    - flat: every query compares every row: the sample's cost per pair;
    - ivf: a query scans nprobe lists of constant length (the sample's cost, less its dense part) plus the dense
      products of finding its lists; building costs the sample's per row plus k-means training and assignment, all
      dense products priced at the sample's exact cost per pair;
    - hnsw: insertion and search both cost about log(size) per vector.
    """
    sample = max(cost.sample_rows, 2)
    if cost.index.family == "flat":
        return cost.exact_seconds_per_pair * queries * rows
    if cost.index.family == "hnsw":
        growth = math.log(max(rows, 2)) / math.log(sample)
        return (cost.build_seconds_per_row * rows + cost.search_seconds_per_query * queries) * growth
    pair = cost.exact_seconds_per_pair
    query_pairs, row_pairs = _ivf_dense_pairs(rows)
    sample_query_pairs, sample_row_pairs = _ivf_dense_pairs(sample)
    # What the sample's measurement spent outside the dense products; at least a quarter of it, as the dense part
    # is itself an estimate.
    scan = max(cost.search_seconds_per_query - sample_query_pairs * pair, cost.search_seconds_per_query / 4)
    add = max(cost.build_seconds_per_row - sample_row_pairs * pair, cost.build_seconds_per_row / 4)
    return rows * (add + row_pairs * pair) + queries * (scan + query_pairs * pair)


def choose_for_scope(families: list[FamilyCost], scope: str, rows: int, *, dim: int, budget: int, cap: int) -> ScopeChoice:
    """The cheapest predicted family for a scope of `rows` items, its partitioning within the budget, and the ranking.

    Every query of the scope searches every partition of it, so a scope split in P partitions is searched P times.
    Families predicted to miss the target rank after those that meet it.
    """
    ranked: list[tuple[bool, float, IndexSpec, int, int]] = []
    for cost in families:
        if cost.index.family == "ivf" and rows < IVF_MIN_ROWS:
            continue
        spec = spec_for_rows(cost, min(rows, cap))
        fits = min(max_partition_rows(budget, dim, spec), cap)
        if fits < min(MIN_PARTITION_ROWS, rows):
            continue
        count, part_rows = partitioning(rows, fits)
        spec = spec_for_rows(cost, part_rows)
        seconds = count * predicted_seconds(cost, part_rows, rows)
        ranked.append((cost.meets_target, seconds, spec, count, part_rows))
    if not ranked:
        smallest = min(MIN_PARTITION_ROWS, rows)
        need = partition_peak_bytes(smallest, dim, IndexSpec(family="flat"))
        raise ValueError(
            f"memory budget ({budget} bytes) is too small: an index partition of {smallest} rows of width {dim} needs about {need} bytes"
        )
    ranked.sort(key=lambda r: (not r[0], r[1]))
    _, seconds, spec, count, part_rows = ranked[0]
    alternatives = [r[2] for r in ranked[1:] if r[0] and r[3] == count and r[2].family != "flat"]
    return ScopeChoice(
        scope=scope,
        rows=rows,
        partitions=count,
        partition_rows=part_rows,
        index=spec,
        alternatives=() if spec.family == "flat" else (*alternatives, IndexSpec(family="flat")),
        predicted_cpu_seconds=round(seconds, 3),
        ranking=tuple((r[2].describe(), round(r[1], 3), r[0]) for r in ranked),
    )
