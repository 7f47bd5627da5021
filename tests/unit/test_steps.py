"""One focused test per pipeline step, calling the step functions directly on the real catalog subset."""

from __future__ import annotations

import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pss_ops import layout, storage
from pss_ops.config import AppConfig, PostFilterConfig
from pss_ops.features.cache.backends import open_cache
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache
from pss_ops.manifests import (
    BuiltIndex,
    CatalogPlan,
    EmbeddedPartition,
    FilteredPartition,
    IndexPlan,
    PublishResult,
    QueriedPartition,
    RunContext,
)
from pss_ops.steps.build_index import build_index, load_index
from pss_ops.steps.embed import embed_partition, read_vectors
from pss_ops.steps.plan import make_context, plan
from pss_ops.steps.plan_index import plan_index
from pss_ops.steps.post_filter import filter_mask, post_filter_partition, rank_top_k
from pss_ops.steps.publish import publish
from pss_ops.steps.query import query_partition
from pss_ops.steps.report import report
from pss_ops.warehouse.publish import SIMILAR_ITEMS_COLUMNS
from tests.conftest import SNAPSHOT, Subset

TIE = 1e-5


@dataclass(frozen=True)
class Stepped:
    """A run made by calling every step function in order."""

    ctx: RunContext
    catalog_plan: CatalogPlan
    embedded: list[EmbeddedPartition]
    index_plan: IndexPlan
    built: list[BuiltIndex]
    queried: list[QueriedPartition]
    filtered: list[FilteredPartition]
    published: PublishResult
    summary: dict[str, Any]
    warehouse: Path


@pytest.fixture(scope="module")
def stepped(tmp_path_factory: pytest.TempPathFactory, ag_subset: Subset, warm_config: AppConfig) -> Stepped:
    # ef_search above every index partition's size makes each HNSW search exhaustive, so any
    # difference from brute force below is the cross-partition merge's fault, not HNSW's.
    config = warm_config.model_copy(update={"index": warm_config.index.model_copy(update={"ef_search": 512})})
    root = tmp_path_factory.mktemp("stepped")
    ctx = make_context(
        config,
        catalog_uri=str(ag_subset.catalog),
        run_uri=str(root / "run"),
        snapshot_date=SNAPSHOT,
        run_id="run-unit-steps",
        cache_uri=str(config.cache.uri),
    )
    catalog_plan = plan(ctx)
    cache = open_cache(ctx.cache_uri)
    try:
        embedded = [embed_partition(ctx, p, cache) for p in catalog_plan.partitions]
    finally:
        cache.close()
    index_plan = plan_index(ctx, catalog_plan)
    built = [build_index(ctx, p) for p in index_plan.partitions]
    queried = [query_partition(ctx, e, index_plan) for e in embedded]
    filtered = [post_filter_partition(ctx, q) for q in queried]
    warehouse = root / "warehouse.sqlite"
    published = publish(ctx, catalog_plan, f"sqlite:///{warehouse}")
    summary = report(ctx)
    return Stepped(ctx, catalog_plan, embedded, index_plan, built, queried, filtered, published, summary, warehouse)


def _scope_vectors(stepped: Stepped, scope: str) -> tuple[list[str], np.ndarray]:
    ids: list[str] = []
    blocks = []
    for part in stepped.embedded:
        if part.scope == scope:
            table, vectors = read_vectors(part.uri)
            ids.extend(table.column("item_id").to_pylist())
            blocks.append(vectors)
    return ids, np.vstack(blocks)


# --- plan -------------------------------------------------------------------------------------


def test_plan_partitions_cover_accepted_rows_within_one_scope(stepped: Stepped, ag_subset: Subset) -> None:
    catalog_plan = stepped.catalog_plan
    assert catalog_plan.rows_read == len(ag_subset.frame)
    assert catalog_plan.rows_rejected == 0
    assert sum(p.rows for p in catalog_plan.partitions) == catalog_plan.rows_accepted == len(ag_subset.frame)
    assert set(catalog_plan.categories) == set(ag_subset.frame["category"])
    # Several partitions per scope, each holding one scope's rows only.
    assert all(n >= 2 for n in Counter(p.scope for p in catalog_plan.partitions).values())
    seen: list[str] = []
    for part in catalog_plan.partitions:
        frame = storage.read_parquet(part.uri).to_pandas()
        assert len(frame) == part.rows <= stepped.ctx.config.catalog.partition_size
        assert set(frame["category"]) == {part.scope}
        seen.extend(frame["item_id"])
    assert sorted(seen) == sorted(ag_subset.frame["item_id"])
    expected_scope = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["category"]))
    for part in catalog_plan.partitions:
        ids = storage.read_parquet(part.uri, columns=["item_id"]).column("item_id").to_pylist()
        assert {expected_scope[i] for i in ids} == {part.scope}


