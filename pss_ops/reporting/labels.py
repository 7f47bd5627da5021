"""The report's labels section from `pss evaluate`: precision–recall per score, calibration and duplicate groups.

Pairs are unordered, each scored by the higher of its two directions, and recall counts every true pair, found by
the search or not: as quality.matching's figures are. What is computed here is small (curves thinned to at most
CURVE_POINTS points, histograms, bins) and is kept in the run's evaluation.json, which the report page draws.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.quality.evaluate import load_labelled, load_truth
from pss_ops.quality.matching import pair_keys
from pss_ops.reporting.published import retriever_score_columns

CURVE_POINTS = 300
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 40
PROBABILITY = "match_probability"


def true_pair_keys(truth_uri: str) -> set[str]:
    """The unordered true pairs of a truth file: every row of id_a,id_b, or the rows labelled 1 when it has a label column."""
    header = pd.read_csv(io.BytesIO(storage.read_bytes(truth_uri)), nrows=0).columns
    if "label" in header:
        labelled = load_labelled(truth_uri)
        truth = labelled.loc[labelled["label"] == 1, ["id_a", "id_b"]]
    else:
        truth = load_truth(truth_uri)
    return set(pair_keys(truth["id_a"], truth["id_b"]).tolist())


def _curve(scores: np.ndarray, labels: np.ndarray, positives: int) -> dict[str, list[float]]:
    """Precision and recall at every distinct score threshold, thinned to CURVE_POINTS points (both ends kept)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # A threshold accepts every pair scoring at least it: one point per run of tied scores, at its end.
    run_end = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.zeros(0, dtype=np.int64)
    hits = np.cumsum(y)[run_end]
    precision = hits / (run_end + 1)
    recall = hits / positives if positives else np.zeros(len(run_end))
    keep = np.unique(np.linspace(0, len(run_end) - 1, min(CURVE_POINTS, len(run_end))).round().astype(np.int64))
    return {"recall": np.round(recall[keep], 5).tolist(), "precision": np.round(precision[keep], 5).tolist()}


def _histogram(scores: np.ndarray, labels: np.ndarray, probability: bool) -> dict[str, list[float]]:
    """Counts of true matches and of other pairs over one set of bins: [0, 1] for probabilities, cosines' range else."""
    low, high = 0.0, 1.0
    if not probability and len(scores):
        low, high = min(low, float(scores.min())), max(high, float(scores.max()))
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    return {
        "edges": np.round(edges, 5).tolist(),
        "match": np.histogram(scores[labels == 1], bins=edges)[0].tolist(),
        "other": np.histogram(scores[labels == 0], bins=edges)[0].tolist(),
    }


