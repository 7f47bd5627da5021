"""Splits and folds: held-out query items, leak-free WDC folds, positives from groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pss_ops.learning.folds import component_folds, group_pairs, split_by_query
from pss_ops.learning.mining import random_negatives
from pss_ops.learning.pairs import PairSet
from tests.conftest import ROOT
from tests.unit.learning.ag_sample import sample

# --- split_by_query -----------------------------------------------------------------------------------------


def test_split_by_query_keeps_each_query_on_one_side() -> None:
    s = sample()
    pairs = s.truth.concat(random_negatives(s.truth, s.ids, ratio=3, seed=1))
    train, holdout = split_by_query(pairs, holdout_fraction=0.25, seed=5)
    assert len(train) + len(holdout) == len(pairs)
    assert not set(train.id_a) & set(holdout.id_a)
    assert sorted(train.rows() + holdout.rows()) == sorted(pairs.rows())
    queries = len(set(pairs.id_a))
    assert len(set(holdout.id_a)) == round(0.25 * queries)
    assert split_by_query(pairs, holdout_fraction=0.25, seed=5)[1].rows() == holdout.rows()
    # Row order does not change which queries are held out.
    reversed_pairs = pairs.take(np.arange(len(pairs))[::-1])
    assert set(split_by_query(reversed_pairs, holdout_fraction=0.25, seed=5)[1].id_a) == set(holdout.id_a)
    assert set(split_by_query(pairs, holdout_fraction=0.25, seed=6)[1].id_a) != set(holdout.id_a)
    train, holdout = split_by_query(pairs, holdout_fraction=0.0, seed=5)
    assert len(holdout) == 0 and len(train) == len(pairs)
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_by_query(pairs, holdout_fraction=1.0, seed=5)


WDC = ROOT / "data" / "wdc_computers"


def test_component_folds_keep_items_and_clusters_apart_on_wdc() -> None:
    """Real WDC pairs: every offer and every cluster (product) lands in exactly one fold, folds are balanced."""
    pairs_frame = pd.read_csv(WDC / "pairs.csv", dtype=str, keep_default_na=False)
    products = pd.read_csv(WDC / "products.csv", dtype=str, keep_default_na=False)
    labels = pairs_frame["label"].astype(np.int8).to_numpy()
    pairs = PairSet("wdc", pairs_frame["id_a"].to_numpy(object), pairs_frame["id_b"].to_numpy(object), labels)
    cluster = dict(zip(products["id"], products["cluster_id"]))
    pair_fold, item_fold = component_folds(pairs, folds=3, groups=cluster)
    assert len(pair_fold) == 1100 and set(pair_fold.tolist()) == {0, 1, 2}
    assert set(item_fold) == set(products["id"])
    for a, b, fold in zip(pairs.id_a, pairs.id_b, pair_fold):
        assert item_fold[a] == item_fold[b] == fold
    folds_of_cluster: dict[str, set[int]] = {}
    for item, fold in item_fold.items():
        folds_of_cluster.setdefault(cluster[item], set()).add(fold)
    assert all(len(f) == 1 for f in folds_of_cluster.values())
    counts = np.bincount(pair_fold)
    assert counts.max() <= 1.25 * counts.min()
    assert all(pairs.label[pair_fold == f].sum() >= 80 for f in range(3))


def test_component_folds_hand_example() -> None:
    # Components: {a, b, c} (3 pairs), {d, e} (1 pair) joined to f by group g1, {x, y} (1 pair).
    pairs = PairSet.from_rows("t", [("a", "b", 1), ("b", "c", 0), ("a", "c", 1), ("d", "e", 1), ("x", "y", 0)])
    pair_fold, item_fold = component_folds(pairs, folds=2, groups={"e": "g1", "f": "g1", "x": None})
    assert pair_fold.tolist() == [0, 0, 0, 1, 1]
    assert item_fold["f"] == item_fold["d"] == 1 and item_fold["x"] == 1
    with pytest.raises(ValueError, match="fewer than 4 folds"):
        component_folds(pairs, folds=4)
    with pytest.raises(ValueError, match="at least 2"):
        component_folds(pairs, folds=1)


# --- group_pairs --------------------------------------------------------------------------------------------


def test_group_pairs_links_group_members_only() -> None:
    ids = [f"i{n}" for n in range(9)]
    groups: list[object] = ["g1", "g2", "g1", None, "g1", "g2", float("nan"), "", "g3"]
    pairs = group_pairs(ids, groups, task="groups")
    assert pairs.rows() == [
        ("groups", "i0", "i2", 1),
        ("groups", "i0", "i4", 1),
        ("groups", "i2", "i4", 1),
        ("groups", "i1", "i5", 1),
    ]
    with pytest.raises(ValueError, match="9 ids"):
        group_pairs(ids, groups[:3], task="groups")


def test_group_pairs_caps_large_groups_with_a_seeded_sample() -> None:
    ids = [f"i{n}" for n in range(40)]
    groups = ["big"] * 30 + ["small"] * 10
    pairs = group_pairs(ids, groups, task="g", max_pairs_per_group=50, seed=1)
    big = {i for i in ids[:30]}
    big_pairs = [(a, b) for a, b in zip(pairs.id_a, pairs.id_b) if a in big]
    assert len(big_pairs) == 50 and len(set(big_pairs)) == 50
    assert all(b in big and ids.index(a) < ids.index(b) for a, b in big_pairs)
    assert len(pairs) == 50 + 45
    assert group_pairs(ids, groups, task="g", max_pairs_per_group=50, seed=1).rows() == pairs.rows()
    assert group_pairs(ids, groups, task="g", max_pairs_per_group=50, seed=2).rows() != pairs.rows()


def test_component_folds_do_not_depend_on_the_pairs_order() -> None:
    pairs_frame = pd.read_csv(WDC / "pairs.csv", dtype=str, keep_default_na=False)
    products = pd.read_csv(WDC / "products.csv", dtype=str, keep_default_na=False)
    cluster = dict(zip(products["id"], products["cluster_id"]))
    labels = pairs_frame["label"].astype(np.int8).to_numpy()
    forward = PairSet("wdc", pairs_frame["id_a"].to_numpy(object), pairs_frame["id_b"].to_numpy(object), labels)
    backward = forward.take(np.arange(len(forward))[::-1])
    fold_forward, items_forward = component_folds(forward, folds=3, groups=cluster)
    fold_backward, items_backward = component_folds(backward, folds=3, groups=cluster)
    assert np.array_equal(fold_backward[::-1], fold_forward)
    assert items_backward == items_forward
