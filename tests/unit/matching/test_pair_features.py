"""Pair features on the candidates a real run's query step produced (tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pss_ops import storage
from pss_ops.matching.pair_features import pair_features
from tests.conftest import Subset
from tests.unit.conftest import Stepped, queried_table


def _items(stepped: Stepped) -> pd.DataFrame:
    frames = [storage.read_parquet(p.uri).to_pandas() for p in stepped.catalog_plan.partitions]
    return pd.concat(frames, ignore_index=True).set_index("item_id")


def test_retriever_columns_ranks_and_reverse_pairs(stepped: Stepped) -> None:
    pairs = queried_table(stepped).to_pandas()
    features = pair_features(pairs, _items(stepped), ["dense", "lexical"], ["seller"])
    assert len(features) == len(pairs) and (features.index == pairs.index).all()
    np.testing.assert_allclose(features["lexical_score"], pairs["score_lexical"], rtol=1e-6)
    # A found row's rank is its place among the query's found rows by that retriever's cosine.
    for _, group in pairs.groupby("query_item_id"):
        found = group[group["found_dense"]].sort_values("score_dense", ascending=False, kind="stable")
        assert features.loc[found.index, "dense_rank"].tolist() == list(range(1, len(found) + 1))
        assert features.loc[group.index[~group["found_dense"]], "dense_rank"].isna().all()
    # The reverse pair's values come from the (candidate, query) row when the table holds it.
    rows = {(q, c): i for i, q, c in zip(pairs.index, pairs["query_item_id"], pairs["candidate_item_id"])}
    reversed_rows = [(i, rows.get((c, q))) for i, q, c in zip(pairs.index, pairs["query_item_id"], pairs["candidate_item_id"])]
    present = [(i, j) for i, j in reversed_rows if j is not None]
    assert present and len(present) < len(pairs)
    for i, j in present[:200]:
        assert features.at[i, "lexical_reverse_score"] == np.float32(pairs.at[j, "score_lexical"])
        assert features.at[i, "dense_reverse_rank"] == features.at[j, "dense_rank"] or np.isnan(features.at[j, "dense_rank"])
    assert features.loc[[i for i, j in reversed_rows if j is None], "lexical_reverse_score"].isna().all()
    # The query step applied different-seller: no pair has the same seller.
    assert (features["same_seller"] == 0).all()


def test_true_pairs_overlap_more_than_other_candidates(stepped: Stepped, ag_subset: Subset) -> None:
    pairs = queried_table(stepped).to_pandas()
    features = pair_features(pairs, _items(stepped), ["dense", "lexical"])
    truth = set(zip(ag_subset.matches["id_a"], ag_subset.matches["id_b"])) | set(zip(ag_subset.matches["id_b"], ag_subset.matches["id_a"]))
    true = np.array([(q, c) in truth for q, c in zip(pairs["query_item_id"], pairs["candidate_item_id"])])
    assert 50 < true.sum() < len(pairs) / 5
    for column in ("title_word_jaccard", "title_char3_jaccard", "part_numbers_shared", "lexical_score"):
        assert features[column][true].mean() > 2 * features[column][~true].mean(), column
    # Two different model numbers are far rarer among true pairs than among the rest.
    conflict = features["part_numbers_conflict"]
    assert conflict[true].mean() < conflict[~true].mean()


def test_text_price_and_brand_features_on_known_pairs() -> None:
    items = pd.DataFrame(
        {
            "title": ["Sony PSLX350H turntable", "sony pslx350h belt-drive turntable", "Sony PSLX300H turntable", "blank"],
            "brand": ["Sony", " sony ", "Sony", None],
            "price": ["99.99", "100", "", "-5"],
        },
        index=pd.Index(["a", "b", "c", "d"], name="item_id"),
    )
    pairs = pd.DataFrame(
        {
            "query_item_id": ["a", "a", "a"],
            "candidate_item_id": ["b", "c", "d"],
            "score_dense": [0.9, 0.8, 0.1],
            "found_dense": [True, True, False],
        }
    )
    f = pair_features(pairs, items, ["dense"])
    assert f["title_word_jaccard"].tolist() == [np.float32(3 / 5), np.float32(2 / 4), np.float32(0.0)]
    assert f["part_numbers_shared"].tolist() == [1, 0, 0]
    assert (
        f["part_numbers_conflict"].iloc[0] == 0 and f["part_numbers_conflict"].iloc[1] == 1 and np.isnan(f["part_numbers_conflict"].iloc[2])
    )
    assert f["price_ratio"].iloc[0] == np.float32(99.99 / 100) and f["price_ratio"].iloc[1:].isna().all()
    assert f["brand_equal"].iloc[0] == 1 and f["brand_equal"].iloc[1] == 1 and np.isnan(f["brand_equal"].iloc[2])
    assert f["dense_rank"].iloc[:2].tolist() == [1, 2] and np.isnan(f["dense_rank"].iloc[2])
