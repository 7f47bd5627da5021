"""The post_filter step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import numpy as np

from pss_ops import layout, storage
from pss_ops.manifests import (
    FilteredPartition,
)
from pss_ops.warehouse.publish import SIMILAR_ITEMS_COLUMNS
from tests.conftest import Subset
from tests.unit.conftest import Stepped


def test_post_filter_partition_writes_ranked_rows(stepped: Stepped, ag_subset: Subset) -> None:
    k = stepped.ctx.config.k
    rules = stepped.ctx.config.post_filter
    seller = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["seller"]))
    category = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["category"]))
    for queried, filtered in zip(stepped.queried, stepped.filtered):
        assert FilteredPartition.read(layout.filter_manifest(stepped.ctx.run_uri, queried.name)) == filtered
        table = storage.read_parquet(filtered.uri)
        assert table.column_names == list(SIMILAR_ITEMS_COLUMNS)
        frame = table.to_pandas()
        assert len(frame) == filtered.rows
        assert (frame["run_id"] == stepped.ctx.run_id).all() and (frame["application"] == "near_identical").all()
        assert all(seller[q] != seller[c] for q, c in zip(frame["query_item_id"], frame["candidate_item_id"]))
        assert all(category[q] == category[c] == queried.scope for q, c in zip(frame["query_item_id"], frame["candidate_item_id"]))
        assert (frame["score"] >= rules.min_score).all()
        sizes = frame.groupby("query_item_id").size()
        assert sizes.max() <= k
        for _, group in frame.groupby("query_item_id", sort=False):
            assert group["rank"].tolist() == list(range(1, len(group) + 1))
            assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6)
        assert filtered.queries_short_of_k == queried.queries - int((sizes == k).sum())
        source = storage.read_parquet(queried.uri).to_pandas()
        removed = int((source["score"] < rules.min_score).sum())
        assert filtered.candidates_removed["min_score"] == removed
        assert filtered.candidates_removed["different:seller"] == int(
            ((source["score"] >= rules.min_score) & (source["q_seller"] == source["c_seller"])).sum()
        )
