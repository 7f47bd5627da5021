"""Training pairs on real Amazon–Google titles: reading, mining, cleaning, splitting."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pss_ops.config import parse_config
from pss_ops.features.compound import compound_vectors
from pss_ops.features.lexical import char_ngram_vectors
from pss_ops.learning.folds import component_folds, group_pairs, split_by_query
from pss_ops.learning.mining import FeatureBlocks, clean_pairs, feature_blocks, hard_negatives, random_negatives
from pss_ops.learning.pairs import PAIR_SOURCE_PATTERN, PairSet, format_pair_source, pairs_fingerprint, parse_pair_source, read_pairs

DATA = Path(__file__).resolve().parents[2] / "data" / "amazon_google"
TWO_BLOCKS = parse_config(
    {
        "application": "pairs-unit",
        "features": [
            {"type": "char_ngram", "name": "short", "ngram_min": 2, "ngram_max": 3, "dims": 64},
            {"type": "char_ngram", "name": "long", "ngram_min": 4, "ngram_max": 5, "dims": 128, "weight": 0.5},
        ],
    }
)


@dataclass(frozen=True)
class Sample:
    """~120 real catalog rows that are both sides of true matches, and every true match among them."""

    frame: pd.DataFrame
    ids: list[str]
    truth: PairSet
    vectors: np.ndarray


@functools.cache
def sample() -> Sample:
    """Every 25th match plus all matches of three items with several partners, with 128-dim char n-gram vectors."""
    catalog = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    matches = pd.read_csv(DATA / "matches.csv", dtype=str, keep_default_na=False)
    known = set(catalog["item_id"])
    matches = matches[matches["id_a"].isin(known) & matches["id_b"].isin(known)]
    multi = matches["id_a"].value_counts()
    multi_ids = sorted(multi[multi >= 2].index)[:3]
    picked = pd.concat([matches.iloc[::25], matches[matches["id_a"].isin(multi_ids)]])
    keep = set(picked["id_a"]) | set(picked["id_b"])
    truth = matches[matches["id_a"].isin(keep) & matches["id_b"].isin(keep)]
    frame = catalog[catalog["item_id"].isin(keep)].reset_index(drop=True)
    vectors = char_ngram_vectors(frame["title"].tolist(), ngram_min=3, ngram_max=5, dims=128)
    pairs = PairSet("matches", truth["id_a"].to_numpy(object), truth["id_b"].to_numpy(object), np.ones(len(truth), np.int8))
    return Sample(frame, frame["item_id"].tolist(), pairs, vectors)


def truth_keys(pairs: PairSet) -> set[frozenset[str]]:
    return {frozenset(p) for p in zip(pairs.id_a.tolist(), pairs.id_b.tolist())}


def test_sample_is_real_and_has_multi_partner_items() -> None:
    s = sample()
    assert 100 <= len(s.ids) <= 160
    assert set(s.truth.id_a) | set(s.truth.id_b) == set(s.ids)
    assert pd.Series(s.truth.id_a).value_counts().max() >= 2


# --- PairSet -----------------------------------------------------------------------------------------------


def test_pairset_views_concat_and_fingerprint() -> None:
    pos = PairSet.from_rows("t", [("a", "b", 1), ("c", "d", 1)])
    neg = PairSet.from_rows("t", [("a", "d", 0)])
    both = pos.concat(neg)
    assert len(both) == 3 and both.label.dtype == np.int8 and both.id_a.dtype == object
    assert both.positives.rows() == pos.rows() and both.negatives.rows() == neg.rows()
    # Order-independent, but sensitive to a label, an id, the task.
    assert both.fingerprint() == neg.concat(pos).fingerprint()
    assert both.fingerprint() != PairSet.from_rows("t", [("a", "b", 1), ("c", "d", 1), ("a", "d", 1)]).fingerprint()
    assert both.fingerprint() != PairSet.from_rows("t", [("a", "b", 1), ("c", "d", 1), ("a", "e", 0)]).fingerprint()
    assert both.fingerprint() != PairSet("u", both.id_a, both.id_b, both.label).fingerprint()
    assert pairs_fingerprint([pos, neg]) == both.fingerprint()
    with pytest.raises(ValueError, match="task 'u'"):
        pos.concat(PairSet.from_rows("u", [("x", "y", 1)]))
    with pytest.raises(ValueError, match="0 or 1"):
        PairSet.from_rows("t", [("a", "b", 2)])
    with pytest.raises(ValueError, match="one length"):
        PairSet("t", np.array(["a"], object), np.array(["b", "c"], object), np.array([1]))


# --- read_pairs ---------------------------------------------------------------------------------------------


def test_read_pairs_real_matches_are_all_positive() -> None:
    pairs = read_pairs(str(DATA / "matches.csv"), "matches")
    expected = pd.read_csv(DATA / "matches.csv", dtype=str)
    assert len(pairs) == len(expected) and pairs.task == "matches"
    assert (pairs.label == 1).all()
    assert pairs.id_a.tolist() == expected["id_a"].tolist() and pairs.id_b.tolist() == expected["id_b"].tolist()


def test_read_pairs_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "labeled.csv"
    path.write_text("id_a,id_b,label\na,b,1\na,c,0\nd,e, 1\n", encoding="utf-8")
    pairs = read_pairs(str(path), "labeled")
    assert pairs.rows() == [("labeled", "a", "b", 1), ("labeled", "a", "c", 0), ("labeled", "d", "e", 1)]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("id_a,label\na,1\n", r"missing column 'id_b'"),
        ("id_b,id_a_x\na,b\n", r"missing column 'id_a'"),
        ("id_a,id_b,label\na,b,1\na,c,0\nd,e,yes\n", r"column 'label' must be 0 or 1, got 'yes' in data row 3"),
        ("id_a,id_b,label\na,b,1\na,c,\n", r"column 'label' must be 0 or 1, got '' in data row 2"),
        ("id_a,id_b\na,b\n,c\n", r"column 'id_a' is empty in data row 2"),
        ("id_a,id_b\na,b\nc,c\n", r"data row 2 pairs item 'c' with itself"),
    ],
)
def test_read_pairs_errors_name_file_column_row(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad_pairs.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=pattern) as err:
        read_pairs(str(path), "t")
    assert "bad_pairs.csv" in str(err.value)


# --- parse_pair_source --------------------------------------------------------------------------------------


def test_parse_pair_source_reads_the_task_after_the_last_colon(tmp_path: Path) -> None:
    assert parse_pair_source("pairs/m.csv:clicks") == ("pairs/m.csv", "clicks")
    assert parse_pair_source("s3://b/m.csv:clicks") == ("s3://b/m.csv", "clicks")
    # No task: the default, also when the only colon is the URI scheme's.
    assert parse_pair_source("m.csv") == ("m.csv", "labelled")
    assert parse_pair_source("s3://b/m.csv") == ("s3://b/m.csv", "labelled")
    assert parse_pair_source(" m.csv:x ", default_task="other") == ("m.csv", "x")
    # A base resolves relative local paths only.
    assert parse_pair_source("pairs/m.csv:clicks", base=tmp_path) == (str(tmp_path / "pairs" / "m.csv"), "clicks")
    assert parse_pair_source("s3://b/m.csv:clicks", base=tmp_path) == ("s3://b/m.csv", "clicks")
    assert parse_pair_source(format_pair_source(str(tmp_path / "m.csv"), "t")) == (str(tmp_path / "m.csv"), "t")


@pytest.mark.parametrize("value", ["m.csv:", ":labelled", "", "m.csv:two words"])
def test_parse_pair_source_refuses_malformed_entries(value: str) -> None:
    with pytest.raises(ValueError, match=r"pairs entry .* must be '<pairs.csv>' or '<pairs.csv>:<task>'"):
        parse_pair_source(value)


@pytest.mark.parametrize("value", ["m.csv", "s3://b/m.csv", ":labelled", "m.csv:"])
def test_parse_pair_source_without_a_default_needs_a_task(value: str) -> None:
    with pytest.raises(ValueError, match=r"must be '<pairs.csv>:<task>'"):
        parse_pair_source(value, default_task=None)


def test_pair_source_pattern_accepts_exactly_what_the_strict_parser_accepts() -> None:
    for value in ["m.csv:labelled", "s3://b/m.csv:clicks", "m.csv", "s3://b/m.csv", ":labelled", "m.csv:", "m.csv:a b"]:
        try:
            parse_pair_source(value, default_task=None)
            parsed = True
        except ValueError:
            parsed = False
        assert bool(re.search(PAIR_SOURCE_PATTERN, value)) == parsed, value


# --- feature_blocks -----------------------------------------------------------------------------------------


def test_feature_blocks_recover_each_raw_feature_from_the_compound() -> None:
    s = sample()
    compound = compound_vectors(s.frame, TWO_BLOCKS)
    blocks = feature_blocks(compound, TWO_BLOCKS)
    assert list(blocks) == ["short", "long"]
    titles = s.frame["title"].tolist()
    np.testing.assert_allclose(blocks["short"], char_ngram_vectors(titles, ngram_min=2, ngram_max=3, dims=64), atol=1e-5)
    np.testing.assert_allclose(blocks["long"], char_ngram_vectors(titles, ngram_min=4, ngram_max=5, dims=128), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, 192\)"):
        feature_blocks(compound[:, :100], TWO_BLOCKS)


# --- hard_negatives -----------------------------------------------------------------------------------------


def test_hard_negatives_are_nearest_non_partners() -> None:
    s = sample()
    negatives = hard_negatives(s.truth, s.ids, s.vectors, per_positive=2, candidates=20)
    true_keys = truth_keys(s.truth)
    assert len(negatives) > 0 and (negatives.label == 0).all() and negatives.task == "matches"
    assert all(a != b for a, b in zip(negatives.id_a, negatives.id_b))
    assert not truth_keys(negatives) & true_keys
    assert len(truth_keys(negatives)) == len(negatives)  # each unordered pair once
    per_query = pd.Series(s.truth.id_a).value_counts()
    got = pd.Series(negatives.id_a).value_counts()
    assert set(got.index) <= set(per_query.index)
    assert all(got[q] <= 2 * per_query[q] for q in got.index)
    # The first negative of every query is its most similar item that is neither itself nor a partner.
    row = {item: i for i, item in enumerate(s.ids)}
    scores = s.vectors @ s.vectors.T
    # (Unless that pair was already emitted from the other item's side: each unordered pair appears once.)
    first = dict(zip(negatives.id_a[::-1].tolist(), negatives.id_b[::-1].tolist()))
    negative_keys = truth_keys(negatives)
    checked = 0
    for query, negative in first.items():
        allowed = [i for i, item in enumerate(s.ids) if item != query and frozenset((query, item)) not in true_keys]
        best = s.ids[max(allowed, key=lambda i: (scores[row[query], i], -i))]
        if best != negative:
            assert frozenset((query, best)) in negative_keys
            assert scores[row[query], row[best]] >= scores[row[query], row[negative]] - 1e-6
        else:
            checked += 1
    assert checked >= len(first) // 2
    again = hard_negatives(s.truth, s.ids, s.vectors, per_positive=2, candidates=20)
    assert again.rows() == negatives.rows()


def test_hard_negatives_respect_exclude_same() -> None:
    s = sample()
    seller = s.frame["seller"].to_numpy(object)
    negatives = hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60, exclude_same=seller)
    by_id = dict(zip(s.ids, seller))
    assert len(negatives) > 0
    assert all(by_id[a] != by_id[b] for a, b in zip(negatives.id_a, negatives.id_b))
    unfiltered = hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60)
    assert any(by_id[a] == by_id[b] for a, b in zip(unfiltered.id_a, unfiltered.id_b))
    # A null attribute can prove no difference: such items are never used.
    seller[0] = None
    negatives = hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60, exclude_same=seller)
    assert s.ids[0] not in set(negatives.id_a) | set(negatives.id_b)


def test_hard_negatives_reject_bad_input() -> None:
    s = sample()
    with pytest.raises(ValueError, match="no vector for item 'nope'"):
        hard_negatives(PairSet.from_rows("t", [("nope", s.ids[0], 1)]), s.ids, s.vectors)
    with pytest.raises(ValueError, match="positives only"):
        hard_negatives(PairSet.from_rows("t", [(s.ids[0], s.ids[1], 0)]), s.ids, s.vectors)
    with pytest.raises(ValueError, match="exclude_same"):
        hard_negatives(s.truth, s.ids, s.vectors, exclude_same=np.array(["x"], object))


# --- random_negatives ---------------------------------------------------------------------------------------


def test_random_negatives_ratio_and_exclusions() -> None:
    s = sample()
    negatives = random_negatives(s.truth, s.ids, ratio=2.5, seed=3)
    assert len(negatives) == round(2.5 * len(s.truth)) and (negatives.label == 0).all()
    assert all(a != b for a, b in zip(negatives.id_a, negatives.id_b))
    assert not truth_keys(negatives) & truth_keys(s.truth)
    assert len(truth_keys(negatives)) == len(negatives)
    anchors = pd.Series(negatives.id_a).value_counts()
    positives_per_anchor = pd.Series(s.truth.id_a).value_counts()
    for anchor, count in anchors.items():
        m = positives_per_anchor[anchor]
        assert 2 * m <= count <= 3 * m
    assert set(negatives.id_b) <= set(s.ids)
    assert random_negatives(s.truth, s.ids, ratio=2.5, seed=3).rows() == negatives.rows()
    assert random_negatives(s.truth, s.ids, ratio=2.5, seed=4).rows() != negatives.rows()
    assert len(random_negatives(s.truth, s.ids, seed=0)) == 5 * len(s.truth)


def test_random_negatives_refuse_impossible_requests() -> None:
    positives = PairSet.from_rows("t", [("a", "b", 1)])
    assert random_negatives(positives, ["a", "b", "c", "d"], ratio=2, seed=0).rows() in (
        [("t", "a", "c", 0), ("t", "a", "d", 0)],
        [("t", "a", "d", 0), ("t", "a", "c", 0)],
    )
    with pytest.raises(ValueError, match="only 2 possible random negatives, 3 wanted"):
        random_negatives(positives, ["a", "b", "c", "d"], ratio=3, seed=0)
    with pytest.raises(ValueError, match="no vector for item 'a'"):
        random_negatives(positives, ["b", "c"], ratio=1, seed=0)


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


# --- clean_pairs --------------------------------------------------------------------------------------------


def _unit(cosine: float, dims: int) -> np.ndarray:
    """A unit vector at the given cosine to the first basis vector."""
    v = np.zeros(dims, np.float32)
    v[0], v[1] = cosine, np.sqrt(1 - cosine**2)
    return v


def hand_blocks() -> FeatureBlocks:
    """Item 'q' and partners whose (short, long) cosines to it are set by hand, packed as compound vectors."""
    cosines = {"q": (1.0, 1.0), "both_low": (0.3, 0.2), "short_low": (0.3, 0.9), "long_low": (0.9, 0.5), "both_high": (0.9, 0.95)}
    rows = []
    for short, long in cosines.values():
        block = np.concatenate([_unit(short, 64) * 1.0, _unit(long, 128) * 0.5])
        rows.append(block / np.linalg.norm(block))
    return FeatureBlocks.from_compound(list(cosines), np.stack(rows), TWO_BLOCKS)


def test_clean_pairs_drops_exactly_the_pairs_dissimilar_or_similar_on_every_block() -> None:
    blocks = hand_blocks()
    pairs = PairSet.from_rows(
        "t",
        [
            ("q", "both_low", 1),  # below 0.6 on both blocks: dropped
            ("q", "short_low", 1),  # below on one block only: kept
            ("long_low", "q", 1),  # kept (either direction)
            ("q", "both_high", 1),  # kept
            ("q", "both_high", 0),  # above 0.8 on both blocks: dropped
            ("q", "short_low", 0),  # above on one block only: kept
            ("q", "long_low", 0),  # kept
            ("q", "both_low", 0),  # kept
        ],
    )
    kept, report = clean_pairs(pairs, blocks)
    assert kept.rows() == [pairs.rows()[i] for i in (1, 2, 3, 5, 6, 7)]
    assert (report.positives_kept, report.positives_dropped, report.negatives_kept, report.negatives_dropped) == (3, 1, 3, 1)
    assert (report.positive_min, report.negative_max, report.task) == (0.6, 0.8, "t")
    # Thresholds are configurable.
    kept, report = clean_pairs(pairs, blocks, positive_min=0.25, negative_max=0.85)
    assert kept.rows() == [row for i, row in enumerate(pairs.rows()) if i != 4]
    assert (report.positives_dropped, report.negatives_dropped) == (0, 1)
    kept, report = clean_pairs(pairs, blocks, positive_min=0.1, negative_max=0.92)
    assert len(kept) == len(pairs) and report.positives_dropped == report.negatives_dropped == 0


def test_clean_pairs_names_missing_ids_and_checks_thresholds() -> None:
    blocks = hand_blocks()
    with pytest.raises(ValueError, match="no vector for item 'ghost'"):
        clean_pairs(PairSet.from_rows("t", [("q", "both_low", 1), ("q", "ghost", 0)]), blocks)
    with pytest.raises(ValueError, match="positive_min"):
        clean_pairs(PairSet.from_rows("t", [("q", "both_low", 1)]), blocks, positive_min=1.5)


def test_clean_pairs_on_real_titles_agrees_with_per_block_cosines() -> None:
    s = sample()
    compound = compound_vectors(s.frame, TWO_BLOCKS)
    blocks = FeatureBlocks.from_compound(s.ids, compound, TWO_BLOCKS)
    negatives = random_negatives(s.truth, s.ids, ratio=2, seed=0)
    pairs = s.truth.concat(negatives)
    kept, report = clean_pairs(pairs, blocks, positive_min=0.6, negative_max=0.45)
    assert report.positives_kept + report.positives_dropped == len(s.truth)
    assert report.negatives_kept + report.negatives_dropped == len(negatives)
    assert report.positives_kept > report.positives_dropped  # true matches mostly share n-grams
    assert report.negatives_kept > report.negatives_dropped > 0  # random pairs mostly do not
    # Recompute each block's cosine from the raw features, independently of the compound.
    titles = dict(zip(s.ids, s.frame["title"]))
    raw = {
        "short": lambda t: char_ngram_vectors(t, ngram_min=2, ngram_max=3, dims=64),
        "long": lambda t: char_ngram_vectors(t, ngram_min=4, ngram_max=5, dims=128),
    }
    a = [titles[i] for i in pairs.id_a]
    b = [titles[i] for i in pairs.id_b]
    cos = np.stack([(f(a) * f(b)).sum(axis=1) for f in raw.values()], axis=1)
    expected_drop = np.where(pairs.label == 1, (cos < 0.6).all(axis=1), (cos > 0.45).all(axis=1))
    assert kept.rows() == [row for row, drop in zip(pairs.rows(), expected_drop) if not drop]


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


WDC = Path(__file__).resolve().parents[2] / "data" / "wdc_computers"


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
