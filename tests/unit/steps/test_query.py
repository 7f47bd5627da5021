"""The query step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from pss_ops import layout, storage
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import (
    QueriedPartition,
)
from pss_ops.steps.query import query_partition
from tests.conftest import Subset
from tests.unit.conftest import TIE, Stepped, scope_vectors


def test_query_top_k_merge_equals_brute_force(stepped: Stepped) -> None:
    """THE top-K merge check: partitioned search + heap merge == exact flat search over the scope."""
    k = stepped.ctx.config.k
    fetch = k * stepped.ctx.config.post_filter.candidate_multiplier
    checked = 0
    for scope in sorted({e.scope for e in stepped.embedded}):
        assert len(stepped.index_plan.for_scope(scope)) >= 2  # the merge really merges
        ids, vectors = scope_vectors(stepped, scope)
        position = {item: i for i, item in enumerate(ids)}
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        exact_scores, exact_rows = flat.search(vectors, len(ids))  # the full exact ranking
        results = pd.concat([storage.read_parquet(q.uri).to_pandas() for q in stepped.queried if q.scope == scope], ignore_index=True)
        for query, group in results.groupby("query_item_id", sort=False):
            q = position[query]
            keep = exact_rows[q] != q
            brute_rows, brute_scores = exact_rows[q][keep], exact_scores[q][keep]
            assert len(group) >= fetch
            for depth in (k, fetch, len(group)):  # deeper-searched queries are checked at their full depth too
                got = group[group["search_rank"] <= depth]
                assert len(got) == depth
                got_rows = np.array([position[c] for c in got["candidate_item_id"]])
                # Reported scores are the true cosine of the pair.
                np.testing.assert_allclose(got["score"].to_numpy(), vectors[got_rows] @ vectors[q], atol=TIE)
                want_rows, want_scores = brute_rows[:depth], brute_scores[:depth]
                np.testing.assert_allclose(np.sort(got["score"].to_numpy())[::-1], want_scores, atol=TIE)
                threshold = want_scores[-1] - TIE
                differ = set(got_rows) ^ set(want_rows)
                # Sets may differ only among items tied at the cut-off.
                assert all(vectors[r] @ vectors[q] <= want_scores[-1] + TIE and vectors[r] @ vectors[q] >= threshold for r in differ)
            checked += 1
    assert checked == stepped.catalog_plan.rows_accepted


def test_query_results_exclude_self_and_are_sorted(stepped: Stepped) -> None:
    fetch = stepped.ctx.config.k * stepped.ctx.config.post_filter.candidate_multiplier
    deeper = 0
    for queried, embedded in zip(stepped.queried, stepped.embedded):
        assert QueriedPartition.read(layout.query_manifest(stepped.ctx.run_uri, queried.name)) == queried
        assert queried.index_partitions_searched == len(stepped.index_plan.for_scope(queried.scope))
        frame = storage.read_parquet(queried.uri).to_pandas()
        item_ids = read_vectors(embedded.uri)[0].column("item_id").to_pylist()
        assert list(dict.fromkeys(frame["query_item_id"])) == item_ids  # every query, in partition order
        assert not (frame["query_item_id"] == frame["candidate_item_id"]).any()
        assert set(frame["category"]) == {queried.scope}
        for _, group in frame.groupby("query_item_id", sort=False):
            assert group["search_rank"].tolist() == list(range(1, len(group) + 1))
            assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6)
            assert group["candidate_item_id"].is_unique
            assert len(group) >= fetch
            deeper += len(group) > fetch
        assert frame["score"].between(-1 - TIE, 1 + TIE).all()
    assert deeper == sum(q.queries_searched_deeper for q in stepped.queried) > 0


def test_query_searches_deeper_until_k_pass_and_counts_queries(stepped: Stepped, ag_subset: Subset, tmp_path: Path) -> None:
    # The module run's embed and index manifests (they point at its data), under a strict post-filter.
    run_uri = tmp_path / "run"
    for step in ("embed", "index"):
        shutil.copytree(Path(stepped.ctx.run_uri) / step, run_uri / step, ignore=shutil.ignore_patterns("*.parquet", "*.faiss"))
    rules = stepped.ctx.config.post_filter.model_copy(update={"min_score": 0.2, "candidate_multiplier": 2})
    config = stepped.ctx.config.model_copy(update={"post_filter": rules})
    ctx = stepped.ctx.model_copy(update={"run_uri": str(run_uri), "config": config})
    k = config.k
    seller = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["seller"]))
    embedded = stepped.embedded[0]

    queried = query_partition(ctx, embedded, stepped.index_plan)

    frame = storage.read_parquet(queried.uri).to_pandas()
    sizes = frame.groupby("query_item_id").size()
    assert queried.search_rounds >= 3  # some queries were searched deeper more than once
    assert queried.queries_searched_deeper == int((sizes > queried.candidates_per_query).sum()) <= queried.queries
    assert 0 < queried.queries_searched_deeper < queried.queries
    # Each query ends with k passing candidates, or having searched the whole scope.
    ids, vectors = scope_vectors(stepped, embedded.scope)
    position = {item: i for i, item in enumerate(ids)}
    for query, group in frame.groupby("query_item_id", sort=False):
        passing = group[(group["score"] >= rules.min_score) & (group["c_seller"] != seller[query])]
        assert len(passing) >= k or len(group) == len(ids) - 1
        # The first k passing candidates are those of filtering the exact full ranking.
        q = position[query]
        scores = vectors @ vectors[q]
        exact = [(s, i) for i, s in enumerate(scores) if i != q and s >= rules.min_score and seller[ids[i]] != seller[query]]
        exact.sort(reverse=True)
        got = passing["score"].to_numpy()[:k]
        np.testing.assert_allclose(got, [s for s, _ in exact[:k]], atol=TIE)