def test_plan_manifest_is_written_last_and_readable(stepped: Stepped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CatalogPlan.read(layout.plan_manifest(stepped.ctx.run_uri)) == stepped.catalog_plan
    assert RunContext.read(layout.context(stepped.ctx.run_uri)) == stepped.ctx

    ctx = stepped.ctx.model_copy(update={"run_uri": str(tmp_path / "run")})
    real_write = storage.write_parquet
    calls = []

    def failing_second_partition(uri: str, table: pa.Table) -> None:
        calls.append(uri)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(uri, table)

    monkeypatch.setattr(storage, "write_parquet", failing_second_partition)
    with pytest.raises(OSError, match="disk full"):
        plan(ctx)
    assert len(calls) == 2
    assert not storage.exists(layout.plan_manifest(ctx.run_uri))
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        CatalogPlan.read(layout.plan_manifest(ctx.run_uri))

    monkeypatch.setattr(storage, "write_parquet", real_write)
    again = plan(ctx)
    assert CatalogPlan.read(layout.plan_manifest(ctx.run_uri)) == again
    assert again.model_dump(exclude={"partitions", "rejects_uri", "seconds"}) == stepped.catalog_plan.model_dump(
        exclude={"partitions", "rejects_uri", "seconds"}
    )
    assert [(p.name, p.scope, p.rows) for p in again.partitions] == [(p.name, p.scope, p.rows) for p in stepped.catalog_plan.partitions]


# --- embed ------------------------------------------------------------------------------------


def test_embed_unit_vectors_cache_hits_and_full_refresh(stepped: Stepped, tmp_path: Path) -> None:
    ctx = stepped.ctx.model_copy(update={"run_uri": str(tmp_path / "run")})
    partition = stepped.catalog_plan.partitions[-1]
    expected_ids = storage.read_parquet(partition.uri, columns=["item_id"]).column("item_id").to_pylist()
    cache = SQLiteEmbeddingCache(str(tmp_path / "fresh.sqlite"))
    try:
        first = embed_partition(ctx, partition, cache)
        assert (first.rows, first.cache_hits, first.cache_misses) == (partition.rows, 0, partition.rows)
        assert first.dim == ctx.config.dim == 384 + 2048 + 1024
        assert cache.count(ctx.model_id) == partition.rows
        ids, vectors = read_vectors(first.uri)
        assert ids.column("item_id").to_pylist() == expected_ids
        assert vectors.shape == (partition.rows, ctx.config.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert EmbeddedPartition.read(layout.embed_manifest(ctx.run_uri, partition.name)) == first

        second = embed_partition(ctx, partition, cache)
        assert (second.cache_hits, second.cache_misses) == (partition.rows, 0)
        np.testing.assert_array_equal(read_vectors(second.uri)[1], vectors)

        refreshed_ctx = ctx.model_copy(update={"full_refresh": True})
        third = embed_partition(refreshed_ctx, partition, cache)
        assert (third.cache_hits, third.cache_misses) == (0, partition.rows)
        np.testing.assert_allclose(read_vectors(third.uri)[1], vectors, atol=1e-5)
    finally:
        cache.close()
    # The module's run read this partition from the shared cache: same vectors as computed fresh here.
    shared = next(e for e in stepped.embedded if e.name == partition.name)
    assert shared.cache_hits == partition.rows
    np.testing.assert_allclose(read_vectors(shared.uri)[1], vectors, atol=1e-5)


# --- plan_index -------------------------------------------------------------------------------


@pytest.mark.parametrize("partition_size", [150, 100, 61, 7, 2, 10_000])
def test_plan_index_slices_cover_every_row_once_and_are_balanced(stepped: Stepped, tmp_path: Path, partition_size: int) -> None:
    # A copy of the run's embed manifests, so this plan does not replace the module run's index plan.
    run_uri = tmp_path / "run"
    shutil.copytree(Path(stepped.ctx.run_uri) / "embed", run_uri / "embed", ignore=shutil.ignore_patterns("*.parquet"))
    config = stepped.ctx.config.model_copy(update={"index": stepped.ctx.config.index.model_copy(update={"partition_size": partition_size})})
    ctx = stepped.ctx.model_copy(update={"run_uri": str(run_uri), "config": config})

    index_plan = plan_index(ctx, stepped.catalog_plan)

    assert IndexPlan.read(layout.index_plan_manifest(ctx.run_uri)) == index_plan
    assert index_plan.dim == config.dim
    assert [p.number for p in index_plan.partitions] == list(range(len(index_plan.partitions)))
    scope_of_uri = {e.uri: e.scope for e in stepped.embedded}
    covered: Counter[tuple[str, int]] = Counter()
    for part in index_plan.partitions:
        assert part.rows == sum(s.stop - s.start for s in part.slices) <= partition_size
        for piece in part.slices:
            assert scope_of_uri[piece.uri] == part.scope
            assert 0 <= piece.start < piece.stop
            covered.update((piece.uri, row) for row in range(piece.start, piece.stop))
    expected = Counter((e.uri, row) for e in stepped.embedded for row in range(e.rows))
    assert covered == expected
    for scope in {e.scope for e in stepped.embedded}:
        sizes = [p.rows for p in index_plan.for_scope(scope)]
        total = sum(e.rows for e in stepped.embedded if e.scope == scope)
        assert len(sizes) == -(-total // partition_size)
        assert max(sizes) - min(sizes) <= 1, sizes


# --- build_index ------------------------------------------------------------------------------


def test_build_index_ids_round_trip_and_self_search(stepped: Stepped) -> None:
    assert len(stepped.built) == len(stepped.index_plan.partitions) >= 4
    for part, built in zip(stepped.index_plan.partitions, stepped.built):
        assert BuiltIndex.read(layout.index_manifest(stepped.ctx.run_uri, part.name)) == built
        expected_ids: list[str] = []
        blocks = []
        for piece in part.slices:
            table, vectors = read_vectors(piece.uri, piece.start, piece.stop)
            expected_ids.extend(table.column("item_id").to_pylist())
            blocks.append(vectors)
        stored = np.vstack(blocks)
        ids_table = storage.read_parquet(built.ids_uri)
        assert ids_table.column("item_id").to_pylist() == expected_ids
        assert built.rows == part.rows == len(expected_ids)

        index = load_index(built)
        assert index.ntotal == built.rows and index.d == stepped.ctx.config.dim
        index.hnsw.efSearch = 256
        scores, rows = index.search(stored, 1)
        # Every stored vector finds itself first (or an identical twin with the same score).
        exact_self = np.einsum("ij,ij->i", stored, stored)
        twin = np.einsum("ij,ij->i", stored[rows[:, 0]], stored) >= exact_self - TIE
        assert np.all((rows[:, 0] == np.arange(len(stored))) | twin)
        np.testing.assert_allclose(scores[:, 0], exact_self, atol=TIE)
        assert np.mean(rows[:, 0] == np.arange(len(stored))) > 0.95


# --- query ------------------------------------------------------------------------------------


def test_query_top_k_merge_equals_brute_force(stepped: Stepped) -> None:
    """THE top-K merge check: partitioned search + heap merge == exact flat search over the scope."""
    k = stepped.ctx.config.k
    fetch = k * stepped.ctx.config.post_filter.candidate_multiplier
    checked = 0
    for scope in sorted({e.scope for e in stepped.embedded}):
        assert len(stepped.index_plan.for_scope(scope)) >= 2  # the merge really merges
        ids, vectors = _scope_vectors(stepped, scope)
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
    ids, vectors = _scope_vectors(stepped, embedded.scope)
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


# --- post_filter ------------------------------------------------------------------------------


def _queried_table(stepped: Stepped) -> pa.Table:
    return pa.concat_tables(storage.read_parquet(q.uri) for q in stepped.queried)


def test_filter_mask_attribute_rules_and_score_floor(stepped: Stepped) -> None:
    table = _queried_table(stepped)
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
    table = _queried_table(stepped).slice(0, 400)
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
    table = _queried_table(stepped)
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


# --- publish and report -----------------------------------------------------------------------


def test_publish_writes_parquet_and_warehouse(stepped: Stepped) -> None:
    published = stepped.published
    assert PublishResult.read(layout.publish_manifest(stepped.ctx.run_uri)) == published
    expected = pa.concat_tables(storage.read_parquet(f.uri) for f in stepped.filtered)
    parquet = storage.read_parquet(published.parquet_uri)
    assert parquet.num_rows == published.rows == expected.num_rows == sum(f.rows for f in stepped.filtered)
    assert parquet.column("candidate_item_id").to_pylist() == expected.column("candidate_item_id").to_pylist()
    assert set(published.categories) == set(stepped.catalog_plan.categories)
    assert published.rows_replaced == 0 and published.table == "similar_items"
    with sqlite3.connect(stepped.warehouse) as conn:
        rows = conn.execute(
            "SELECT query_item_id, candidate_item_id, rank, score FROM similar_items ORDER BY query_item_id, rank"
        ).fetchall()
    frame = parquet.to_pandas().sort_values(["query_item_id", "rank"])
    assert rows == list(zip(frame["query_item_id"], frame["candidate_item_id"], frame["rank"].astype(int), frame["score"]))


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
    assert search["recall_at_k"] == 1.0
    assert search["queries_searched_deeper"] == sum(q.queries_searched_deeper for q in stepped.queried)
    removed = summary["post_filter"]["candidates_removed"]
    assert removed == {r: sum(f.candidates_removed[r] for f in stepped.filtered) for r in ("min_score", "different:seller")}
    assert set(summary["step_seconds"]) == {"plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish"}
