"""The pair matcher: gradient-boosted trees over pair features, calibrated on out-of-fold predictions.

LightGBM, chosen by measurement (bench/matching.py: as accurate as XGBoost and scikit-learn's
HistGradientBoosting on both benchmarks, and its model is a plain text file, a safe format to load).

Calibration: the trees' margins on pairs they were not trained on (5 folds, each product's offers kept in one)
are fitted to the labels by a logistic curve (Platt scaling); the registered trees, trained on every pair, are
read through that curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from pss_ops.resources import usable_cpus

CALIBRATION_FOLDS = 5
# Prediction checks every EARLY_STOP_FREQ trees whether a pair's margin is settled (Matcher.raw_scores).
EARLY_STOP_FREQ = 20
MIN_EARLY_STOP_MARGIN = 4.0
SETTLED_PROBABILITY = 0.01
BOOSTING_ROUNDS = 300
# Small trees, shrunk and subsampled: labelled sets are thousands of pairs, not millions.
TREE_PARAMS: dict[str, float | int | str | bool] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


@dataclass(frozen=True)
class Calibration:
    """Probability = sigmoid(slope * margin + intercept) (Platt scaling), fitted on out-of-fold margins.

    Strictly increasing, so the published probability keeps the trees' order of pairs: isotonic regression,
    measured beside it under 5-fold cross-validation on Amazon–Google (expected calibration error 0.0063 against
    Platt's 0.0070), was as well calibrated but maps whole ranges of margins to one value, so the surest pairs
    tied at 1.0 and could not be ranked against each other.
    """

    slope: float
    intercept: float

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(expit(self.slope * np.asarray(raw, dtype=np.float64) + self.intercept))

    def settled_beyond(self, tolerance: float) -> float:
        """A margin past which (either way) every probability is within tolerance of 0 or of 1."""
        bound = float(logit(1.0 - tolerance))
        return max(abs((bound - self.intercept) / self.slope), abs((-bound - self.intercept) / self.slope))

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray) -> Calibration:
        # A very weak penalty: two parameters fitted on thousands of pairs need no shrinking.
        fitted = LogisticRegression(C=1e6).fit(np.asarray(raw, dtype=np.float64)[:, None], labels)
        slope, intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
        if slope <= 0:
            raise ValueError("the trees' out-of-fold scores do not rise with the labels; the labelled pairs hold no usable signal")
        return cls(slope, intercept)


def _params(seed: int) -> dict[str, float | int | str | bool]:
    return {**TREE_PARAMS, "seed": seed, "num_threads": usable_cpus()}


def train_trees(features: np.ndarray, labels: np.ndarray, seed: int) -> lgb.Booster:
    """Boosted trees on a float32 feature matrix (NaN for missing) and 0/1 labels."""
    data = lgb.Dataset(features, label=labels, params={"verbose": -1}, free_raw_data=True)
    return lgb.train(_params(seed), data, num_boost_round=BOOSTING_ROUNDS)


def pair_folds(id_a: Sequence[str], id_b: Sequence[str], labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each pair's fold: products (connected components of the matches) are dealt to folds at random, and a pair
    goes with the product of the smaller of its two ids, so its two directions share a fold.

    Components of every labelled pair would not do: candidate pairs link nearly a whole catalog into one. With
    products kept whole, no match has offers on both sides; a non-match's second item may sit in another fold.
    """
    a, b = np.asarray(id_a, dtype=object), np.asarray(id_b, dtype=object)
    items, codes = np.unique(np.concatenate([a, b]).astype(str), return_inverse=True)
    code_a, code_b = codes[: len(a)], codes[len(a) :]
    match = np.asarray(labels) == 1
    graph = coo_matrix((np.ones(int(match.sum())), (code_a[match], code_b[match])), shape=(len(items), len(items)))
    count, component = connected_components(graph, directed=False)
    fold_of_component = np.random.default_rng(seed).permutation(count) % folds
    return fold_of_component[component[np.minimum(code_a, code_b)]]


def out_of_fold_scores(features: np.ndarray, labels: np.ndarray, pair_ids: pd.DataFrame, seed: int) -> np.ndarray:
    """Each pair's score from trees trained on the other folds (pair_folds: whole products per fold)."""
    folds = pair_folds(pair_ids["id_a"].to_numpy(), pair_ids["id_b"].to_numpy(), labels, CALIBRATION_FOLDS, seed)
    scores = np.empty(len(labels), dtype=np.float64)
    for fold in np.unique(folds):
        test = folds == fold
        train = ~test
        if labels[train].min() == labels[train].max():
            raise ValueError(
                "a calibration fold's training pairs hold one class only: label more pairs of both kinds "
                f"(now {int(labels.sum())} matches, {int(len(labels) - labels.sum())} non-matches)"
            )
        scores[test] = train_trees(features[train], labels[train], seed).predict(features[test], raw_score=True)
    return scores


@dataclass(frozen=True)
class Matcher:
    """Trees and their calibration, applied to a pair-feature frame with the columns the trees were trained on.

    The trees give a margin (log-odds, uncalibrated); the calibration maps it to a probability.
    """

    trees: lgb.Booster
    calibration: Calibration
    features: tuple[str, ...]

    def raw_scores(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise ValueError(
                f"the matcher was trained on pair features this config does not produce: {', '.join(missing)} "
                "(retrievers or features changed since training?); retrain it with pss train-matcher"
            )
        if not len(frame):
            return np.zeros(0, dtype=np.float64)
        matrix = frame.loc[:, list(self.features)].to_numpy(dtype=np.float32)
        # Most candidate pairs are plainly not matches: LightGBM stops adding trees for a pair once its margin is
        # where the calibrated probability is within SETTLED_PROBABILITY of 0 (or 1), as the rest of the trees
        # could move it by no more than that (5x faster on the demo).
        margin = max(self.calibration.settled_beyond(SETTLED_PROBABILITY), MIN_EARLY_STOP_MARGIN)
        return np.asarray(
            self.trees.predict(
                matrix,
                raw_score=True,
                num_threads=usable_cpus(),
                pred_early_stop=True,
                pred_early_stop_freq=EARLY_STOP_FREQ,
                pred_early_stop_margin=margin,
            ),
            dtype=np.float64,
        )

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated match probability of each row."""
        return self.calibration(self.raw_scores(frame))


def fit_matcher(frame: pd.DataFrame, labels: np.ndarray, pair_ids: pd.DataFrame, seed: int = 0) -> Matcher:
    """Calibrate on out-of-fold scores, then train the trees on every pair."""
    names = tuple(frame.columns)
    features = frame.to_numpy(dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    calibration = Calibration.fit(out_of_fold_scores(features, labels, pair_ids, seed), labels)
    return Matcher(train_trees(features, labels, seed), calibration, names)
