"""Held-out evaluation of a trained model: recall at precision with and without same-input negatives."""

from __future__ import annotations

import numpy as np

from pss_ops.config import PostFilterConfig
from pss_ops.learning.pairs import PairSet
from pss_ops.learning.pipeline import TrainingData, evaluate_holdout, same_input_negatives
from pss_ops.search.filters import row_filter

# b repeats a's input (a duplicate listing labelled as a different item); f repeats c's and is labelled the same.
IDS = ["a", "b", "c", "d", "e", "f"]
COMPOUND = np.array([[1, 0], [1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
HELD = PairSet.from_rows("labelled", [("a", "b", 0), ("a", "c", 1), ("d", "e", 1), ("c", "d", 0), ("c", "f", 1)])


def _data() -> TrainingData:
    return TrainingData(IDS, COMPOUND, row_filter(PostFilterConfig(), {}), train={}, holdout={"labelled": HELD}, cleaning={})


def test_only_negatives_with_identical_inputs_are_set_aside() -> None:
    row = {item: i for i, item in enumerate(IDS)}
    # (c, f) has identical inputs too, but it is a positive: it stays.
    assert same_input_negatives(COMPOUND, row, HELD).tolist() == [True, False, False, False, False]


def test_separable_recall_at_precision_hand_computed() -> None:
    report = evaluate_holdout(COMPOUND, _data())["labelled"]
    # Scores: (a,b) 1.0 neg, (c,f) 1.0 pos, (a,c) 0.8 pos, (d,e) 0.8 pos, (c,d) 0.6 neg.
    # Every pair: precision 1/2 at 1.0, 3/4 at 0.8, 3/5 at 0.6, so no threshold reaches 80%.
    assert (report["R@P80"], report["R@P90"], report["R@P95"]) == (0.0, 0.0, 0.0)
    # Without (a,b): precision 1 at 1.0 (recall 1/3) and 3/3 at 0.8 (recall 1).
    assert (report["R@P80 separable"], report["R@P90 separable"], report["R@P95 separable"]) == (1.0, 1.0, 1.0)
    assert (report["positives"], report["negatives"], report["same_input_negatives"]) == (3, 2, 1)


def test_an_embedding_that_separates_is_scored_on_the_same_pairs() -> None:
    # A (hypothetical) embedding that gives b its own direction: the all-pairs figure now counts the pair as separated.
    vectors = COMPOUND.copy()
    vectors[1] = [-1, 0]
    report = evaluate_holdout(vectors, _data())["labelled"]
    assert report["R@P90"] == 1.0 and report["R@P90 separable"] == 1.0 and report["same_input_negatives"] == 1
