"""Index tuning: budget parsing, the tuner's choice against a real measurement, and where the choice is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bench.synthetic import clustered_vectors
from pss_ops import layout, storage
from pss_ops.config import ConfigError, IndexTuningConfig, parse_config, parse_memory
from pss_ops.manifests import (
    BuiltIndex,
    CatalogPartition,
    CatalogPlan,
    EmbeddedPartition,
    IndexPartition,
    IndexPlan,
    QueriedPartition,
    RowSlice,
)
from pss_ops.orchestration.run import run_pipeline
from pss_ops.search.hnsw import load_index
from pss_ops.search.tuning import (
    BUILD_CHOICES,
    calibrate_ef_search,
    hnsw_bytes,
    max_partition_rows,
    partition_peak_bytes,
    recall_at_k,
    tune_index,
)
from pss_ops.steps.build_index import build_index
from pss_ops.steps.plan import make_context
from pss_ops.steps.plan_index import plan_index
from pss_ops.steps.query import query_partition
from tests.conftest import SNAPSHOT

DIM = 16
ROWS = 4_000


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(ROWS, DIM, seed=3)


def _measured_recall(vectors: np.ndarray, m: int, ef_construction: int, ef_search: int, search_k: int, k: int, queries: int) -> float:
    """Recall@k of an HNSW index over all rows, searched like the query step, on the first rows as queries."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    exact, exact_ids = flat.search(vectors[:queries], k + 1)
    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(vectors)
    index.hnsw.efSearch = max(ef_search, search_k)
    found, found_ids = index.search(vectors[:queries], search_k)
    return recall_at_k(found, found_ids, exact, exact_ids, k)