def _calibration(probability: np.ndarray, labels: np.ndarray) -> list[dict[str, float | None]]:
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    number = np.clip(np.digitize(probability, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    bins = []
    for b in range(CALIBRATION_BINS):
        inside = number == b
        count = int(inside.sum())
        bins.append(
            {
                "lower": round(float(edges[b]), 3),
                "upper": round(float(edges[b + 1]), 3),
                "pairs": count,
                "mean_probability": round(float(probability[inside].mean()), 5) if count else None,
                "match_rate": round(float(labels[inside].mean()), 5) if count else None,
            }
        )
    return bins


def _group_sizes(groups: pd.DataFrame, true_keys: set[str]) -> list[dict[str, int]]:
    """Groups by size, and how many of each size have every pair of their items among the true pairs."""
    by_size: dict[int, list[int]] = {}
    for _, members in groups.groupby("group_id", sort=False)["item_id"]:
        ids = sorted(members.astype(str))
        exact = all(f"{a}\0{b}" in true_keys for a, b in itertools.combinations(ids, 2))
        counts = by_size.setdefault(len(ids), [0, 0])
        counts[0] += 1
        counts[1] += int(exact)
    return [{"size": size, "groups": n, "exact": exact} for size, (n, exact) in sorted(by_size.items()) if size > 1]


def label_figures(pairs_uri: str, truth_uri: str, *, items: set[str] | None = None, groups_uri: str | None = None) -> dict[str, Any]:
    """Precision–recall per score, score histograms of true matches and other pairs, and with a matcher calibration and groups."""
    wanted = ["query_item_id", "candidate_item_id", "score", "retriever_scores", PROBABILITY]
    present = storage.open_parquet(pairs_uri).schema_arrow.names
    # Pairs written before retriever scores or match probabilities existed have neither: both read as NULL.
    pairs = storage.read_parquet(pairs_uri, columns=[c for c in wanted if c in present]).to_pandas()
    pairs = pairs.assign(**{c: None for c in wanted if c not in present})
    true_keys = true_pair_keys(truth_uri)
    if items is not None:
        pairs = pairs[pairs["query_item_id"].isin(items) & pairs["candidate_item_id"].isin(items)]
        true_keys = {key for key in true_keys if all(i in items for i in key.split("\0"))}
    first = pairs["retriever_scores"].dropna().head(1).tolist()
    retrievers = list(json.loads(first[0])) if first else []
    scores: dict[str, np.ndarray] = {}
    if pairs[PROBABILITY].notna().any():
        scores[PROBABILITY] = pairs[PROBABILITY].to_numpy(dtype=np.float64, na_value=np.nan)
    scores["score"] = pairs["score"].to_numpy(dtype=np.float64)
    scores.update(retriever_score_columns(pa.array(pairs["retriever_scores"].tolist(), pa.string()), retrievers))
    keys = pair_keys(pairs["query_item_id"], pairs["candidate_item_id"])
    # Lists, not objects: the JSON is written with sorted keys, and the page shows the scores in this order.
    curves, histograms = [], []
    by_pair: dict[str, pd.Series] = {}
    for name, values in scores.items():
        per_pair = pd.Series(values, index=keys).dropna().groupby(level=0).max()
        labels = np.fromiter((key in true_keys for key in per_pair.index), dtype=np.int64, count=len(per_pair))
        curves.append({"name": name, **_curve(per_pair.to_numpy(), labels, len(true_keys))})
        histograms.append({"name": name, **_histogram(per_pair.to_numpy(), labels, name == PROBABILITY)})
        by_pair[name] = per_pair
    result: dict[str, Any] = {
        "true_pairs": len(true_keys),
        "precision_recall": curves,
        "score_histograms": histograms,
        "calibration": None,
        "group_sizes": None,
    }
    if PROBABILITY in by_pair:
        probability = by_pair[PROBABILITY]
        labels = np.fromiter((key in true_keys for key in probability.index), dtype=np.int64, count=len(probability))
        result["calibration"] = _calibration(probability.to_numpy(), labels)
        if groups_uri is not None and storage.exists(groups_uri):
            groups = storage.read_parquet(groups_uri, columns=["group_id", "item_id"]).to_pandas()
            if items is not None:
                groups = groups[groups["item_id"].isin(items)]
            result["group_sizes"] = _group_sizes(groups, true_keys)
    return result


def run_of_pairs(pairs_uri: str) -> str | None:
    """The run folder whose published pairs these are: OUT/similar_items.parquet, runs/<id>/outputs/ or runs/<id>/publish/.

    Local links are followed (OUT's files lead through OUT/current to the run); OUT on S3 holds copies, and the
    run_summary.json beside them names the run. None for pairs that aren't a run's.
    """
    folder = pairs_uri.rsplit("/", 1)[0] if storage.is_s3(pairs_uri) else os.path.dirname(os.path.realpath(pairs_uri))
    candidates = [folder.rsplit("/", 1)[0] if storage.is_s3(folder) else os.path.dirname(folder)]
    beside = storage.join(folder, "run_summary.json")
    if storage.exists(beside):
        candidates.append(str(storage.read_json(beside).get("run_uri", "")))
    for run_uri in candidates:
        if run_uri and storage.exists(layout.context(run_uri)) and storage.exists(layout.similar_items(run_uri)):
            return run_uri
    return None
