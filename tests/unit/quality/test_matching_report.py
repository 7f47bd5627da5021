"""Match-decision figures: recall counts true pairs never scored; group pairs are every pair within a group."""

from __future__ import annotations

import pandas as pd
import pytest

from pss_ops.quality.matching import decision_report, group_report


def test_recall_counts_true_pairs_the_run_never_scored() -> None:
    truth = pd.DataFrame({"id_a": ["a", "c", "e", "g"], "id_b": ["b", "d", "f", "h"]})
    # Both directions of a-b: the higher probability speaks for the pair. g-h was never scored.
    pairs = pd.DataFrame(
        {
            "id_a": ["a", "b", "d", "e", "x", "y"],
            "id_b": ["b", "a", "c", "f", "z", "w"],
            "probability": [0.95, 0.4, 0.9, 0.6, 0.55, 0.1],
        }
    )
    report = decision_report(pairs, truth, threshold=0.5)
    assert report["true_pairs"] == 4 and report["true_pairs_scored"] == 3 and report["pairs_scored"] == 5
    # Down to 0.6 every scored pair is true: three of the four true pairs at precision 1.
    assert report["R@P90"] == 0.75 and report["R@P80"] == 0.75
    assert report["precision@threshold"] == 0.75 and report["recall@threshold"] == 0.75
    assert report["f1@threshold"] == pytest.approx(0.75)
    assert report["pairs_at_p0.9"] == 2 and report["matches_among_p0.9"] == 1.0


def test_group_pairs_against_truth() -> None:
    groups = pd.DataFrame({"group_id": ["g1", "g1", "g1", "g2", "g2"], "item_id": ["a", "b", "c", "x", "y"]})
    truth = pd.DataFrame({"id_a": ["a", "b", "d"], "id_b": ["b", "c", "e"]})
    report = group_report(groups, truth)
    # Claimed: a-b, a-c, b-c, x-y; true among them: a-b, b-c.
    assert report["group_pairs"] == 4 and report["group_pair_precision"] == 0.5
    assert report["group_pair_recall"] == pytest.approx(0.6667, abs=1e-4)
    assert report["duplicate_groups"] == 2 and report["largest_group"] == 3
