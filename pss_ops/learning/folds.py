"""Splitting pairs for training and evaluation: held-out query items, leak-free folds, positives from groups."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pss_ops.learning.pairs import PairSet, is_missing, item_rows, rows_of


def holdout_queries(queries: Iterable[str], *, holdout_fraction: float, seed: int) -> set[str]:
    """A seeded random round(fraction * n) of the distinct queries (at least one, never all, when 0 < fraction and n > 1)."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    distinct = sorted(set(queries))  # sorted: the split does not depend on row order
    if holdout_fraction == 0 or len(distinct) < 2:
        return set()
    count = min(max(1, round(holdout_fraction * len(distinct))), len(distinct) - 1)
    order = np.random.default_rng(seed).permutation(len(distinct))[:count]
    return {distinct[i] for i in order.tolist()}


def split_by_query(pairs: PairSet, *, holdout_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """(train, holdout) split by id_a: every pair of a query item lands on one side; row order is kept."""
    held = holdout_queries(pairs.id_a.tolist(), holdout_fraction=holdout_fraction, seed=seed)
    mask = np.fromiter((a in held for a in pairs.id_a.tolist()), dtype=bool, count=len(pairs))
    return pairs.take(~mask), pairs.take(mask)


def component_folds(
    pairs: PairSet, *, folds: int, groups: Mapping[str, Hashable | None] | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Cross-validation folds in which no item, and no group (e.g. WDC cluster_id), appears in two folds.

    Items joined by any pair, or sharing a non-null group, form one connected component; components are dealt,
    most pairs first (ties by their smallest item id, so the folds do not depend on the pairs' order), to the fold
    with the fewest pairs so far. Splitting by query item alone would leak: in WDC every offer of a product is paired
    with several others, so a held-out pair's items would also be in training.
    Returns each pair's fold and each item's fold (items only in groups included).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    items = sorted({*pairs.id_a.tolist(), *pairs.id_b.tolist(), *(groups or {})})
    row = item_rows(items)
    # Edges: every pair, and every grouped item to its group's first item (a star joins the group as a clique would).
    edges_a, edges_b = rows_of(row, pairs.id_a.tolist()).tolist(), rows_of(row, pairs.id_b.tolist()).tolist()
    first_of_group: dict[Hashable, int] = {}
    for item, group in sorted((groups or {}).items()):
        if is_missing(group) or group == "":
            continue
        edges_a.append(first_of_group.setdefault(group, row[item]))
        edges_b.append(row[item])
    graph = coo_matrix((np.ones(len(edges_a), dtype=np.int8), (edges_a, edges_b)), shape=(len(items), len(items)))
    count, component_of_item = connected_components(graph, directed=False)
    if count < folds:
        raise ValueError(f"only {count} connected components, fewer than {folds} folds")
    component_of_pair = component_of_item[rows_of(row, pairs.id_a.tolist())]
    pair_counts = np.bincount(component_of_pair, minlength=count)
    # Items are sorted, so a component's first row holds its smallest item id.
    smallest = np.full(count, len(items))
    np.minimum.at(smallest, component_of_item, np.arange(len(items)))
    load = [0] * folds
    fold_of_component = np.zeros(count, dtype=np.int64)
    for component in np.lexsort((smallest, -pair_counts)).tolist():
        target = min(range(folds), key=lambda f: (load[f], f))
        fold_of_component[component] = target
        load[target] += int(pair_counts[component])
    item_fold = {item: int(fold_of_component[component_of_item[row[item]]]) for item in items}
    return fold_of_component[component_of_pair], item_fold


def _triangle_pair(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode indices of the strict upper triangle of a size x size matrix (row-major) into (i, j), i < j."""
    index = index.astype(np.int64)
    n = np.int64(size)
    i = n - 2 - np.floor(np.sqrt(-8 * index + 4 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    # Float rounding can land one row off for huge groups; nudge to the row whose range holds the index.
    for _ in range(2):
        start = i * (2 * n - i - 1) // 2
        i = np.where(index < start, i - 1, np.where(index >= start + (n - 1 - i), i + 1, i))
    start = i * (2 * n - i - 1) // 2
    j = index - start + i + 1
    return i, j


def group_pairs(
    ids: Sequence[str],
    groups: Sequence[Hashable | None],
    *,
    task: str,
    max_pairs_per_group: int = 100,
    seed: int = 0,
) -> PairSet:
    """Positives between members of one group (e.g. a WDC cluster_id or a catalog's product-group column).

    Items whose group is null (None/NaN/"") pair with nobody. A group with more than max_pairs_per_group member pairs
    contributes a seeded uniform sample of them. id_a precedes id_b in ids order; groups come in order of first member.
    """
    if max_pairs_per_group < 1:
        raise ValueError(f"max_pairs_per_group must be at least 1, got {max_pairs_per_group}")
    ids = list(ids)
    if len(groups) != len(ids):
        raise ValueError(f"got {len(groups)} groups for {len(ids)} ids")
    item_rows(ids)
    members: dict[Hashable, list[int]] = {}
    for position, group in enumerate(groups):
        if is_missing(group) or group == "":
            continue
        members.setdefault(group, []).append(position)
    rng = np.random.default_rng(seed)
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    for rows in members.values():
        size = len(rows)
        count = size * (size - 1) // 2
        if count == 0:
            continue
        if count <= max_pairs_per_group:
            i, j = np.triu_indices(size, k=1)
        else:
            i, j = _triangle_pair(np.sort(rng.choice(count, size=max_pairs_per_group, replace=False)), size)
        member_rows = np.asarray(rows, dtype=np.int64)
        a_parts.append(member_rows[i])
        b_parts.append(member_rows[j])
    if not a_parts:
        return PairSet.empty(task)
    id_array = np.asarray(ids, dtype=object)
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    return PairSet(task, id_array[a], id_array[b], np.ones(len(a), dtype=np.int8))
