"""Candidate recall@k against hand-computed values; truth file contract."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pss_ops import storage
from pss_ops.quality.evaluate import candidate_recall, evaluate, load_truth

# Real Amazon-Google ids (data/amazon_google/matches.csv style).
A1, A2, A3, A4, A5 = "amazon:b000jz4hqo", "amazon:b0006zf55o", "amazon:b00004tkvy", "amazon:b000g80lqo", "amazon:b0006se5bq"
G = [f"google:http://www.google.com/base/feeds/snippets/{n}" for n in range(1000, 1030)]


def ranked(query: str, candidates: list[str]) -> list[dict[str, object]]:
    return [{"query_item_id": query, "candidate_item_id": c, "rank": r} for r, c in enumerate(candidates, start=1)]


def pairs_frame() -> pd.DataFrame:
    """A1's match at rank 1, A2's at rank 3, A3's at rank 7, A4's absent from its 10 results."""
    rows = (
        ranked(A1, [G[0], *G[20:29]])
        + ranked(A2, [G[20], G[21], G[1], *G[22:29]])
        + ranked(A3, [*G[20:26], G[2], *G[26:29]])
        + ranked(A4, G[20:30])
    )
    return pd.DataFrame(rows)


def truth_frame(extra: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    pairs = [(A1, G[0]), (A2, G[1]), (A3, G[2]), (A4, G[3]), *(extra or [])]
    return pd.DataFrame(pairs, columns=["id_a", "id_b"])


def test_recall_hand_computed() -> None:
    result = candidate_recall(pairs_frame(), truth_frame(), ks=(1, 5, 10))
    assert result["true_pairs"] == 4
    assert result["pairs_whose_query_has_no_results"] == 0
    assert result["recall@1"] == 0.25
    assert result["recall@5"] == 0.5
    assert result["recall@10"] == 0.75


def test_recall_at_rank_boundaries() -> None:
    result = candidate_recall(pairs_frame(), truth_frame(), ks=(2, 3, 6, 7))
    assert (result["recall@2"], result["recall@3"], result["recall@6"], result["recall@7"]) == (0.25, 0.5, 0.5, 0.75)


def test_query_without_results_counted_and_lowers_recall() -> None:
    truth = truth_frame(extra=[(A5, G[4])])
    result = candidate_recall(pairs_frame(), truth, ks=(1, 5, 10))
    assert result["true_pairs"] == 5
    assert result["pairs_whose_query_has_no_results"] == 1
    assert result["recall@1"] == 0.2
    assert result["recall@5"] == 0.4
    assert result["recall@10"] == 0.6


def test_reverse_direction_is_not_counted() -> None:
    # Pairs are directed: (G0, A1) needs G0's results to contain A1.
    truth = pd.DataFrame([(G[0], A1)], columns=["id_a", "id_b"])
    result = candidate_recall(pairs_frame(), truth, ks=(10,))
    assert result["recall@10"] == 0.0
    assert result["pairs_whose_query_has_no_results"] == 1


def test_recall_rounded_to_four_places() -> None:
    truth = truth_frame(extra=[(A5, G[4]), (A5, G[5])])  # 6 pairs, 1 hit at rank 1
    result = candidate_recall(pairs_frame(), truth, ks=(1,))
    assert result["recall@1"] == round(1 / 6, 4)


def test_empty_truth_gives_nan() -> None:
    result = candidate_recall(pairs_frame(), truth_frame().iloc[:0], ks=(5,))
    assert result["true_pairs"] == 0
    assert math.isnan(result["recall@5"])


def write_truth(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("missing", ["id_a", "id_b"])
def test_truth_missing_column_names_it(tmp_path: Path, missing: str) -> None:
    other = "id_b" if missing == "id_a" else "id_a"
    uri = write_truth(tmp_path / "matches.csv", f"{other},label\n{A1},1\n")
    with pytest.raises(ValueError, match=missing) as info:
        load_truth(uri)
    assert other not in str(info.value).split("column(s)")[-1]


def test_load_truth_keeps_only_pair_columns(tmp_path: Path) -> None:
    uri = write_truth(tmp_path / "matches.csv", f"source,id_a,id_b\nx,{A1},{G[0]}\ny,{A2},{G[1]}\n")
    truth = load_truth(uri)
    assert list(truth.columns) == ["id_a", "id_b"]
    assert truth.values.tolist() == [[A1, G[0]], [A2, G[1]]]


def test_evaluate_reads_parquet_and_truth(tmp_path: Path) -> None:
    pairs = pairs_frame()
    pairs["score"] = 0.5
    pairs_uri = str(tmp_path / "similar_items.parquet")
    storage.write_parquet(pairs_uri, pa.Table.from_pandas(pairs, preserve_index=False))
    truth_uri = write_truth(tmp_path / "matches.csv", "id_a,id_b\n" + "".join(f"{a},{b}\n" for a, b in truth_frame().values))
    result = evaluate(pairs_uri, truth_uri, ks=(1, 5, 10))
    # One true partner each, hits at ranks 1, 3, 7 and none: NDCG@10 = (1 + 1/log2(4) + 1/log2(8) + 0) / 4,
    # AP = 1/rank, MAP@30 = (1 + 1/3 + 1/7 + 0) / 4 = 31/84.
    assert result == {
        "true_pairs": 4,
        "pairs_whose_query_has_no_results": 0,
        "recall@1": 0.25,
        "recall@5": 0.5,
        "recall@10": 0.75,
        "ranking_queries": 4,
        "ranking_queries_without_results": 0,
        "queries_without_true_partners": 0,
        "ndcg@1": 0.25,
        "ndcg@10": round((1 + 1 / 2 + 1 / 3) / 4, 4),
        "ndcg@20": round((1 + 1 / 2 + 1 / 3) / 4, 4),
        "map@30": round(31 / 84, 4),
    }
