"""The review page's data layer on real runs: search, a query's candidates, the queue walk, and the labels file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pss_ops.matching.training import read_labelled_pairs
from pss_ops.review.data import SEARCH_LIMIT, ReviewData, Unknown
from pss_ops.review.labels import LabelStore, ReviewError
from tests.conftest import Subset
from tests.unit.review.conftest import INJECT


@pytest.fixture
def data(injected: Path, tmp_path: Path) -> ReviewData:
    return ReviewData(str(injected), LabelStore(str(tmp_path / "labels.csv")), queue_size=30)


def test_search_finds_query_items_by_title_or_id_and_caps_the_list(data: ReviewData, ag_subset: Subset) -> None:
    first = ag_subset.frame["item_id"].iat[0]
    found = data.search("  ONERROR=alert ")
    assert [hit["id"] for hit in found["items"]] == [first] and found["items"][0]["title"].startswith(INJECT)
    assert found["items"][0]["candidates"] == 10 and not found["more"]
    assert [hit["id"] for hit in data.search(first.upper())["items"]] == [first]
    many = data.search("a")
    assert len(many["items"]) == SEARCH_LIMIT and many["more"]
    assert data.search("   ") == {"items": [], "more": False} and data.search("no such words at all")["items"] == []


def test_a_query_shows_its_candidates_in_rank_order_with_their_details(data: ReviewData, injected: Path, ag_subset: Subset) -> None:
    first = ag_subset.frame["item_id"].iat[0]
    shown = data.query(first)
    assert shown["query"]["id"] == first and shown["query"]["title"].startswith(INJECT)
    published = pq.read_table(injected / "similar_items.parquet").to_pandas()
    expected = published[published["query_item_id"] == first].sort_values("rank")
    assert [p["id_b"] for p in shown["pairs"]] == expected["candidate_item_id"].tolist()
    assert [p["rank"] for p in shown["pairs"]] == list(range(1, 11))
    pair = shown["pairs"][0]
    assert set(pair["found_by"]) <= {"dense", "lexical"} and pair["found_by"] and set(pair["retriever_scores"]) == {"dense", "lexical"}
    assert pair["match_probability"] is None and pair["label"] is None and pair["b"]["title"]
    fields = dict(pair["b"]["fields"])
    assert "seller" in fields and "item_id" not in fields and "title" not in fields
    with pytest.raises(Unknown):
        data.query("amazon:not-an-item")


def test_the_queue_walk_skips_labelled_pairs(data: ReviewData) -> None:
    first = data.queue_at(0, unlabelled=True)
    assert first["position"] == 0 and first["total"] == 30 and first["left"] == 30
    pair = first["pair"]
    assert (pair["id_a"], pair["id_b"]) == data.queue[0] and first["a"]["id"] == pair["id_a"] and first["b"]["id"] == pair["id_b"]
    data.label(pair["id_a"], pair["id_b"], 1)
    assert data.queue_at(0, unlabelled=True)["position"] == 1
    again = data.queue_at(0, unlabelled=False)
    assert again["position"] == 0 and again["pair"]["label"] == 1 and again["left"] == 29
    assert data.queue_at(30, unlabelled=True)["pair"] is None
    with pytest.raises(Unknown):
        data.label(pair["id_a"], pair["id_a"], 1)


def test_the_queue_of_a_run_with_probabilities_starts_at_the_least_sure_pairs(with_probabilities: Path, tmp_path: Path) -> None:
    data = ReviewData(str(with_probabilities), LabelStore(str(tmp_path / "labels.csv")), queue_size=20)
    assert data.summary()["match_probability"]
    probabilities = [data.queue_at(i, unlabelled=False)["pair"]["match_probability"] for i in range(20)]
    published = pq.read_table(with_probabilities / "publish" / "similar_items.parquet").to_pandas()
    assert max(abs(p - 0.5) for p in probabilities) < (published["match_probability"] - 0.5).abs().median()


def test_a_new_session_leaves_labelled_pairs_out_of_the_queue(injected: Path, tmp_path: Path) -> None:
    labels = str(tmp_path / "labels.csv")
    data = ReviewData(str(injected), LabelStore(labels), queue_size=10)
    for (id_a, id_b), label in zip(data.queue[:4], (1, 0, 1, 0)):
        data.label(id_a, id_b, label)
    later = ReviewData(str(injected), LabelStore(labels), queue_size=10)
    assert not set(later.queue) & set(data.queue[:4]) and later.summary()["labelled"] == 4


def test_labels_are_written_for_train_matcher_and_a_second_label_replaces_the_first(data: ReviewData, tmp_path: Path) -> None:
    (a1, b1), (a2, b2), (a3, b3) = data.queue[:3]
    data.label(a1, b1, 1)
    data.label(a2, b2, 1)
    data.label(b2, a2, 0)  # the same pair the other way round: changes the row, adds none
    data.label(a3, b3, 0)
    data.label(a1, b1, 1)
    rows = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    assert list(rows.columns) == ["id_a", "id_b", "label"] and len(rows) == 3
    read = read_labelled_pairs(str(tmp_path / "labels.csv"))
    assert list(zip(read["id_a"], read["id_b"], read["label"])) == [(a1, b1, 1), (a2, b2, 0), (a3, b3, 0)]
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_an_existing_labels_file_keeps_its_rows_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("id_a,id_b,label,note\nx,y,1,checked by hand\n y , z ,0,\n", encoding="utf-8")
    store = LabelStore(str(path))
    assert store.get("y", "x") == 1 and store.get("z", "y") == 0 and len(store) == 2
    store.set("z", "y", 1)
    store.set("a", "b", 0)
    assert path.read_text(encoding="utf-8") == "id_a,id_b,label,note\nx,y,1,checked by hand\n y , z ,1,\na,b,0,\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id_a,id_b,label,category\nx,y,,books\n", r"row 1 \(line 2\): label must be 0 or 1, got ''.*label-queue file"),
        ("id_a,id_b\nx,y\n", "lacks column"),
        ("", "not a readable CSV"),
    ],
)
def test_an_unusable_labels_file_is_refused_before_serving(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReviewError, match=message):
        LabelStore(str(path))
