"""Paper §5.2–5.3 quality metrics: recall at precision (verification), NDCG@k and MAP@K (ranking)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PRECISIONS = (0.8, 0.9, 0.95)
MAP_K = 30


@dataclass(frozen=True)
class QueryMean:
    """A per-query metric averaged over `queries`; `excluded` queries had no relevant item at all."""

    value: float  # nan when no query has a relevant item
    queries: int
    excluded: int


def precision_key(precision: float) -> str:
    """The report key of recall at a precision level: 0.8 -> "R@P80", 0.925 -> "R@P92.5"."""
    return f"R@P{round(precision * 100, 6):g}"


def recall_at_precision(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    precisions: Sequence[float] = DEFAULT_PRECISIONS,
    *,
    total_positives: int | None = None,
) -> dict[str, float]:
    """Per level p, the highest recall of a score threshold with precision >= p (0.0 if none, nan without positives).

    total_positives, when given, is the recall denominator: the scored positives plus true pairs that were never
    scored (a candidate search that missed them), so recall is over every true pair, found or not.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = _binary(labels, "labels")
    if s.ndim != 1 or len(s) != len(y):
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    for p in precisions:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"precision level must be in (0, 1], got {p}")
    positives = _denominator(y, total_positives)
    if positives == 0:
        return {precision_key(p): float("nan") for p in precisions}
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    accepted_positives = np.cumsum(y)
    accepted = np.arange(1, len(s) + 1)
    # A threshold accepts every pair scoring at least it, so one threshold per distinct score: the end of each run of ties.
    run_end = np.append(s[1:] != s[:-1], True)
    precision = accepted_positives[run_end] / accepted[run_end]
    recall = accepted_positives[run_end] / positives
    result: dict[str, float] = {}
    for p in precisions:
        reached = precision >= p
        result[precision_key(p)] = float(recall[reached].max()) if reached.any() else 0.0
    return result


def _denominator(labels: np.ndarray, total_positives: int | None) -> int:
    scored = int(labels.sum())
    if total_positives is None:
        return scored
    if total_positives < scored:
        raise ValueError(f"total_positives={total_positives} is fewer than the {scored} scored positives")
    return total_positives


@dataclass(frozen=True)
class Decisions:
    """Precision, recall and F1 of deciding "match" at a threshold."""

    threshold: float
    precision: float
    recall: float
    f1: float


def _decisions(threshold: float, true_positives: int, accepted: int, positives: int) -> Decisions:
    precision = true_positives / accepted if accepted else float("nan")
    recall = true_positives / positives if positives else float("nan")
    f1 = 2 * true_positives / (accepted + positives) if accepted + positives else float("nan")
    return Decisions(threshold, precision, recall, f1)


def decisions_at(scores: np.ndarray, labels: np.ndarray, threshold: float, *, total_positives: int | None = None) -> Decisions:
    """Precision, recall and F1 of calling every pair scoring at least threshold a match."""
    y = _binary(labels, "labels")
    accepted = np.asarray(scores, dtype=np.float64) >= threshold
    return _decisions(threshold, int(y[accepted].sum()), int(accepted.sum()), _denominator(y, total_positives))


def best_decisions(scores: np.ndarray, labels: np.ndarray, *, total_positives: int | None = None) -> Decisions:
    """The threshold with the highest F1 (an optimistic figure: the threshold is chosen on the pairs it is scored on)."""
    s = np.asarray(scores, dtype=np.float64)
    y = _binary(labels, "labels")
    positives = _denominator(y, total_positives)
    if not len(s) or not positives:
        return Decisions(float("nan"), float("nan"), float("nan"), float("nan"))
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    true_positives, accepted = np.cumsum(y), np.arange(1, len(s) + 1)
    run_end = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    f1 = 2 * true_positives[run_end] / (accepted[run_end] + positives)
    best = run_end[int(np.argmax(f1))]
    return _decisions(float(s[best]), int(true_positives[best]), int(accepted[best]), positives)


