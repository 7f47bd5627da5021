"""Duplicate groups: items the matcher links as one product, without chaining unlike items together.

Plain connected components over the pairs at or above the threshold (splink's clustering) chain: A~B and B~C
make {A, B, C} even when A and C are different products (a 4-pack between a 2-pack and an 8-pack). Here groups
grow by a linkage over all the pairs between them instead, as dedupe's hierarchical clustering does:

- pairs are taken strongest first; a pair at or above the threshold whose items are in different groups merges
  the two groups only if the scored pairs across them average at least the threshold (a low A~C vetoes A~B~C),
- and the search scored more than half of the cross pairs the post-filter allows: a pair it could have listed
  but did not (neither item had the other among its published candidates) is evidence the two are unlike. Pairs
  the rules forbid (two offers of one seller under `different: [seller]`) were never candidates and do not count.

bench/matching.py compares the two on both benchmarks.

A group keeps one id while its members do not change: the id is a hash of its sorted member ids, so tomorrow's
run gives the same id to the same group, and a new id to a group that gained or lost an item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

GROUP_COLUMNS = ("group_id", "item_id", "group_size", "weakest_link")
# How many of the pairs across two sets of items the run could have listed (the post-filter's rules allow).
Comparable = Callable[[Sequence[str], Sequence[str]], int]


def every_pair(a: Sequence[str], b: Sequence[str]) -> int:
    """Without attribute rules every cross pair could have been listed."""
    return len(a) * len(b)


def group_id(members: Iterable[str]) -> str:
    """dup- and 16 hex digits of sha256 over the sorted member ids (NUL-separated: ids may hold any other text)."""
    digest = hashlib.sha256("\0".join(sorted(members)).encode("utf-8")).hexdigest()
    return f"dup-{digest[:16]}"


def _undirected(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per unordered pair (a < b) with the higher probability of its two directions."""
    a, b = pairs["id_a"].astype(str).to_numpy(), pairs["id_b"].astype(str).to_numpy()
    low, high = np.where(a < b, a, b), np.where(a < b, b, a)
    frame = pd.DataFrame({"a": low, "b": high, "p": pairs["probability"].to_numpy(dtype=np.float64)})
    frame = frame[frame["a"] != frame["b"]]
    return frame.groupby(["a", "b"], sort=True, as_index=False)["p"].max()


_NONE = np.zeros(2)


def _linked(scored: np.ndarray, comparable: int, threshold: float) -> bool:
    """Whether two groups are one product: their scored cross pairs (sum, count) average at least the threshold, and
    the search scored most of the cross pairs the rules allow (an allowed pair it never listed is evidence against)."""
    total, count = float(scored[0]), float(scored[1])
    return count > 0 and total / count >= threshold and 2 * count > comparable


def linked_groups(
    pairs: pd.DataFrame, threshold: float, *, average_linkage: bool = True, comparable: Comparable = every_pair
) -> pd.DataFrame:
    """Groups of two or more items from scored pairs (id_a, id_b, probability), one row per member.

    Columns: group_id, item_id, group_size, weakest_link (the lowest probability among the group's scored
    internal pairs). average_linkage=False gives plain connected components over the pairs at or above the
    threshold, for comparison (bench/matching.py).
    """
    edges = _undirected(pairs)
    strong = edges[edges["p"] >= threshold].sort_values(["p", "a", "b"], ascending=[False, True, True], kind="stable")
    # Only items of some strong pair can join a group, so only pairs between two of them count towards a linkage.
    linkable = pd.unique(np.concatenate([strong["a"].to_numpy(), strong["b"].to_numpy()]))
    edges = edges[edges["a"].isin(linkable).to_numpy() & edges["b"].isin(linkable).to_numpy()]
    group: dict[str, int] = {}
    members: dict[int, list[str]] = {}
    # Sum and count of scored probabilities between two groups, kept for groups that share a scored pair.
    between: dict[int, dict[int, np.ndarray]] = {}

    def group_of(item: str) -> int:
        if item not in group:
            group[item] = len(group)
            members[group[item]] = [item]
            between[group[item]] = {}
        return group[item]

    if average_linkage:
        for a, b, p in edges.itertuples(index=False):
            ga, gb = group_of(a), group_of(b)
            between[ga][gb] = between[gb][ga] = np.array([p, 1.0])
    for a, b, _ in strong.itertuples(index=False):
        ga, gb = group_of(a), group_of(b)
        if ga == gb:
            continue
        if average_linkage and not _linked(between[ga].get(gb, _NONE), comparable(members[ga], members[gb]), threshold):
            continue
        keep, gone = (ga, gb) if len(members[ga]) >= len(members[gb]) else (gb, ga)
        for item in members[gone]:
            group[item] = keep
        members[keep].extend(members.pop(gone))
        if average_linkage:
            for other, total in between.pop(gone).items():
                between[other].pop(gone, None)
                if other != keep:
                    between[keep][other] = between[other][keep] = between[keep].get(other, _NONE) + total
            between[keep].pop(keep, None)
    rows = [(item, g) for g, items in members.items() if len(items) > 1 for item in items]
    if not rows:
        return pd.DataFrame({"group_id": [], "item_id": [], "group_size": [], "weakest_link": []}).astype(
            {"group_id": object, "item_id": object, "group_size": np.int32, "weakest_link": np.float64}
        )
    frame = pd.DataFrame(rows, columns=["item_id", "_group"])
    ids = {g: group_id(items) for g, items in members.items() if len(items) > 1}
    frame["group_id"] = frame["_group"].map(ids)
    frame["group_size"] = frame["_group"].map({g: len(members[g]) for g in ids}).astype(np.int32)
    # Weakest link: over the scored pairs with both items in one group.
    ga, gb = edges["a"].map(group), edges["b"].map(group)
    inside = edges[(ga == gb).to_numpy() & ga.isin(list(ids)).to_numpy()]
    weakest = inside.groupby(inside["a"].map(group))["p"].min()
    frame["weakest_link"] = frame["_group"].map(weakest).astype(np.float64)
    return frame.sort_values(["group_id", "item_id"], kind="stable").reset_index(drop=True)[list(GROUP_COLUMNS)]
