"""Match decisions against known true pairs: R@P, F1 at a threshold, calibration, and duplicate groups' pairwise figures.

Pairs are unordered: (a, b) and (b, a) are one pair, scored by the higher of their two probabilities. Recall
counts every true pair, found by the search or not, so a matcher cannot look good by ranking a search that
missed half the matches.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pss_ops.quality.metrics import DEFAULT_PRECISIONS, best_decisions, decisions_at, recall_at_precision

# Probability levels whose observed precision the report shows beside them (calibration).
CALIBRATION_LEVELS = (0.5, 0.9)


def pair_keys(id_a: Sequence[str] | pd.Series, id_b: Sequence[str] | pd.Series) -> np.ndarray:
    """One key per unordered pair: the two ids in sorted order, NUL-joined."""
    # Python strings, not a NumPy str array: NumPy drops trailing NUL characters of its fixed-width strings.
    keys = [f"{a}\0{b}" if a <= b else f"{b}\0{a}" for a, b in zip(map(str, id_a), map(str, id_b))]
    return np.asarray(keys, dtype=object)


def _scored(pairs: pd.DataFrame) -> pd.Series:
    """Probability per unordered pair key (the higher of its two directions)."""
    keys = pair_keys(pairs["id_a"], pairs["id_b"])
    return pd.Series(pairs["probability"].to_numpy(dtype=np.float64), index=keys).groupby(level=0).max()


def decision_report(
    pairs: pd.DataFrame, truth: pd.DataFrame, threshold: float, precisions: Sequence[float] = DEFAULT_PRECISIONS
) -> dict[str, float | int]:
    """R@P over scored pairs (id_a, id_b, probability), F1 at threshold and at its best, calibration, against truth (id_a, id_b)."""
    true_keys = set(pair_keys(truth["id_a"], truth["id_b"]).tolist())
    scored = _scored(pairs)
    labels = np.fromiter((key in true_keys for key in scored.index), dtype=np.int64, count=len(scored))
    scores = scored.to_numpy()
    total = len(true_keys)
    at = decisions_at(scores, labels, threshold, total_positives=total)
    best = best_decisions(scores, labels, total_positives=total)
    report: dict[str, float | int] = {
        "true_pairs": total,
        "true_pairs_scored": int(labels.sum()),
        "pairs_scored": len(scores),
    }
    report.update({k: round(v, 4) for k, v in recall_at_precision(scores, labels, precisions, total_positives=total).items()})
    report.update(
        {
            "match_threshold": threshold,
            "precision@threshold": round(at.precision, 4),
            "recall@threshold": round(at.recall, 4),
            "f1@threshold": round(at.f1, 4),
            "best_f1": round(best.f1, 4),
            "best_f1_threshold": round(best.threshold, 4),
        }
    )
    for level in CALIBRATION_LEVELS:
        sure = scores >= level
        report[f"pairs_at_p{level:g}"] = int(sure.sum())
        report[f"matches_among_p{level:g}"] = round(float(labels[sure].mean()), 4) if sure.any() else float("nan")
    return report


def group_pairs(groups: pd.DataFrame) -> np.ndarray:
    """The unordered pair keys within each group (group_id, item_id): what grouping claims is one product."""
    keys: list[str] = []
    for _, members in groups.groupby("group_id", sort=False)["item_id"]:
        ids = sorted(members.astype(str))
        keys.extend(f"{a}\0{b}" for a, b in itertools.combinations(ids, 2))
    return np.asarray(keys, dtype=object)


def group_report(groups: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float | int]:
    """Pairwise precision, recall and F1 of duplicate groups against true pairs, and their sizes."""
    true_keys = set(pair_keys(truth["id_a"], truth["id_b"]).tolist())
    claimed = set(group_pairs(groups).tolist())
    hits = len(claimed & true_keys)
    precision = hits / len(claimed) if claimed else float("nan")
    recall = hits / len(true_keys) if true_keys else float("nan")
    f1 = 2 * hits / (len(claimed) + len(true_keys)) if claimed or true_keys else float("nan")
    sizes = groups.groupby("group_id").size() if len(groups) else pd.Series(dtype=np.int64)
    return {
        "duplicate_groups": int(len(sizes)),
        "items_in_groups": int(sizes.sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "group_pairs": len(claimed),
        "group_pair_precision": round(precision, 4),
        "group_pair_recall": round(recall, 4),
        "group_pair_f1": round(f1, 4),
    }
