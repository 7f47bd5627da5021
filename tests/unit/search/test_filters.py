"""The post-filter rules (search.filters) on the candidates a real run's query step produced."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pss_ops.config import PostFilterConfig, parse_config
from pss_ops.search.filters import allowed_pairs, candidates_per_query, filter_mask, rank_top_k
from tests.unit.conftest import Stepped, queried_table


def test_filter_mask_attribute_rules_and_score_floor(stepped: Stepped) -> None:
    table = queried_table(stepped)
    # The query step applies different-seller during the search, so every other row is given the query's seller.
    c_seller = [
        q if i % 2 else c for i, (q, c) in enumerate(zip(table.column("q_seller").to_pylist(), table.column("c_seller").to_pylist()))
    ]
    table = table.set_column(table.schema.get_field_index("c_seller"), "c_seller", pa.array(c_seller, pa.string()))
    frame = table.to_pandas()
    assert frame["q_seller"].notna().all() and frame["c_seller"].notna().all()

    different, removed = filter_mask(table, PostFilterConfig(different=("seller",)))
    assert (frame["q_seller"][different] != frame["c_seller"][different]).all()
    assert different.sum() == (frame["q_seller"] != frame["c_seller"]).sum() > 0
    assert removed == {"min_score": 0, "different:seller": int((~different).sum())}

    same, removed = filter_mask(table, PostFilterConfig(same=("seller",)))
    assert (frame["q_seller"][same] == frame["c_seller"][same]).all()
    assert same.sum() == (frame["q_seller"] == frame["c_seller"]).sum() > 0
    assert np.array_equal(same, ~different)

    floor = float(np.median(frame["score"]))
    floored, removed = filter_mask(table, PostFilterConfig(min_score=floor, different=("seller",)))
    assert (frame["score"][floored] >= floor).all()
    assert np.array_equal(floored, different & (frame["score"].to_numpy() >= floor))
    assert removed["min_score"] == int((frame["score"] < floor).sum()) > 0
    assert removed["min_score"] + removed["different:seller"] == int((~floored).sum())


def test_filter_mask_null_attributes_fail_both_rules(stepped: Stepped) -> None:
    table = queried_table(stepped).slice(0, 400)
    q = table.column("q_seller").to_pylist()
    c = table.column("c_seller").to_pylist()
    q_null = [i % 5 == 0 for i in range(len(q))]
    c_null = [i % 7 == 0 for i in range(len(c))]
    table = table.set_column(
        table.schema.get_field_index("q_seller"), "q_seller", pa.array([None if n else v for n, v in zip(q_null, q)], pa.string())
    )
    table = table.set_column(
        table.schema.get_field_index("c_seller"), "c_seller", pa.array([None if n else v for n, v in zip(c_null, c)], pa.string())
    )
    null = np.array(q_null) | np.array(c_null)
    assert null.sum() > 0

    for rules in (PostFilterConfig(same=("seller",)), PostFilterConfig(different=("seller",))):
        survive, _ = filter_mask(table, rules)
        assert not survive[null].any()
    same, _ = filter_mask(table, PostFilterConfig(same=("seller",)))
    different, _ = filter_mask(table, PostFilterConfig(different=("seller",)))
    assert np.array_equal(same | different, ~null)


def test_rank_top_k_contiguous_and_first_survivors(stepped: Stepped) -> None:
    table = queried_table(stepped)
    k = stepped.ctx.config.k
    survive, _ = filter_mask(table, PostFilterConfig(different=("seller",), min_score=0.3))
    top, rank = rank_top_k(table, survive, k)
    frame = top.to_pandas().assign(rank=rank)
    expected = table.to_pandas()[survive].groupby("query_item_id", sort=False).head(k)
    assert frame["candidate_item_id"].tolist() == expected["candidate_item_id"].tolist()
    sizes = frame.groupby("query_item_id").size()
    assert sizes.max() <= k and (sizes < k).any()  # the floor leaves some queries short
    for _, group in frame.groupby("query_item_id", sort=False):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))


def test_allowed_pairs_gives_the_filter_masks_verdicts_pairwise(stepped: Stepped) -> None:
    # The summary's exact recall scores (query × catalog) pairs with allowed_pairs, the post-filter scores
    # candidate rows with filter_mask: on the same pairs, the two must agree rule for rule.
    table = queried_table(stepped).slice(0, 600)
    rules = PostFilterConfig(different=("seller",), min_score=float(np.median(table.column("score").to_numpy())))
    survive, _ = filter_mask(table, rules)
    queries = pa.table({"item_id": table.column("query_item_id"), "seller": table.column("q_seller")})
    candidates = pa.table({"item_id": table.column("candidate_item_id"), "seller": table.column("c_seller")})
    scores = np.tile(table.column("score").to_numpy(), (table.num_rows, 1))
    pairwise = allowed_pairs(rules, queries, candidates, scores)
    assert np.array_equal(np.diagonal(pairwise), survive)
    assert 0 < survive.sum() < len(survive)


def test_allowed_pairs_excludes_the_query_itself_and_nulls() -> None:
    queries = pa.table({"item_id": ["a", "b"], "seller": ["s1", None]})
    candidates = pa.table({"item_id": ["a", "b", "c"], "seller": ["s2", "s1", "s1"]})
    scores = np.full((2, 3), 0.5)
    assert allowed_pairs(PostFilterConfig(different=("seller",)), queries, candidates, scores).tolist() == [
        [False, False, False],  # a itself; then the same seller twice
        [False, False, False],  # b's seller is NULL: it proves no difference
    ]
    assert allowed_pairs(PostFilterConfig(), queries, candidates, scores).tolist() == [[False, True, True], [True, False, True]]


def test_an_attribute_in_both_rules_passes_neither() -> None:
    # The service applies every rule in turn; a config naming one attribute in same and different keeps nothing.
    table = pa.table({"score": [0.9, 0.8], "q_color": ["red", "red"], "c_color": ["red", "blue"]})
    survive, removed = filter_mask(table, PostFilterConfig(same=("color",), different=("color",)))
    assert survive.tolist() == [False, False]
    assert removed == {"min_score": 0, "same:color": 1, "different:color": 1}


def test_candidates_per_query_over_fetches_k() -> None:
    config = parse_config({"application": "a", "features": [{"type": "char_ngram"}], "k": 7, "post_filter": {"candidate_multiplier": 3}})
    assert candidates_per_query(config) == 21
