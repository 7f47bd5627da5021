"""Recall@k with ties counted: the definition the run summary, the index tuner and the benchmarks share."""

from __future__ import annotations

import math

import numpy as np

from pss_ops.quality.recall import TIE_TOLERANCE, recall_with_ties, tie_hits


def test_hand_computed_hits_with_a_tie_at_the_kth_score() -> None:
    exact = [np.array([0.9, 0.8, 0.7]), np.array([0.6, 0.5, 0.4])]
    # Query 0 found 0.7 + half the tolerance below (a tie) and missed 0.8; query 1 found all three, in any order.
    found = [np.array([0.9, 0.7 - TIE_TOLERANCE / 2, 0.1]), np.array([0.4, 0.6, 0.5])]
    assert tie_hits(found, exact) == (5, 6)
    assert math.isclose(recall_with_ties(found, exact), 5 / 6)


def test_a_score_past_the_tolerance_is_a_miss() -> None:
    assert tie_hits([np.array([0.7 - 2 * TIE_TOLERANCE])], [np.array([0.7])]) == (0, 1)


def test_queries_without_exact_results_count_for_nothing() -> None:
    assert tie_hits([np.array([0.5]), np.array([])], [np.array([]), np.array([0.3, 0.2])]) == (0, 2)
    assert math.isnan(recall_with_ties([np.array([0.5])], [np.array([])]))