def dcg_at_k(relevance: Sequence[int] | np.ndarray, k: int) -> float:
    """DCG_k = sum over the first k positions i of (2^rel_i - 1) / log2(i + 1), rel_i in {0, 1}."""
    _check_k(k)
    rel = _binary(relevance, "relevance")[:k]
    return float(np.sum((2.0**rel - 1.0) / np.log2(np.arange(2, len(rel) + 2))))


def query_ndcg_at_k(relevance: Sequence[int] | np.ndarray, k: int, n_relevant: int | None = None) -> float:
    """DCG_k over the ideal DCG_k, whose list has all n_relevant relevant items first (nan if n_relevant is 0)."""
    rel = _binary(relevance, "relevance")
    total = _total_relevant(rel, n_relevant)
    if total == 0:
        return float("nan")
    ideal = dcg_at_k(np.ones(min(total, k), dtype=np.int64), k)
    return dcg_at_k(rel, k) / ideal


def average_precision_at_k(relevance: Sequence[int] | np.ndarray, k: int = MAP_K, n_relevant: int | None = None) -> float:
    """AP = sum over k' <= k of P(k') * (r(k') - r(k'-1)), r the recall over all n_relevant items (nan if 0)."""
    _check_k(k)
    rel = _binary(relevance, "relevance")
    total = _total_relevant(rel, n_relevant)
    if total == 0:
        return float("nan")
    top = rel[:k]
    precision = np.cumsum(top) / np.arange(1, len(top) + 1)
    # r(k') - r(k'-1) is rel_k' / n_relevant: recall only moves at a relevant position.
    return float(np.sum(precision * top) / total)


def ndcg_summary(ranked_relevance: Sequence[Sequence[int]], k: int, n_relevant: Sequence[int] | None = None) -> QueryMean:
    """Mean NDCG@k over queries with a relevant item; queries with none are excluded from the mean and counted."""
    return _mean_over_queries(query_ndcg_at_k, ranked_relevance, k, n_relevant)


def ndcg_at_k(ranked_relevance: Sequence[Sequence[int]], k: int, n_relevant: Sequence[int] | None = None) -> float:
    """Mean NDCG@k over queries with a relevant item (see ndcg_summary for the excluded count)."""
    return ndcg_summary(ranked_relevance, k, n_relevant).value


def map_summary(ranked_relevance: Sequence[Sequence[int]], k: int = MAP_K, n_relevant: Sequence[int] | None = None) -> QueryMean:
    """MAP@k: mean AP@k over queries with a relevant item; queries with none are excluded from the mean and counted."""
    return _mean_over_queries(average_precision_at_k, ranked_relevance, k, n_relevant)


def map_at_k(ranked_relevance: Sequence[Sequence[int]], k: int = MAP_K, n_relevant: Sequence[int] | None = None) -> float:
    """Mean AP@k over queries with a relevant item (see map_summary for the excluded count)."""
    return map_summary(ranked_relevance, k, n_relevant).value


def _mean_over_queries(
    metric: Callable[[np.ndarray, int, int | None], float],
    ranked_relevance: Sequence[Sequence[int]],
    k: int,
    n_relevant: Sequence[int] | None,
) -> QueryMean:
    _check_k(k)
    if n_relevant is not None and len(n_relevant) != len(ranked_relevance):
        raise ValueError(f"n_relevant has {len(n_relevant)} entries for {len(ranked_relevance)} queries")
    values: list[float] = []
    excluded = 0
    for q, relevance in enumerate(ranked_relevance):
        rel = _binary(relevance, "relevance")
        total = _total_relevant(rel, None if n_relevant is None else n_relevant[q])
        if total == 0:
            excluded += 1
        else:
            values.append(metric(rel, k, total))
    return QueryMean(value=float(np.mean(values)) if values else float("nan"), queries=len(values), excluded=excluded)


def _binary(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{what} must be a 1-D sequence of 0/1 values")
    return array.astype(np.int64)


def _total_relevant(rel: np.ndarray, n_relevant: int | None) -> int:
    found = int(rel.sum())
    if n_relevant is None:
        return found
    if n_relevant < found:
        raise ValueError(f"n_relevant={n_relevant} is less than the {found} relevant items in the list")
    return int(n_relevant)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
