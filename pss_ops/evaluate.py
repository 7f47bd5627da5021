"""`pss evaluate`: candidate recall@k of published similar items over true match pairs."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd

from pss_ops import storage


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


def evaluate(pairs_uri: str, truth_uri: str, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float | int]:
    """Read the similar-items Parquet and the truth CSV and score them."""
    pairs = storage.read_parquet(pairs_uri, columns=["query_item_id", "candidate_item_id", "rank"]).to_pandas()
    return candidate_recall(pairs, load_truth(truth_uri), ks)
