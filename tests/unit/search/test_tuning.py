"""Index tuning: budget parsing, the per-scope family choice against real measurements, calibration on the built
index (and giving way to the next family), and where the choice is recorded."""

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
    FamilyCost,
    IndexPartition,
    IndexPlan,
    IndexSpec,
    QueriedPartition,
    RowSlice,
)
from pss_ops.orchestration.run import run_pipeline
from pss_ops.search.calibration import calibrate_search, effort_ladder
from pss_ops.search.index_cost import choose_for_scope, hnsw_bytes, max_partition_rows, partition_peak_bytes, predicted_seconds
from pss_ops.search.indexes import build_index as build_faiss_index
from pss_ops.search.indexes import ivf_lists, load_index, search
from pss_ops.search.tuning import BUILD_CHOICES, GRAPH_WORTH_SECONDS, _measure_hnsw, _Truth, recall_at_k, tune_index
from pss_ops.steps.build_index import build_index
from pss_ops.steps.plan import make_context
from pss_ops.steps.plan_index import plan_index
from pss_ops.steps.query import query_partition
from tests.conftest import SNAPSHOT

DIM = 16
ROWS = 4_000
FLAT = IndexSpec(family="flat")


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(ROWS, DIM, seed=3)


def _recall(index: faiss.Index, vectors: np.ndarray, effort: int, search_k: int, k: int, queries: int | None = None) -> float:
    """Recall@k of the index with its first rows (every row by default) as queries, searched as the query step does."""
    asked = vectors[:queries] if queries else vectors
    exact, exact_ids = faiss.knn(asked, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    found, found_ids = search(index, asked, search_k, effort)
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
    hnsw = IndexSpec(family="hnsw", hnsw_m=32)
    assert hnsw_bytes(1_000_000, 128, 32) == int(1_000_000 * (512 + 32 * 8 * 1.1))
    assert partition_peak_bytes(1000, 128, hnsw) > 3 * hnsw_bytes(1000, 128, 32)
    budget = parse_memory("2G")
    rows = max_partition_rows(budget, 128, hnsw)
    assert partition_peak_bytes(rows, 128, hnsw) <= budget < partition_peak_bytes(rows + 1, 128, hnsw)
    assert max_partition_rows(budget, 128, IndexSpec(family="hnsw", hnsw_m=16)) > rows > max_partition_rows(budget, 256, hnsw)
    # An inverted file or exact search holds the vectors and (ivf) an id per row: more rows fit than in a graph.
    ivf = IndexSpec(family="ivf", nlist=100)
    assert max_partition_rows(budget, 128, FLAT) > max_partition_rows(budget, 128, ivf) > rows


# --- the tuner ------------------------------------------------------------------------------------


def test_tuner_measures_the_families_and_chooses_per_scope_by_predicted_cost(vectors: np.ndarray) -> None:
    target, k, candidates = 0.99, 10, 10
    tuning = tune_index(
        vectors[: ROWS // 2],
        scope="big",
        scope_rows=300_000,
        scope_sizes={"big": 300_000, "tiny": 500},
        k=k,
        candidates_per_query=candidates,
        tuning=IndexTuningConfig(target_recall=target, memory_budget="8G", sample_queries=400),
    )
    assert (tuning.target_recall, tuning.memory_budget, tuning.memory_budget_bytes) == (target, "8G", 8 << 30)
    assert (tuning.sample_rows, tuning.sample_queries, tuning.scope_rows, tuning.k) == (ROWS // 2, 400, 300_000, k)
    families = {f.index.family: f for f in tuning.families}
    assert {"flat", "ivf"} <= set(families) and families["flat"].recall_sample == 1.0
    # The inverted file on the sample has lists of the length a full-size one gets, and stops at the first nprobe
    # that meets the target.
    ivf = families["ivf"]
    assert ivf.index.nlist == ivf_lists(ROWS // 2) and ivf.meets_target and ivf.recall_sample >= target
    ladder = [t for t in tuning.trials if t.index.family == "ivf"]
    assert [t.meets_target for t in ladder] == [False] * (len(ladder) - 1) + [True] and ladder[-1].index == ivf.index
    assert all(f.exact_seconds_per_pair > 0 and f.sample_rows == ROWS // 2 for f in tuning.families)

    scopes = {c.scope: c for c in tuning.scopes}
    # A few hundred items: comparing every pair is cheapest, and exact needs no calibration nor alternative.
    assert scopes["tiny"].index == FLAT and scopes["tiny"].alternatives == () and scopes["tiny"].partitions == 1
    # 300k items: exact search would compare 9e10 pairs; something cheaper that meets the target wins.
    big = scopes["big"]
    assert big.index.family != "flat" and big.alternatives[-1] == FLAT
    costs = [seconds for _, seconds, meets in big.ranking if meets]
    assert costs == sorted(costs) and big.ranking[0][0] == big.index.describe() and big.predicted_cpu_seconds == costs[0]
    flat_seconds = next(seconds for name, seconds, _ in big.ranking if name == "Flat")
    assert flat_seconds > 10 * big.predicted_cpu_seconds
    if big.index.family == "ivf":  # lists of the same length as on the sample, so more of them
        assert big.index.nlist == ivf_lists(300_000) and big.index.search_effort == ivf.index.search_effort
    assert tuning.chosen == big.index and tuning.met_target


def test_predicted_costs_pick_exact_for_small_scopes_an_inverted_file_for_large_ones() -> None:
    pair = 2e-9  # seconds per exact comparison
    flat = FamilyCost(
        index=FLAT, recall_sample=1.0, predicted_recall=1.0, build_seconds_per_row=0.0, search_seconds_per_query=pair * 50_000,
        sample_rows=50_000, exact_seconds_per_pair=pair, meets_target=True,
    )  # fmt: skip
    ivf = FamilyCost(
        index=IndexSpec(family="ivf", nlist=195, search_effort=16), recall_sample=0.996, predicted_recall=0.996,
        build_seconds_per_row=2e-5, search_seconds_per_query=1.5e-4, sample_rows=50_000, exact_seconds_per_pair=pair, meets_target=True,
    )  # fmt: skip
    # Exact cost grows with rows x queries; an inverted file's with rows (its lists keep their length).
    assert predicted_seconds(flat, 1_000_000, 1_000_000) / predicted_seconds(flat, 100_000, 100_000) == pytest.approx(100)
    growth = predicted_seconds(ivf, 1_000_000, 1_000_000) / predicted_seconds(ivf, 100_000, 100_000)
    assert 10 <= growth < 15
    budget = 8 << 30
    small = choose_for_scope([flat, ivf], "s", 2_000, dim=128, budget=budget, cap=10**9)
    large = choose_for_scope([flat, ivf], "l", 1_000_000, dim=128, budget=budget, cap=10**9)
    assert small.index == FLAT and large.index.family == "ivf" and large.index.nlist == ivf_lists(1_000_000)
    assert large.alternatives == (FLAT,)
    # A budget that holds a quarter of the scope: four partitions, each searched by every query of the scope.
    quarter = partition_peak_bytes(250_000, 128, large.index)
    split = choose_for_scope([ivf], "l", 1_000_000, dim=128, budget=quarter, cap=10**9)
    assert split.partitions == 4 and split.partition_rows == 250_000 and split.index.nlist == ivf_lists(250_000)
    assert split.predicted_cpu_seconds == pytest.approx(4 * predicted_seconds(ivf, 250_000, 1_000_000), rel=1e-3)
    # A family predicted to miss the target ranks after every one that meets it, however cheap.
    cheap_miss = ivf.model_copy(update={"meets_target": False, "search_seconds_per_query": 1e-9, "build_seconds_per_row": 1e-9})
    assert choose_for_scope([flat, cheap_miss], "l", 1_000_000, dim=128, budget=budget, cap=10**9).index == FLAT


def test_graph_is_measured_only_when_it_could_be_cheapest(vectors: np.ndarray) -> None:
    truth = _Truth(vectors[:2000], 200, 10)
    skipped: list = []
    # Not worth measuring when the best family so far is cheap, nor when a graph's build alone would cost more.
    assert _measure_hnsw(truth, 11, 0.99, 100_000, GRAPH_WORTH_SECONDS / 2, skipped) is None and skipped == []
    assert _measure_hnsw(truth, 11, 0.99, 10**9, GRAPH_WORTH_SECONDS, skipped) is None and skipped == []
    measured: list = []
    graph = _measure_hnsw(truth, 11, 0.99, 2_000, float("inf"), measured)
    assert graph is not None and graph.index.family == "hnsw"
    assert {(t.index.hnsw_m, t.index.ef_construction) for t in measured} == set(BUILD_CHOICES)


def test_small_budget_gives_smaller_partitions_within_it(vectors: np.ndarray) -> None:
    # Room for about a third of the scope per partition.
    budget = partition_peak_bytes(ROWS // 3, DIM, IndexSpec(family="hnsw", hnsw_m=16))
    tuning = tune_index(
        vectors[: ROWS // 2],
        scope="*",
        scope_rows=ROWS,
        k=10,
        candidates_per_query=10,
        tuning=IndexTuningConfig(target_recall=0.95, memory_budget=str(budget), sample_queries=200),
    )
    (choice,) = tuning.scopes
    assert choice.partition_rows <= max_partition_rows(budget, DIM, choice.index) < ROWS
    assert partition_peak_bytes(choice.partition_rows, DIM, choice.index) <= budget and choice.partitions >= 2


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


def _catalog(vectors: np.ndarray, path: Path, categories: list[str]) -> Path:
    pd.DataFrame(
        {
            "item_id": [f"i{n:05d}" for n in range(len(vectors))],
            "title": [f"item {n}" for n in range(len(vectors))],
            "category": categories,
            "image_vector": [json.dumps(v.round(6).tolist()) for v in vectors],
        }
    ).to_csv(path, index=False)
    return path


def test_run_records_the_choice_per_scope_in_plan_indexes_and_summary(vectors: np.ndarray, tmp_path: Path) -> None:
    # One large scope and one of 200 items: the small one is searched exactly.
    categories = ["big"] * (ROWS - 200) + ["small"] * 200
    catalog = _catalog(vectors, tmp_path / "catalog.csv", categories)
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
    summary = run_pipeline(config, catalog_uri=str(catalog), out_dir=str(tmp_path / "out"), snapshot_date=SNAPSHOT, progress=lambda _: None)

    run_uri = summary["run_uri"]
    plan = IndexPlan.read(layout.index_plan_manifest(run_uri))
    tuning = plan.tuning
    assert tuning is not None and tuning.met_target and tuning.sample_rows == 2000 and tuning.sample_scope == "big"
    choices = {c.scope: c for c in tuning.scopes}
    assert choices["small"].index == FLAT
    assert sum(p.rows for p in plan.partitions) == ROWS
    for part in plan.partitions:
        assert (part.index, part.alternatives) == (choices[part.scope].index, choices[part.scope].alternatives)
        assert part.rows <= choices[part.scope].partition_rows
    built_all = [BuiltIndex.read(layout.index_manifest(run_uri, part.name)) for part in plan.partitions]
    for part, built in zip(plan.partitions, built_all):
        if built.index.family == "flat":
            assert built.measured_recall == 1.0 and built.vectors_uri is None
        else:
            # The effort calibrated on the built index, starting from the plan's; what query used.
            assert built.calibrations[0].index == part.index and built.calibrations[-1].met_target
            assert built.index.search_effort == built.calibrations[-1].ladder[-1][0] >= part.index.search_effort
            assert built.measured_recall == built.calibrations[-1].ladder[-1][1] >= 0.99
    assert QueriedPartition.read(layout.query_manifest(run_uri, "part-00000")).index_partitions_searched == len(plan.for_scope("big"))

    reported = summary["search"]["tuning"]
    on_disk = json.loads((tmp_path / "out" / "run_summary.json").read_text())["search"]
    assert reported == on_disk["tuning"]
    assert reported["chosen"] == tuning.chosen.describe() and reported["target_recall"] == 0.99
    assert [(s["scope"], s["index"]) for s in reported["scopes"]] == [(c.scope, c.index.describe()) for c in tuning.scopes]
    assert reported["trials"] == len(tuning.trials) > 0
    assert summary["search"]["index_used"]["indexes"] == sorted({b.index.describe() for b in built_all})
    assert summary["search"]["calibration"] == on_disk["calibration"]
    # The run's own recall check, against exact search, agrees with the tuner's promise.
    assert summary["search"]["recall_at_k"] >= 0.99


# --- the search effort calibrated on the built index ------------------------------------------------

CAL_ROWS, CAL_DIM, CAL_TARGET = 8_000, 32, 0.99
# A sparse graph (M=8, efConstruction=16) on clustered data: at efSearch 8 recall@10 is far below 0.99
# over the whole partition, whatever a sample predicted; efSearch in the low hundreds reaches it.
SPARSE_GRAPH = IndexSpec(family="hnsw", hnsw_m=8, ef_construction=16, search_effort=8)


@pytest.fixture(scope="module")
def cal_vectors() -> np.ndarray:
    return clustered_vectors(CAL_ROWS, CAL_DIM, seed=3)


@pytest.mark.parametrize("spec", [SPARSE_GRAPH, IndexSpec(family="ivf", nlist=64, search_effort=1)], ids=["hnsw", "ivf"])
def test_calibration_raises_the_effort_until_the_built_index_meets_the_target(cal_vectors: np.ndarray, spec: IndexSpec) -> None:
    index = build_faiss_index(cal_vectors, spec)
    before = cal_vectors.copy()
    calibration = calibrate_search(
        index, spec, cal_vectors, k=10, search_k=11, target_recall=CAL_TARGET, queries=500, seed=0, max_effort=4096
    )
    assert np.array_equal(cal_vectors, before)  # searched in place, untouched
    efforts = [effort for effort, _ in calibration.ladder]
    assert efforts == effort_ladder(spec, 4096)[: len(efforts)] and efforts[0] == spec.search_effort
    assert calibration.ladder[0][1] < CAL_TARGET <= calibration.ladder[-1][1] and calibration.met_target
    assert all(r < CAL_TARGET for _, r in calibration.ladder[:-1])  # stopped at the first rung that meets it
    assert (calibration.index, calibration.queries, calibration.search_k, calibration.k) == (spec, 500, 11, 10)
    # Checked on every row, not the calibration's 500: the start fails the target, the calibrated effort meets it.
    assert _recall(index, cal_vectors, spec.search_effort, 11, 10) < CAL_TARGET
    assert _recall(index, cal_vectors, efforts[-1], 11, 10) >= CAL_TARGET
    # Same sample, same ladder (the sample is seeded; the index is already built).
    again = calibrate_search(index, spec, cal_vectors, k=10, search_k=11, target_recall=CAL_TARGET, queries=500, seed=0, max_effort=4096)
    assert again.ladder == calibration.ladder


def test_calibration_stops_at_its_bound_and_says_the_target_was_missed(cal_vectors: np.ndarray) -> None:
    spec = IndexSpec(family="hnsw", hnsw_m=4, ef_construction=8, search_effort=4)
    index = build_faiss_index(cal_vectors, spec)
    calibration = calibrate_search(index, spec, cal_vectors, k=10, search_k=11, target_recall=1.0, queries=200, seed=0, max_effort=32)
    assert [effort for effort, _ in calibration.ladder] == [4, 16, 24, 32]
    assert not calibration.met_target and calibration.ladder[-1][1] < 1.0 and calibration.max_effort == 32


def _one_partition_run(tmp_path: Path, vectors: np.ndarray, spec: IndexSpec, alternatives: tuple[IndexSpec, ...], target: float):
    """A run context, its one embedded partition, and a plan of one index partition as if the tuner had chosen `spec`."""
    rows, dim = vectors.shape
    config = parse_config(
        {
            "application": "calibrated",
            "features": [{"type": "precomputed", "column": "image_vector", "dim": dim}],
            "k": 10,
            "post_filter": {"candidate_multiplier": 1},
            "index": {"tuning": {"target_recall": target, "sample_queries": 500}},
        }
    )
    ctx = make_context(
        config, catalog_uri=str(tmp_path / "none.csv"), run_uri=str(tmp_path / "run"), snapshot_date=SNAPSHOT, run_id="r", cache_uri=""
    )
    uri = layout.embedded(ctx.run_uri, "part-00000")
    item_ids = [f"i{n:05d}" for n in range(rows)]
    storage.write_parquet(
        uri,
        pa.table(
            {
                "item_id": pa.array(item_ids),
                "category": pa.array(["all"] * rows),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            }
        ),
    )
    embedded = EmbeddedPartition(
        name="part-00000", scope="all", uri=uri, rows=rows, dim=dim, model_id=ctx.model_id, cache_hits=0, cache_misses=rows, seconds=0.0
    )
    partition = IndexPartition(
        number=0,
        name="index-00000",
        scope="all",
        rows=rows,
        slices=(RowSlice(uri=uri, start=0, stop=rows),),
        index=spec,
        alternatives=alternatives,
    )
    index_plan = IndexPlan(dim=dim, partitions=(partition,), seconds=0.0)
    index_plan.write(layout.index_plan_manifest(ctx.run_uri))
    return ctx, embedded, partition, index_plan, item_ids


def _published_recall(ctx, embedded, index_plan, vectors: np.ndarray, item_ids: list[str], k: int) -> float:
    """Recall@k of query's top k, scored against exact search over every row."""
    queried = query_partition(ctx, embedded, index_plan)
    result = storage.read_parquet(queried.uri, columns=["query_item_id", "score", "search_rank"]).to_pandas()
    result = result[result["search_rank"] <= k]
    exact, exact_ids = faiss.knn(vectors, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    kth = np.array([row[ids != n][:k][-1] for n, (row, ids) in enumerate(zip(exact, exact_ids))])
    position = {item: n for n, item in enumerate(item_ids)}
    assert len(result) == len(vectors) * k
    return int(np.sum(result["score"].to_numpy() >= kth[result["query_item_id"].map(position).to_numpy()] - 1e-5)) / (len(vectors) * k)


def test_build_index_calibrates_records_and_query_uses_the_calibrated_effort(cal_vectors: np.ndarray, tmp_path: Path) -> None:
    # No alternative: the plan's only choice is calibrated as far as it must go.
    ctx, embedded, partition, index_plan, item_ids = _one_partition_run(tmp_path, cal_vectors, SPARSE_GRAPH, (), CAL_TARGET)
    built = build_index(ctx, partition)
    on_disk = BuiltIndex.read(layout.index_manifest(ctx.run_uri, partition.name))
    (calibration,) = built.calibrations
    assert on_disk == built and built.index.family == "hnsw" and calibration.index == SPARSE_GRAPH
    assert SPARSE_GRAPH.search_effort < built.index.search_effort == calibration.ladder[-1][0]
    assert calibration.ladder[0][1] < CAL_TARGET <= built.measured_recall == calibration.ladder[-1][1]
    assert calibration.search_k == 11 and calibration.queries == 500
    # The written index, at the plan's efSearch, really misses the target on the whole partition.
    assert _recall(load_index(built.index_uri), cal_vectors, SPARSE_GRAPH.search_effort, 11, 10) < CAL_TARGET
    # query searches at the calibrated effort: its top k, scored against exact over every row, meets the target.
    assert _published_recall(ctx, embedded, index_plan, cal_vectors, item_ids, 10) >= CAL_TARGET


def test_a_family_that_would_need_more_than_its_bound_gives_way_to_the_next(cal_vectors: np.ndarray, tmp_path: Path) -> None:
    # An inverted file of 64 lists scanning 1: reaching recall 0.9999 would take far more than 8 lists.
    planned = IndexSpec(family="ivf", nlist=64, search_effort=1)
    ctx, embedded, partition, index_plan, item_ids = _one_partition_run(tmp_path, cal_vectors, planned, (FLAT,), 0.9999)
    built = build_index(ctx, partition)
    (tried,) = built.calibrations
    assert tried.index == planned and not tried.met_target and tried.max_effort == 8 and tried.ladder[-1][0] == 8
    assert built.index == FLAT and built.measured_recall == 1.0 and built.vectors_uri is None
    assert isinstance(load_index(built.index_uri), faiss.IndexFlatIP)
    assert _published_recall(ctx, embedded, index_plan, cal_vectors, item_ids, 10) == 1.0


def test_an_inverted_file_keeps_its_rows_beside_it_for_exact_fallbacks(cal_vectors: np.ndarray, tmp_path: Path) -> None:
    planned = IndexSpec(family="ivf", nlist=ivf_lists(CAL_ROWS), search_effort=4)
    ctx, _, partition, _, _ = _one_partition_run(tmp_path, cal_vectors, planned, (FLAT,), CAL_TARGET)
    built = build_index(ctx, partition)
    assert built.index.family == "ivf" and built.vectors_uri is not None
    assert np.array_equal(np.load(built.vectors_uri), cal_vectors)


# --- untuned configs ------------------------------------------------------------------------------


def _untuned_plan(vectors: np.ndarray, tmp_path: Path, index: dict) -> IndexPlan:
    config = parse_config(
        {"application": "untuned", "features": [{"type": "precomputed", "column": "image_vector", "dim": DIM}], "index": index}
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
    return plan_index(ctx, catalog_plan)


def test_untuned_run_keeps_the_configured_parameters(vectors: np.ndarray, tmp_path: Path) -> None:
    plan = _untuned_plan(vectors, tmp_path, {"hnsw_m": 12, "ef_construction": 64, "ef_search": 48, "partition_size": 1500})
    assert plan.tuning is None
    assert [p.rows for p in plan.partitions] == [1334, 1333, 1333]
    assert {p.index for p in plan.partitions} == {IndexSpec(family="hnsw", hnsw_m=12, ef_construction=64, search_effort=48)}
    assert all(p.alternatives == () for p in plan.partitions)


def test_untuned_inverted_file_sizes_its_lists_to_each_partition(vectors: np.ndarray, tmp_path: Path) -> None:
    plan = _untuned_plan(vectors, tmp_path / "auto", {"family": "ivf", "nprobe": 6, "partition_size": 2000})
    assert {p.index for p in plan.partitions} == {IndexSpec(family="ivf", nlist=ivf_lists(2000), search_effort=6)}
    fixed = _untuned_plan(vectors, tmp_path / "fixed", {"family": "ivf", "nlist": 32})
    assert {p.index for p in fixed.partitions} == {IndexSpec(family="ivf", nlist=32, search_effort=16)}
