"""Splitting pairs for training and evaluation: held-out query items, leak-free folds, positives from groups."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from pss_ops.learning.pairs import PairSet, is_missing, item_rows


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
    largest first, to the fold with the fewest pairs so far. Splitting by query item alone would leak: in WDC
    every offer of a product is paired with several others, so a held-out pair's items would also be in training.
    Returns each pair's fold and each item's fold (items only in groups included).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    # A union-find rather than scipy.sparse.csgraph.connected_components: equal-sized components are dealt in the
    # order of their union-find root's id, and bench/ablation.py's WDC folds (and so BENCHMARKS.md) depend on it.
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in zip(pairs.id_a.tolist(), pairs.id_b.tolist()):
        parent[find(a)] = find(b)
    first_of_group: dict[Hashable, str] = {}
    for item, group in (groups or {}).items():
        find(item)
        if is_missing(group) or group == "":
            continue
        if group in first_of_group:
            parent[find(item)] = find(first_of_group[group])
        else:
            first_of_group[group] = item
    component_of_pair = [find(a) for a in pairs.id_a.tolist()]
    sizes: dict[str, int] = {}
    for component in component_of_pair:
        sizes[component] = sizes.get(component, 0) + 1
    for item in list(parent):
        sizes.setdefault(find(item), 0)
    if len(sizes) < folds:
        raise ValueError(f"only {len(sizes)} connected components, fewer than {folds} folds")
    load = [0] * folds
    fold_of_component: dict[str, int] = {}
    # Largest first, ties by component id: deterministic for the same pairs.
    for component, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        target = min(range(folds), key=lambda f: (load[f], f))
        fold_of_component[component] = target
        load[target] += size
    pair_fold = np.array([fold_of_component[c] for c in component_of_pair], dtype=np.int64)
    item_fold = {item: fold_of_component[find(item)] for item in parent}
    return pair_fold, item_fold


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