# --- budget parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8G", 8 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("64KB", 64 << 10), ("2GiB", 2 << 30), ("4096", 4096), (" 3 t ", 3 << 40)],
)
def test_parse_memory_reads_human_sizes(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "G", "eight", "8X", "8 gigs", "-1G", "0", "nan", "1e999"])
def test_parse_memory_errors_name_the_bad_value(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory(text)
    assert repr(text) in str(caught.value)


def test_config_rejects_a_bad_budget_naming_key_and_value() -> None:
    data = {"application": "t", "features": [{"type": "precomputed", "column": "image_vector", "dim": 4}]}
    with pytest.raises(ConfigError) as caught:
        parse_config({**data, "index": {"tuning": {"memory_budget": "8 gigs"}}})
    assert "index.tuning.memory_budget" in str(caught.value) and "'8 gigs'" in str(caught.value)
    # Untuned configs keep today's fixed parameters; a bare tuning block takes the defaults.
    assert parse_config(data).index.tuning is None
    tuned = parse_config({**data, "index": {"tuning": {}}}).index.tuning
    assert tuned == IndexTuningConfig() and (tuned.target_recall, tuned.memory_budget) == (0.99, "8G")


def test_memory_model_grows_with_rows_width_and_links() -> None:
    assert hnsw_bytes(1_000_000, 128, 32) == int(1_000_000 * (512 + 32 * 8 * 1.1))
    assert partition_peak_bytes(1000, 128, 32) > 3 * hnsw_bytes(1000, 128, 32)
    budget = parse_memory("2G")
    rows = max_partition_rows(budget, 128, 32)
    assert partition_peak_bytes(rows, 128, 32) <= budget < partition_peak_bytes(rows + 1, 128, 32)
    assert max_partition_rows(budget, 128, 16) > rows > max_partition_rows(budget, 256, 32)


# --- the tuner ------------------------------------------------------------------------------------


def test_tuner_meets_its_target_on_clustered_data_and_records_its_choice(vectors: np.ndarray) -> None:
    target, k, candidates = 0.99, 10, 10
    tuning = tune_index(
        vectors[: ROWS // 2],
        scope="*",
        scope_rows=ROWS,
        k=k,
        candidates_per_query=candidates,
        tuning=IndexTuningConfig(target_recall=target, memory_budget="4G", sample_queries=400),
    )

    assert tuning.met_target and tuning.predicted_recall >= target
    assert (tuning.target_recall, tuning.memory_budget, tuning.memory_budget_bytes) == (target, "4G", 4 << 30)
    assert (tuning.sample_rows, tuning.sample_queries, tuning.scope_rows, tuning.k) == (ROWS // 2, 400, ROWS, k)
    assert tuning.partition_size == ROWS  # the budget holds the whole scope: one partition, no merge
    chosen = [
        t for t in tuning.trials if (t.hnsw_m, t.ef_construction, t.ef_search) == (tuning.hnsw_m, tuning.ef_construction, tuning.ef_search)
    ]
    assert len(chosen) == 1 and chosen[0].meets_target
    assert chosen[0].recall_sample == tuning.measured_recall and chosen[0].predicted_recall == tuning.predicted_recall
    # The cheapest setting predicted to meet the target, and every build choice was tried.
    assert chosen[0].estimated_cpu_seconds == min(t.estimated_cpu_seconds for t in tuning.trials if t.meets_target)
    assert {(t.hnsw_m, t.ef_construction) for t in tuning.trials} == set(BUILD_CHOICES)
    assert all(0 <= t.recall_small <= 1 and 0 <= t.recall_sample <= 1 for t in tuning.trials)

    # The promise, checked on the full data the tuner only sampled half of.
    actual = _measured_recall(vectors, tuning.hnsw_m, tuning.ef_construction, tuning.ef_search, candidates + 1, k, 1000)
    assert actual >= target, (actual, tuning.model_dump(exclude={"trials"}))


def test_tuner_reports_an_unreachable_target_instead_of_pretending(vectors: np.ndarray) -> None:
    tuning = tune_index(
        vectors[:1000],
        scope="*",
        scope_rows=1000,
        k=10,
        candidates_per_query=10,
        tuning=IndexTuningConfig(target_recall=1.0, memory_budget="4G", sample_queries=200),
    )
    if tuning.met_target:  # reachable after all: then it was measured, on every query
        assert tuning.measured_recall == 1.0
    else:
        assert tuning.predicted_recall == max(t.predicted_recall for t in tuning.trials) < 1.0


def test_small_budget_gives_smaller_partitions_within_it(vectors: np.ndarray) -> None:
    small_m = min(m for m, _ in BUILD_CHOICES)
    # Room for about a third of the scope per partition at the smallest M.
    budget = partition_peak_bytes(ROWS // 3, DIM, small_m)
    tuning = tune_index(
        vectors[: ROWS // 2],
        scope="*",
        scope_rows=ROWS,
        k=10,
        candidates_per_query=10,
        tuning=IndexTuningConfig(target_recall=0.95, memory_budget=str(budget), sample_queries=200),
    )
    assert tuning.partition_size <= max_partition_rows(budget, DIM, tuning.hnsw_m) < ROWS
    assert tuning.partition_peak_bytes <= budget
    assert all(t.partitions >= 3 for t in tuning.trials)


def test_budget_too_small_for_any_partition_is_a_clear_error(vectors: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"memory budget '64M' .* is too small: an index partition of 1000 rows of width 16"):
        tune_index(
            vectors[:2000],
            scope="*",
            scope_rows=ROWS,
            k=10,
            candidates_per_query=10,
            tuning=IndexTuningConfig(memory_budget="64M"),
        )


# --- the plan, the built indexes, the query and the run summary carry the choice ------------


def test_run_records_the_tuned_choice_in_plan_indexes_and_summary(vectors: np.ndarray, tmp_path: Path) -> None:
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{n:05d}" for n in range(ROWS)],
            "title": [f"item {n}" for n in range(ROWS)],
            "category": "all",
            "image_vector": [json.dumps(v.round(6).tolist()) for v in vectors],
        }
    )
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    config = parse_config(
        {
            "application": "tuned",
            "features": [{"type": "precomputed", "column": "image_vector", "dim": DIM}],
            "k": 10,
            "post_filter": {"candidate_multiplier": 1},
            "catalog": {"partition_size": 1000},
            "quality": {"recall_sample": 400},
            "index": {"tuning": {"target_recall": 0.99, "memory_budget": "2G", "sample_rows": 2000, "sample_queries": 300}},
        }
    )
    summary = run_pipeline(
        config, catalog_uri=str(tmp_path / "catalog.csv"), out_dir=str(tmp_path / "out"), snapshot_date=SNAPSHOT, progress=lambda _: None
    )

    run_uri = summary["run_uri"]
    plan = IndexPlan.read(layout.index_plan_manifest(run_uri))
    tuning = plan.tuning
    assert tuning is not None and tuning.met_target and tuning.sample_rows == 2000
    assert sum(p.rows for p in plan.partitions) == ROWS
    assert all(p.rows <= tuning.partition_size for p in plan.partitions)
    assert {(p.hnsw_m, p.ef_construction, p.ef_search) for p in plan.partitions} == {
        (tuning.hnsw_m, tuning.ef_construction, tuning.ef_search)
    }
    built_all = [BuiltIndex.read(layout.index_manifest(run_uri, part.name)) for part in plan.partitions]
    for built in built_all:
        assert (built.hnsw_m, built.ef_construction) == (tuning.hnsw_m, tuning.ef_construction)
        # efSearch calibrated on the built index, starting from the tuner's; what query used.
        assert built.calibration is not None and built.calibration.planned_ef_search == tuning.ef_search
        assert built.calibration.ladder[0][0] == tuning.ef_search and built.ef_search == built.calibration.ladder[-1][0]
        assert built.ef_search >= tuning.ef_search
        assert built.measured_recall == built.calibration.ladder[-1][1] >= 0.99 and built.calibration.met_target
    assert QueriedPartition.read(layout.query_manifest(run_uri, "part-00000")).index_partitions_searched == len(plan.partitions)

    reported = summary["search"]["tuning"]
    on_disk = json.loads((tmp_path / "out" / "run_summary.json").read_text())["search"]["tuning"]
    assert reported == on_disk
    assert reported["measured_recall"] == tuning.measured_recall and reported["target_recall"] == 0.99
    assert (reported["hnsw_m"], reported["ef_search"], reported["partition_size"]) == (
        tuning.hnsw_m,
        tuning.ef_search,
        tuning.partition_size,
    )
    assert reported["trials"] == len(tuning.trials) > 0
    assert summary["search"]["index_used"]["ef_search"] == sorted({b.ef_search for b in built_all})
    calibration = summary["search"]["calibration"]
    assert calibration == on_disk_calibration(tmp_path)
    assert [(c["name"], c["ef_search"], c["measured_recall"]) for c in calibration["partitions"]] == [
        (b.name, b.ef_search, b.measured_recall) for b in built_all
    ]
    assert calibration["min_measured_recall"] == min(b.measured_recall for b in built_all) and calibration["met_target"]
    # The run's own recall check, against exact search, agrees with the tuner's promise.
    assert summary["search"]["recall_at_k"] >= 0.99


def on_disk_calibration(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "run_summary.json").read_text())["search"]["calibration"]


# --- efSearch calibrated on the built index ------------------------------------------------------------

CAL_ROWS, CAL_DIM = 8_000, 32
# A sparse graph (M=8, efConstruction=16) on clustered data: at efSearch 8 recall@10 is far below 0.99
# over the whole partition, whatever a sample predicted; efSearch in the low hundreds reaches it.
CAL_M, CAL_EF_CONSTRUCTION, CAL_START_EF, CAL_TARGET = 8, 16, 8, 0.99


@pytest.fixture(scope="module")
def cal_vectors() -> np.ndarray:
    return clustered_vectors(CAL_ROWS, CAL_DIM, seed=3)


def _recall_over_all_rows(index: faiss.Index, vectors: np.ndarray, ef_search: int, search_k: int, k: int) -> float:
    """Recall@k of every row as a query against exact search, searched as the query step searches."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    exact, exact_ids = flat.search(vectors, k + 1)
    index.hnsw.efSearch = max(ef_search, search_k)
    found, found_ids = index.search(vectors, search_k)
    return recall_at_k(found, found_ids, exact, exact_ids, k)


def test_calibration_doubles_ef_search_until_the_built_index_meets_the_target(cal_vectors: np.ndarray) -> None:
    index = faiss.IndexHNSWFlat(CAL_DIM, CAL_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = CAL_EF_CONSTRUCTION
    index.add(cal_vectors)
    before = cal_vectors.copy()
    calibration = calibrate_ef_search(
        index, cal_vectors, start_ef=CAL_START_EF, k=10, search_k=11, target_recall=CAL_TARGET, queries=500, seed=0
    )
    assert np.array_equal(cal_vectors, before)  # searched in place, untouched
    efs = [ef for ef, _ in calibration.ladder]
    assert efs[0] == CAL_START_EF and all(b == 2 * a for a, b in zip(efs, efs[1:]))
    assert calibration.ladder[0][1] < CAL_TARGET <= calibration.ladder[-1][1] and calibration.met_target
    assert all(r < CAL_TARGET for _, r in calibration.ladder[:-1])  # stopped at the first rung that meets it
    assert (calibration.planned_ef_search, calibration.queries, calibration.search_k, calibration.k) == (CAL_START_EF, 500, 11, 10)
    # Checked on every row, not the calibration's 500: the start fails the target, the calibrated efSearch meets it.
    assert _recall_over_all_rows(index, cal_vectors, CAL_START_EF, 11, 10) < CAL_TARGET
    assert _recall_over_all_rows(index, cal_vectors, efs[-1], 11, 10) >= CAL_TARGET
    # Same sample, same ladder (the sample is seeded; the graph is already built).
    again = calibrate_ef_search(index, cal_vectors, start_ef=CAL_START_EF, k=10, search_k=11, target_recall=CAL_TARGET, queries=500, seed=0)
    assert again.ladder == calibration.ladder


def test_calibration_stops_at_its_ceiling_and_says_the_target_was_missed(cal_vectors: np.ndarray) -> None:
    index = faiss.IndexHNSWFlat(CAL_DIM, 4, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 8
    index.add(cal_vectors)
    calibration = calibrate_ef_search(index, cal_vectors, start_ef=4, k=10, search_k=11, target_recall=1.0, queries=200, seed=0, max_ef=32)
    assert [ef for ef, _ in calibration.ladder] == [4, 8, 16, 32]
    assert not calibration.met_target and calibration.ladder[-1][1] < 1.0


def test_build_index_calibrates_records_and_query_uses_the_calibrated_ef_search(cal_vectors: np.ndarray, tmp_path: Path) -> None:
    k = 10
    config = parse_config(
        {
            "application": "calibrated",
            "features": [{"type": "precomputed", "column": "image_vector", "dim": CAL_DIM}],
            "k": k,
            "post_filter": {"candidate_multiplier": 1},
            "index": {"tuning": {"target_recall": CAL_TARGET, "sample_queries": 500}},
        }
    )
    ctx = make_context(
        config, catalog_uri=str(tmp_path / "none.csv"), run_uri=str(tmp_path / "run"), snapshot_date=SNAPSHOT, run_id="r", cache_uri=""
    )
    uri = layout.embedded(ctx.run_uri, "part-00000")
    item_ids = [f"i{n:05d}" for n in range(CAL_ROWS)]
    storage.write_parquet(
        uri,
        pa.table(
            {
                "item_id": pa.array(item_ids),
                "category": pa.array(["all"] * CAL_ROWS),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(cal_vectors.reshape(-1)), CAL_DIM),
            }
        ),
    )
    embedded = EmbeddedPartition(
        name="part-00000",
        scope="all",
        uri=uri,
        rows=CAL_ROWS,
        dim=CAL_DIM,
        model_id=ctx.model_id,
        cache_hits=0,
        cache_misses=CAL_ROWS,
        seconds=0.0,
    )
    # A plan as if the tuner had chosen efSearch 8 from a small sample: too low for the whole partition.
    partition = IndexPartition(
        number=0,
        name="index-00000",
        scope="all",
        rows=CAL_ROWS,
        slices=(RowSlice(uri=uri, start=0, stop=CAL_ROWS),),
        hnsw_m=CAL_M,
        ef_construction=CAL_EF_CONSTRUCTION,
        ef_search=CAL_START_EF,
    )
    index_plan = IndexPlan(dim=CAL_DIM, partitions=(partition,), seconds=0.0)
    index_plan.write(layout.index_plan_manifest(ctx.run_uri))

    built = build_index(ctx, partition)
    on_disk = BuiltIndex.read(layout.index_manifest(ctx.run_uri, partition.name))
    assert on_disk == built and built.calibration is not None
    assert built.calibration.planned_ef_search == CAL_START_EF < built.ef_search == built.calibration.ladder[-1][0]
    assert built.calibration.ladder[0][1] < CAL_TARGET <= built.measured_recall == built.calibration.ladder[-1][1]
    assert built.calibration.search_k == k + 1 and built.calibration.queries == 500

    # The written index, at the plan's efSearch, really misses the target on the whole partition.
    written = load_index(built.index_uri)
    assert _recall_over_all_rows(written, cal_vectors, CAL_START_EF, k + 1, k) < CAL_TARGET

    # query searches at the calibrated efSearch: its top k, scored against exact over every row, meets the target.
    queried = query_partition(ctx, embedded, index_plan)
    result = storage.read_parquet(queried.uri, columns=["query_item_id", "score", "search_rank"]).to_pandas()
    result = result[result["search_rank"] <= k]
    flat = faiss.IndexFlatIP(CAL_DIM)
    flat.add(cal_vectors)
    exact, exact_ids = flat.search(cal_vectors, k + 1)
    kth = np.array([row[ids != n][:k][-1] for n, (row, ids) in enumerate(zip(exact, exact_ids))])
    position = {item: n for n, item in enumerate(item_ids)}
    hits = int(np.sum(result["score"].to_numpy() >= kth[result["query_item_id"].map(position).to_numpy()] - 1e-5))
    assert len(result) == CAL_ROWS * k
    assert hits / (CAL_ROWS * k) >= CAL_TARGET


def test_untuned_run_keeps_the_configured_parameters(vectors: np.ndarray, tmp_path: Path) -> None:
    config = parse_config(
        {
            "application": "untuned",
            "features": [{"type": "precomputed", "column": "image_vector", "dim": DIM}],
            "index": {"hnsw_m": 12, "ef_construction": 64, "ef_search": 48, "partition_size": 1500},
        }
    )
    ctx = make_context(
        config, catalog_uri=str(tmp_path / "none.csv"), run_uri=str(tmp_path / "run"), snapshot_date=SNAPSHOT, run_id="r", cache_uri=""
    )
    uri = layout.embedded(ctx.run_uri, "part-00000")
    table = pa.table(
        {
            "item_id": pa.array([f"i{n}" for n in range(ROWS)]),
            "category": pa.array(["all"] * ROWS),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
        }
    )
    storage.write_parquet(uri, table)
    EmbeddedPartition(
        name="part-00000", scope="all", uri=uri, rows=ROWS, dim=DIM, model_id=ctx.model_id, cache_hits=0, cache_misses=ROWS, seconds=0.0
    ).write(layout.embed_manifest(ctx.run_uri, "part-00000"))
    catalog_plan = CatalogPlan(
        partitions=(CatalogPartition(name="part-00000", uri="unused", scope="all", rows=ROWS),),
        categories=("all",),
        rows_read=ROWS,
        rows_accepted=ROWS,
        rows_rejected=0,
        rows_out_of_scope=0,
        reject_reasons={},
        rejects_uri="unused",
        seconds=0.0,
    )
    plan = plan_index(ctx, catalog_plan)
    assert plan.tuning is None
    assert [p.rows for p in plan.partitions] == [1334, 1333, 1333]
    assert {(p.hnsw_m, p.ef_construction, p.ef_search) for p in plan.partitions} == {(12, 64, 48)}
    # No tuning, no calibration: the built index keeps the configured efSearch.
    built = build_index(ctx, plan.partitions[0])
    assert (built.hnsw_m, built.ef_construction, built.ef_search, built.measured_recall, built.calibration) == (12, 64, 48, None, None)
