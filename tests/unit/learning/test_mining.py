"""Negative mining and pair cleaning on real Amazon–Google titles: hard and random negatives, feature blocks, clean_pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pss_ops.config import PostFilterConfig, parse_config
from pss_ops.features.compound import compound_vectors
from pss_ops.features.lexical import char_ngram_vectors
from pss_ops.learning.mining import FeatureBlocks, clean_pairs, feature_blocks, hard_negatives, random_negatives
from pss_ops.learning.pairs import PairSet
from pss_ops.search.filters import row_filter
from tests.unit.learning.ag_sample import sample, truth_keys

TWO_BLOCKS = parse_config(
    {
        "application": "pairs-unit",
        "features": [
            {"type": "char_ngram", "name": "short", "ngram_min": 2, "ngram_max": 3, "dims": 64},
            {"type": "char_ngram", "name": "long", "ngram_min": 4, "ngram_max": 5, "dims": 128, "weight": 0.5},
        ],
    }
)


def test_sample_is_real_and_has_multi_partner_items() -> None:
    s = sample()
    assert 100 <= len(s.ids) <= 160
    assert set(s.truth.id_a) | set(s.truth.id_b) == set(s.ids)
    assert pd.Series(s.truth.id_a).value_counts().max() >= 2


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


def test_hard_negatives_are_ones_the_post_filter_lets_through() -> None:
    s = sample()
    seller = s.frame["seller"].to_numpy(object)
    different_seller = row_filter(PostFilterConfig(different=("seller",)), {"seller": seller})
    negatives = hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60, listable=different_seller)
    by_id = dict(zip(s.ids, seller))
    assert len(negatives) > 0
    assert all(by_id[a] != by_id[b] for a, b in zip(negatives.id_a, negatives.id_b))
    unfiltered = hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60)
    assert any(by_id[a] == by_id[b] for a, b in zip(unfiltered.id_a, unfiltered.id_b))
    # A null attribute (None or pandas' NaN) can prove no difference: such items are never used.
    seller[0], seller[1] = None, float("nan")
    different_seller = row_filter(PostFilterConfig(different=("seller",)), {"seller": seller})
    negatives = hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60, listable=different_seller)
    assert not {s.ids[0], s.ids[1]} & (set(negatives.id_a) | set(negatives.id_b))
    # The score floor is a rule too: nothing below it is mined.
    floor = row_filter(PostFilterConfig(min_score=0.99), {})
    assert len(hard_negatives(s.truth, s.ids, s.vectors, per_positive=3, candidates=60, listable=floor)) < len(unfiltered)


def test_hard_negatives_reject_bad_input() -> None:
    s = sample()
    with pytest.raises(ValueError, match="no vector for item 'nope'"):
        hard_negatives(PairSet.from_rows("t", [("nope", s.ids[0], 1)]), s.ids, s.vectors)
    with pytest.raises(ValueError, match="positives only"):
        hard_negatives(PairSet.from_rows("t", [(s.ids[0], s.ids[1], 0)]), s.ids, s.vectors)
    with pytest.raises(ValueError, match="no values for post-filter attribute"):
        row_filter(PostFilterConfig(same=("brand",)), {"seller": []})


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
