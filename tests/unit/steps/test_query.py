"""The query step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from pss_ops import layout, storage
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import QueriedPartition
from pss_ops.search.candidates import found_column, score_column
from tests.unit.conftest import TIE, Stepped, scope_vectors


def _scope_frame(stepped: Stepped, scope: str) -> pd.DataFrame:
    """The scope's accepted catalog rows (item_id, title, seller) in embedded order."""
    parts = [
        storage.read_parquet(p.uri, columns=["item_id", "title", "seller"]).to_pandas()
        for p in stepped.catalog_plan.partitions
        if p.scope == scope
    ]
    return pd.concat(parts, ignore_index=True)


def _assert_same_top(got_scores: np.ndarray, want_scores: np.ndarray) -> None:
    """The retriever's list has the exact list's length and scores (sets may differ only among ties at the cut-off)."""
    assert len(got_scores) == len(want_scores)
    np.testing.assert_allclose(np.sort(got_scores)[::-1], want_scores, atol=TIE)


def test_each_retriever_equals_filtered_brute_force(stepped: Stepped) -> None:
    """Dense: exact inner products. Lexical: scikit-learn's TF-IDF (char_wb 2-4, sublinear tf, IDF fitted on the scope)
    as a brute-force sparse product over the real titles. Both with different-seller applied and self excluded."""
    k = stepped.ctx.config.k
    checked = 0
    for scope in sorted({e.scope for e in stepped.embedded}):
        assert len(stepped.index_plan.for_scope(scope)) >= 2  # the merge across index partitions really merges
        ids, vectors = scope_vectors(stepped, scope)
        frame = _scope_frame(stepped, scope)
        assert frame["item_id"].tolist() == ids
        tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(frame["title"])
        lexical = (tfidf @ tfidf.T).toarray()
        dense = vectors @ vectors.T
        seller = frame["seller"].to_numpy()
        position = {item: i for i, item in enumerate(ids)}
        results = pd.concat([storage.read_parquet(q.uri).to_pandas() for q in stepped.queried if q.scope == scope], ignore_index=True)
        for query, group in results.groupby("query_item_id", sort=False):
            q = position[query]
            eligible = (seller != seller[q]) & (np.arange(len(ids)) != q)
            rows = np.array([position[c] for c in group["candidate_item_id"]])
            # Every row carries each retriever's true cosine, whichever retriever found it.
            np.testing.assert_allclose(group[score_column("dense")], dense[q, rows], atol=TIE)
            np.testing.assert_allclose(group[score_column("lexical")], lexical[q, rows], atol=1e-4)
            for name, scores, floor in (("dense", dense[q], -np.inf), ("lexical", lexical[q], 0.0)):
                # The output holds each retriever's own top k of its top `fetch`: those must be the exact ones.
                want = np.sort(scores[eligible & (scores > floor)])[::-1][:k]
                found = group[group[found_column(name)]][score_column(name)].to_numpy()
                _assert_same_top(np.sort(found)[::-1][:k], want)
            # Every row was found by some retriever; the fused top k is there, then rows kept for a retriever's top k.
            assert (group[found_column("dense")] | group[found_column("lexical")]).all()
            assert len(group) <= 3 * k and group["search_rank"].iloc[: min(k, len(group))].tolist() == list(
                range(1, min(k, len(group)) + 1)
            )
            checked += 1
    assert checked == stepped.catalog_plan.rows_accepted


def test_rows_are_ranked_by_the_weighted_mean_of_the_retrievers(stepped: Stepped) -> None:
    weights = {r.name: r.weight for r in stepped.ctx.config.retrievers}
    for queried, embedded in zip(stepped.queried, stepped.embedded):
        assert QueriedPartition.read(layout.query_manifest(stepped.ctx.run_uri, queried.name)) == queried
        assert queried.index_partitions_searched == len(stepped.index_plan.for_scope(queried.scope))
        assert queried.retrievers == ("dense", "lexical") and queried.queries_without_candidates == 0
        frame = storage.read_parquet(queried.uri).to_pandas()
        item_ids = read_vectors(embedded.uri)[0].column("item_id").to_pylist()
        assert list(dict.fromkeys(frame["query_item_id"])) == item_ids  # every query, in partition order
        assert not (frame["query_item_id"] == frame["candidate_item_id"]).any()
        assert (frame["q_seller"] != frame["c_seller"]).all()  # the rule was applied in the search
        assert set(frame["category"]) == {queried.scope}
        fused = sum(w * frame[score_column(n)] for n, w in weights.items()) / sum(weights.values())
        np.testing.assert_allclose(frame["score"], fused, atol=1e-9)
        for _, group in frame.groupby("query_item_id", sort=False):
            assert (np.diff(group["search_rank"].to_numpy()) > 0).all()  # fused ranks, ascending
            assert np.all(np.diff(group["score"].to_numpy()) <= 1e-12)
            assert group["candidate_item_id"].is_unique
        assert frame["score"].between(-1 - TIE, 1 + TIE).all()
