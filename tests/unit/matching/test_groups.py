"""Duplicate groups: chaining is broken, ids are stable, rule-forbidden pairs do not count against a merge."""

from __future__ import annotations

import pandas as pd

from pss_ops.matching.groups import group_id, linked_groups


def _pairs(*rows: tuple[str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id_a", "id_b", "probability"])


def _members(groups: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(m) for _, m in groups.groupby("group_id")["item_id"]}


def test_a_chain_through_one_item_is_broken() -> None:
    # A 2-pack matches a 4-pack's listing, which matches an 8-pack's; the 2-pack and the 8-pack are scored apart.
    chain = _pairs(("a", "b", 0.95), ("b", "c", 0.93), ("a", "c", 0.05))
    assert _members(linked_groups(chain, 0.9, average_linkage=False)) == {frozenset("abc")}
    assert _members(linked_groups(chain, 0.9)) == {frozenset("ab")}
    # Never listing each other, though the rules allow it, is evidence too.
    unscored = _pairs(("a", "b", 0.95), ("b", "c", 0.93))
    assert _members(linked_groups(unscored, 0.9)) == {frozenset("ab")}


def test_true_groups_still_form_and_report_their_weakest_link() -> None:
    clique = _pairs(("a", "b", 0.97), ("b", "c", 0.95), ("a", "c", 0.91), ("c", "a", 0.88), ("x", "y", 0.99), ("y", "z", 0.2))
    groups = linked_groups(clique, 0.9)
    assert _members(groups) == {frozenset("abc"), frozenset("xy")}
    by_item = groups.set_index("item_id")
    assert by_item.loc["a", "group_size"] == 3 and by_item.loc["x", "group_size"] == 2
    # The higher of a pair's two directions speaks for it (a-c: 0.91, not 0.88).
    assert by_item.loc["a", "weakest_link"] == 0.91 and by_item.loc["y", "weakest_link"] == 0.99
    assert "z" not in by_item.index


def test_pairs_the_rules_forbid_do_not_count_against_a_merge() -> None:
    # Two offers of one seller (a1, a2) are never candidates of each other under different: [seller].
    pairs = _pairs(("a1", "g1", 0.95), ("a2", "g1", 0.92))
    assert _members(linked_groups(pairs, 0.9)) == {frozenset({"a1", "g1"})}

    def cross_seller(left: list[str], right: list[str]) -> int:
        return sum(x[0] != y[0] for x in left for y in right)

    assert _members(linked_groups(pairs, 0.9, comparable=cross_seller)) == {frozenset({"a1", "a2", "g1"})}


def test_group_ids_are_stable_while_members_are() -> None:
    today = linked_groups(_pairs(("a", "b", 0.97), ("c", "d", 0.95)), 0.9)
    # Tomorrow: the pairs arrive in another order and direction with other scores; one group gains an item.
    tomorrow = linked_groups(_pairs(("d", "c", 0.91), ("b", "a", 0.99), ("d", "e", 0.96), ("c", "e", 0.94)), 0.9)
    ids_today = dict(zip(today["item_id"], today["group_id"]))
    ids_tomorrow = dict(zip(tomorrow["item_id"], tomorrow["group_id"]))
    assert ids_today["a"] == ids_tomorrow["a"] == group_id(["b", "a"])
    assert ids_today["c"] != ids_tomorrow["c"] == group_id(["c", "d", "e"])
    assert linked_groups(_pairs(("a", "b", 0.5)), 0.9).empty
