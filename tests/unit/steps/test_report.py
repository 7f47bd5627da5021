"""The report step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

from pss_ops import layout, storage
from tests.unit.conftest import Stepped


def test_report_summary_counts_and_recall(stepped: Stepped) -> None:
    summary = stepped.summary
    assert storage.read_json(layout.run_summary(stepped.ctx.run_uri)) == summary
    counts = summary["counts"]
    plan_ = stepped.catalog_plan
    assert counts == {
        "rows_read": plan_.rows_read,
        "rows_accepted": plan_.rows_accepted,
        "rows_rejected": 0,
        "rows_out_of_scope": 0,
        "catalog_partitions": len(plan_.partitions),
        "index_partitions": len(stepped.built),
        "queries": plan_.rows_accepted,
        "rows_published": stepped.published.rows,
        "queries_short_of_k": sum(f.queries_short_of_k for f in stepped.filtered),
    }
    assert summary["cache"]["hits"] == plan_.rows_accepted and summary["cache"]["misses"] == 0
    assert summary["rejects"]["count"] == 0 and summary["rejects"]["reasons"] == {}
    search = summary["search"]
    assert search["k"] == stepped.ctx.config.k and search["sample_queries"] == stepped.ctx.config.quality.recall_sample
    # Exhaustive per-partition search (ef_search 512) plus an exact merge: recall is exactly 1.
    assert search["recall_by_retriever"] == {"dense": 1.0, "lexical": 1.0} and search["recall_at_k"] == 1.0
    assert search["dense_queries_exact"] == sum(q.dense_queries_exact for q in stepped.queried) > 0
    assert search["queries_without_candidates"] == 0 and search["scopes_without_candidates"] == []
    assert [r["name"] for r in search["retrievers"]] == ["dense", "lexical"]
    removed = summary["post_filter"]["candidates_removed"]
    assert removed == {r: sum(f.candidates_removed[r] for f in stepped.filtered) for r in ("min_score", "different:seller")}
    assert set(summary["step_seconds"]) == {"plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish"}
