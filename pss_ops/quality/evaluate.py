"""`pss evaluate`: candidate recall@k, NDCG/MAP ranking (paper §5.3) and R@P verification (§5.2) reports."""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from pss_ops import layout, storage
from pss_ops.features.embedded import read_vectors
from pss_ops.features.normalise import l2_normalise
from pss_ops.manifests import CatalogPlan
from pss_ops.quality.metrics import DEFAULT_PRECISIONS, MAP_K, map_summary, ndcg_summary, recall_at_precision

RANKING_KS = (1, 10, 20)


def load_truth(uri: str) -> pd.DataFrame:
    """True pairs as (id_a, id_b); the file needs those two columns."""
    truth = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    missing = [c for c in ("id_a", "id_b") if c not in truth.columns]
    if missing:
        raise ValueError(f"truth file {uri} is missing column(s) {', '.join(missing)}")
    return truth[["id_a", "id_b"]]


def candidate_recall(pairs: pd.DataFrame, truth: pd.DataFrame, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float | int]:
    """Share of true pairs (a, b) with b among a's top-k candidates."""
    ranks = pairs[["query_item_id", "candidate_item_id", "rank"]].rename(columns={"query_item_id": "id_a", "candidate_item_id": "id_b"})
    joined = truth.merge(ranks, on=["id_a", "id_b"], how="left")
    queried = set(pairs["query_item_id"])
    result: dict[str, float | int] = {
        "true_pairs": len(truth),
        "pairs_whose_query_has_no_results": int((~truth["id_a"].isin(queried)).sum()),
    }
    for k in ks:
        result[f"recall@{k}"] = round(float((joined["rank"] <= k).sum()) / len(truth), 4) if len(truth) else float("nan")
    return result


def ranking_report(pairs: pd.DataFrame, truth: pd.DataFrame, ks: Sequence[int] = RANKING_KS, map_k: int = MAP_K) -> dict[str, float | int]:
    """NDCG@ks and MAP@map_k of each query's ranked candidates, where relevant means a true (query, candidate) pair."""
    # Queries: the truth's id_a values plus the queried items. n_relevant is a query's number of distinct true
    # partners, so a query with partners but no results scores 0, and a queried item without a true partner is
    # excluded from the means (counted in queries_without_true_partners). Pairs are directed, as in candidate_recall.
    partners = truth[["id_a", "id_b"]].drop_duplicates().groupby("id_a")["id_b"].agg(set).to_dict()
    ranked = pairs.sort_values(["query_item_id", "rank"], kind="stable").drop_duplicates(["query_item_id", "candidate_item_id"])
    lists = ranked.groupby("query_item_id", sort=False)["candidate_item_id"].agg(list).to_dict()
    queries = sorted(set(lists) | set(partners))
    relevance = [[int(c in partners.get(q, ())) for c in lists.get(q, [])] for q in queries]
    n_relevant = [len(partners.get(q, ())) for q in queries]
    summaries = {f"ndcg@{k}": ndcg_summary(relevance, k, n_relevant) for k in ks}
    summaries[f"map@{map_k}"] = map_summary(relevance, map_k, n_relevant)
    first = next(iter(summaries.values()))
    result: dict[str, float | int] = {
        "ranking_queries": first.queries,
        "ranking_queries_without_results": sum(1 for q in partners if q not in lists),
        "queries_without_true_partners": first.excluded,
    }
    result.update({name: round(summary.value, 4) for name, summary in summaries.items()})
    return result


def evaluate(pairs_uri: str, truth_uri: str, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float | int]:
    """Read the similar-items Parquet and the truth CSV: candidate recall@ks plus the ranking report."""
    pairs = storage.read_parquet(pairs_uri, columns=["query_item_id", "candidate_item_id", "rank"]).to_pandas()
    truth = load_truth(truth_uri)
    return {**candidate_recall(pairs, truth, ks), **ranking_report(pairs, truth)}


def load_items(uri: str) -> set[str]:
    """Item ids from a CSV with an item_id column: the items an evaluation is restricted to."""
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    if "item_id" not in frame.columns:
        raise ValueError(f"items file {uri} has no item_id column")
    return set(frame["item_id"])


def evaluate_matching(
    pairs_uri: str, truth_uri: str, *, threshold: float, groups_uri: str | None = None, items: set[str] | None = None
) -> dict[str, float | int]:
    """Match decisions of a run with a matcher: R@P, F1 and calibration of match_probability, and the groups' pairwise figures.

    With items, only pairs (published and true) whose two items are among them count: a held-out half of a catalog.
    """
    from pss_ops.quality.matching import decision_report, group_report

    published = storage.read_parquet(pairs_uri, columns=["query_item_id", "candidate_item_id", "match_probability"]).to_pandas()
    if published["match_probability"].isna().all():
        raise ValueError(f"{pairs_uri} has no match_probability: the run had no matcher (set matcher: in the config)")
    pairs = published.rename(columns={"query_item_id": "id_a", "candidate_item_id": "id_b", "match_probability": "probability"})
    truth = load_truth(truth_uri)
    if "label" in pd.read_csv(io.BytesIO(storage.read_bytes(truth_uri)), nrows=0).columns:
        labelled = load_labelled(truth_uri)
        truth = labelled.loc[labelled["label"] == 1, ["id_a", "id_b"]]
    if items is not None:
        pairs = pairs[pairs["id_a"].isin(items) & pairs["id_b"].isin(items)]
        truth = truth[truth["id_a"].isin(items) & truth["id_b"].isin(items)]
    report = decision_report(pairs, truth, threshold)
    # Named apart from the ranking report's true_pairs, which counts the whole --truth file even with --items.
    report["true_pairs_in_recall"] = report.pop("true_pairs")
    if groups_uri is not None and storage.exists(groups_uri):
        groups = storage.read_parquet(groups_uri, columns=["category", "group_id", "item_id"]).to_pandas()
        if items is not None:
            groups = groups[groups["item_id"].isin(items)]
        report.update(group_report(groups, truth))
    return report


def _labels(values: pd.Series, where: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[~numbers.isin([0, 1])]
    if len(bad):
        raise ValueError(f"{where}: label must be 0 or 1, got {sorted(set(map(str, bad)))[:5]}")
    return numbers.astype(np.int64)


def load_labelled(uri: str) -> pd.DataFrame:
    """Labelled pairs as (id_a, id_b, label) with label 0/1; the file needs those three columns."""
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    missing = [c for c in ("id_a", "id_b", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"labelled file {uri} is missing column(s) {', '.join(missing)}")
    frame = frame[["id_a", "id_b", "label"]].copy()
    frame["label"] = _labels(frame["label"].str.strip(), uri)
    return frame


def run_vectors(run_uri: str, item_ids: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Item id -> vector from a run's embed/*.parquet, over the partitions of its plan manifest (only item_ids if given)."""
    wanted = None if item_ids is None else set(item_ids)
    vectors: dict[str, np.ndarray] = {}
    for partition in CatalogPlan.read(layout.plan_manifest(run_uri)).partitions:
        uri = layout.embedded(run_uri, partition.name)
        if not storage.exists(uri):
            raise FileNotFoundError(f"embedded partition not found: {uri} (has embed finished for {partition.name}?)")
        ids, matrix = read_vectors(uri)
        for row, item in enumerate(ids.column("item_id").to_pylist()):
            if (wanted is None or item in wanted) and item not in vectors:
                vectors[item] = matrix[row]
    return vectors


def verification_report(
    vectors_by_id: Mapping[str, np.ndarray], labelled: pd.DataFrame, precisions: Sequence[float] = DEFAULT_PRECISIONS
) -> dict[str, float | int]:
    """R@P of the cosine similarity of each labelled pair's vectors; pairs with an item lacking a vector are counted, not scored."""
    # A zero vector has cosine 0 with everything.
    missing_columns = [c for c in ("id_a", "id_b", "label") if c not in labelled.columns]
    if missing_columns:
        raise ValueError(f"labelled pairs are missing column(s) {', '.join(missing_columns)}")
    labels = _labels(labelled["label"], "labelled pairs").to_numpy()
    id_a, id_b = labelled["id_a"].tolist(), labelled["id_b"].tolist()
    present = np.fromiter((a in vectors_by_id and b in vectors_by_id for a, b in zip(id_a, id_b)), dtype=bool, count=len(id_a))
    kept = np.flatnonzero(present)
    if len(kept):
        left = l2_normalise(np.stack([np.asarray(vectors_by_id[id_a[i]], dtype=np.float64) for i in kept]))
        right = l2_normalise(np.stack([np.asarray(vectors_by_id[id_b[i]], dtype=np.float64) for i in kept]))
        scores = np.einsum("ij,ij->i", left, right)
    else:
        scores = np.zeros(0)
    scored = labels[kept]
    result: dict[str, float | int] = {
        "labelled_pairs": len(labels),
        "labelled_pairs_missing_vector": int((~present).sum()),
        "labelled_positives_missing_vector": int(labels[~present].sum()),
        "verification_positives": int(scored.sum()),
        "verification_negatives": int(len(scored) - scored.sum()),
    }
    result.update({key: round(value, 4) for key, value in recall_at_precision(scores, scored, precisions).items()})
    return result


def evaluate_verification(labelled_uri: str, run_uri: str, precisions: Sequence[float] = DEFAULT_PRECISIONS) -> dict[str, float | int]:
    """Read the labelled pairs CSV and the run's vectors and compute the verification report."""
    labelled = load_labelled(labelled_uri)
    vectors = run_vectors(run_uri, set(labelled["id_a"]) | set(labelled["id_b"]))
    return verification_report(vectors, labelled, precisions)


def format_table(report: Mapping[str, float | int | str]) -> str:
    """The report as aligned "name  value" lines, floats to four places."""
    if not report:
        return ""
    width = max(len(name) for name in report)
    lines = []
    for name, value in report.items():
        shown = f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else str(value)
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)
