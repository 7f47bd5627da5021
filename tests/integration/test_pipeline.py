"""End-to-end runs of the pipeline (run_pipeline and the `pss` CLI) on the real Amazon–Google subset."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pss_ops import layout, storage
from pss_ops.catalog.validate import RejectThresholdError
from pss_ops.cli import ARRAY_INDEX_ENV, WAREHOUSE_ENV, main
from pss_ops.config import AppConfig, parse_config
from pss_ops.features.cache.backends import open_cache
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache
from pss_ops.features.compound import content_hashes
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import BuiltIndex, CatalogPlan, EmbeddedPartition, IndexPlan, RunContext
from pss_ops.orchestration.run import run_pipeline
from pss_ops.quality.evaluate import evaluate
from pss_ops.search.indexes import load_index
from pss_ops.steps.build_index import build_index
from pss_ops.steps.embed import embed_partition
from pss_ops.steps.plan import make_context, plan
from pss_ops.steps.plan_index import plan_index
from pss_ops.steps.publish import publish
from pss_ops.steps.query import query_partition
from pss_ops.warehouse.publish import SIMILAR_ITEMS_COLUMNS
from tests.conftest import SNAPSHOT, Run, Subset, with_cache, write_config

PG_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROW_KEY = ["category", "query_item_id", "rank"]
QUIET = {"progress": lambda _: None}


@pytest.fixture(autouse=True)
def _no_ambient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv(ARRAY_INDEX_ENV, raising=False)


def parquet_rows(path: Path | str) -> pd.DataFrame:
    """similar_items rows in a stable order."""
    frame = storage.read_parquet(str(path)).to_pandas()
    return frame.sort_values(ROW_KEY).reset_index(drop=True)


def warehouse_rows(db: Path) -> pd.DataFrame:
    """The SQLite warehouse's similar_items rows, typed like the Parquet."""
    with sqlite3.connect(db) as conn:
        frame = pd.read_sql_query(f"SELECT {', '.join(SIMILAR_ITEMS_COLUMNS)} FROM similar_items", conn)
    return frame.sort_values(ROW_KEY).reset_index(drop=True)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows without run_id and with plain types, for comparing runs."""
    out = frame.drop(columns=["run_id"]).copy()
    out["snapshot_date"] = out["snapshot_date"].astype(str)
    out["rank"] = out["rank"].astype(int)
    # NULL (no matcher) reads as None from a database and as NaN from Parquet.
    out["match_probability"] = out["match_probability"].astype(float)
    return out.sort_values(ROW_KEY).reset_index(drop=True)


def run_vectors(run_uri: str) -> dict[str, np.ndarray]:
    """item_id → embedded vector, over every embed output of a run."""
    found: dict[str, np.ndarray] = {}
    for path in sorted(Path(run_uri, "embed").glob("*.parquet")):
        ids, vectors = read_vectors(str(path))
        found.update(zip(ids.column("item_id").to_pylist(), vectors))
    return found


def copy_warehouse(source: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "warehouse.sqlite", target_dir / "warehouse.sqlite")
    return target_dir / "warehouse.sqlite"


@pytest.fixture(scope="session")
def config_path(tmp_path_factory: pytest.TempPathFactory, warm_config: AppConfig) -> Path:
    """The small config (on the shared, filled cache) as a YAML file for the CLI."""
    return write_config(warm_config, tmp_path_factory.mktemp("config") / "near_identical_small.yaml")


@pytest.fixture(scope="session")
def rerun(tmp_path_factory: pytest.TempPathFactory, ag_run: Run, ag_subset: Subset, warm_config: AppConfig) -> Run:
    """A second run on the unchanged catalog, same snapshot date, into an out dir holding ag_run's warehouse."""
    out_dir = tmp_path_factory.mktemp("rerun")
    copy_warehouse(ag_run.out_dir, out_dir)
    summary = run_pipeline(warm_config, catalog_uri=str(ag_subset.catalog), out_dir=str(out_dir), snapshot_date=SNAPSHOT, **QUIET)
    return Run(summary, out_dir)


# --- one run ----------------------------------------------------------------------------------


def test_run_publishes_cosine_similar_items_and_summary(ag_run: Run, ag_subset: Subset) -> None:
    summary, out = ag_run.summary, ag_run.out_dir
    table = storage.read_parquet(str(out / "similar_items.parquet"))
    assert table.column_names == list(SIMILAR_ITEMS_COLUMNS)
    frame = parquet_rows(out / "similar_items.parquet")
    rows = len(ag_subset.frame)
    assert len(frame) == summary["counts"]["rows_published"] > 0
    assert set(frame["query_item_id"]) <= set(ag_subset.frame["item_id"])
    assert (frame["snapshot_date"] == SNAPSHOT).all() and (frame["run_id"] == summary["run_id"]).all()
    assert frame["rank"].between(1, 10).all()
    assert frame["score"].between(-1.0, 1.0).all()

    # Each row records every retriever's cosine: the dense one is that of the two items' embedded (unit) vectors,
    # and the score is their weighted mean, the weights the config's.
    vectors = run_vectors(summary["run_uri"])
    assert len(vectors) == rows
    sample = frame.sample(300, random_state=7)
    by_retriever = pd.DataFrame([json.loads(text) for text in sample["retriever_scores"]])
    assert list(by_retriever.columns) == ["dense", "lexical"] and by_retriever["lexical"].between(0.0, 1.0).all()
    dots = np.array([vectors[q] @ vectors[c] for q, c in zip(sample["query_item_id"], sample["candidate_item_id"])])
    np.testing.assert_allclose(by_retriever["dense"].to_numpy(), dots, atol=2e-6)
    np.testing.assert_allclose(sample["score"].to_numpy(), 0.3 * by_retriever["dense"] + 0.7 * by_retriever["lexical"], atol=2e-6)
    assert set(frame["found_by"]) <= {"dense", "lexical", "dense,lexical"} and frame["found_by"].str.contains("lexical").mean() > 0.5
    norms = np.linalg.norm(np.stack(list(vectors.values())), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    # The application's rules: same category, other seller.
    seller = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["seller"]))
    category = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["category"]))
    assert all(seller[q] != seller[c] for q, c in zip(frame["query_item_id"], frame["candidate_item_id"]))
    assert all(
        category[q] == category[c] == cat for q, c, cat in zip(frame["query_item_id"], frame["candidate_item_id"], frame["category"])
    )

    on_disk = json.loads((out / "run_summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert on_disk["rejects"]["count"] == 0 and on_disk["rejects"]["reasons"] == {}
    assert on_disk["cache"]["hits"] == 0 and on_disk["cache"]["misses"] == rows  # cold cache
    assert set(on_disk["step_seconds"]) == {"plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish"}
    assert all(isinstance(v, float) and v >= 0 for v in on_disk["step_seconds"].values())
    assert on_disk["search"]["recall_at_k"] >= 0.99 and on_disk["search"]["sample_queries"] == 100
    assert on_disk["counts"]["catalog_partitions"] >= 4 and on_disk["counts"]["index_partitions"] >= 4
    assert pd.read_csv(out / "rejects.csv").empty
    assert comparable(warehouse_rows(out / "warehouse.sqlite")).equals(comparable(frame))


def test_true_pair_recall_on_subset(ag_run: Run, ag_subset: Subset, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = str(ag_run.out_dir / "similar_items.parquet")
    result = evaluate(pairs, str(ag_subset.matches_path), (1, 5, 10))
    assert result["true_pairs"] == len(ag_subset.matches) >= 250
    assert result["pairs_whose_query_has_no_results"] == 0
    assert result["recall@10"] >= 0.9
    assert result["recall@1"] <= result["recall@5"] <= result["recall@10"]

    assert main(["evaluate", "--pairs", pairs, "--truth", str(ag_subset.matches_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


# --- cache ------------------------------------------------------------------------------------


def test_warm_rerun_computes_no_embeddings_and_publishes_identical_rows(ag_run: Run, rerun: Run, ag_subset: Subset) -> None:
    rows = len(ag_subset.frame)
    assert rerun.summary["run_id"] != ag_run.summary["run_id"]
    assert rerun.summary["cache"]["misses"] == 0
    assert rerun.summary["cache"]["hits"] == rows
    first = parquet_rows(ag_run.out_dir / "similar_items.parquet")
    second = parquet_rows(rerun.out_dir / "similar_items.parquet")
    cols = ["category", "query_item_id", "candidate_item_id", "rank", "score"]
    pd.testing.assert_frame_equal(first[cols], second[cols])


def test_changed_title_is_the_only_cache_miss(
    ag_run: Run, ag_subset: Subset, small_config: AppConfig, private_cache: Path, tmp_path: Path
) -> None:
    frame = ag_subset.frame.copy()
    changed = frame.loc[123, "item_id"]
    frame.loc[123, "title"] = frame.loc[123, "title"] + " (2nd edition)"
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)

    summary = run_pipeline(
        with_cache(small_config, private_cache), catalog_uri=str(catalog), out_dir=str(tmp_path / "out"), snapshot_date=SNAPSHOT, **QUIET
    )

    assert summary["cache"]["misses"] == 1
    assert summary["cache"]["hits"] == len(frame) - 1
    before, after = run_vectors(ag_run.summary["run_uri"]), run_vectors(summary["run_uri"])
    differs = [item for item in before if not np.array_equal(before[item], after[item])]
    assert differs == [changed]
    cache = SQLiteEmbeddingCache(str(private_cache))
    try:
        model_id = small_config.model_id
        new_hash = content_hashes(frame.iloc[[123]], ("title",))[0]
        old_hash = content_hashes(ag_subset.frame.iloc[[123]], ("title",))[0]
        assert set(cache.get_many(model_id, [(changed, new_hash)])) == {(changed, new_hash)}
        assert cache.get_many(model_id, [(changed, old_hash)]) == {}
        assert cache.count(model_id) == len(frame)
    finally:
        cache.close()


# --- warehouse --------------------------------------------------------------------------------


def test_republish_same_snapshot_is_idempotent(ag_run: Run, rerun: Run) -> None:
    before = warehouse_rows(ag_run.out_dir / "warehouse.sqlite")
    after = warehouse_rows(rerun.out_dir / "warehouse.sqlite")
    assert len(after) == len(before) == rerun.summary["counts"]["rows_published"]
    assert comparable(after).equals(comparable(before))
    assert set(after["run_id"]) == {rerun.summary["run_id"]}  # replaced, not appended
    assert rerun.summary["publish"]["rows_replaced"] == len(before)
    assert comparable(after).equals(comparable(parquet_rows(rerun.out_dir / "similar_items.parquet")))


def test_categories_run_replaces_only_that_category(ag_run: Run, ag_subset: Subset, config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    db = copy_warehouse(ag_run.out_dir, out)
    before = warehouse_rows(db)
    assert set(before["category"]) == {"group_a", "group_b"}

    code = main(
        [
            "run",
            "--config",
            str(config_path),
            "--catalog",
            str(ag_subset.catalog),
            "--out",
            str(out),
            "--categories",
            "group_a",
            "--snapshot-date",
            SNAPSHOT.isoformat(),
            "--run-id",
            "run-only-group-a",
        ]
    )

    assert code == 0
    after = warehouse_rows(db)
    untouched_before, untouched_after = before[before["category"] == "group_b"], after[after["category"] == "group_b"]
    assert untouched_after.reset_index(drop=True).equals(untouched_before.reset_index(drop=True))
    assert set(untouched_after["run_id"]) == {ag_run.summary["run_id"]}
    redone = after[after["category"] == "group_a"]
    assert set(redone["run_id"]) == {"run-only-group-a"}
    assert comparable(redone).equals(comparable(before[before["category"] == "group_a"]))
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["categories"] == ["group_a"]
    assert summary["counts"]["rows_out_of_scope"] == int((ag_subset.frame["category"] == "group_b").sum())
    assert summary["publish"]["rows_replaced"] == len(redone)


# --- bad input --------------------------------------------------------------------------------


def _with_bad_rows(frame: pd.DataFrame, blank_titles: int) -> pd.DataFrame:
    bad = [frame.iloc[5].to_dict()]  # a duplicate item_id
    bad.append({**frame.iloc[6].to_dict(), "item_id": ""})
    for n in range(blank_titles):
        bad.append({**frame.iloc[7 + n].to_dict(), "item_id": f"test:blank-title-{n}", "title": "  "})
    return pd.concat([frame, pd.DataFrame(bad)], ignore_index=True)


def test_rejects_under_limit_run_and_are_written(ag_subset: Subset, warm_config: AppConfig, tmp_path: Path) -> None:
    frame = _with_bad_rows(ag_subset.frame, blank_titles=1)
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)

    summary = run_pipeline(warm_config, catalog_uri=str(catalog), out_dir=str(tmp_path / "out"), snapshot_date=SNAPSHOT, **QUIET)

    assert summary["counts"]["rows_read"] == len(frame)
    assert summary["counts"]["rows_accepted"] == summary["counts"]["queries"] == len(ag_subset.frame)
    assert summary["rejects"]["count"] == 3
    assert summary["rejects"]["reasons"] == {"duplicate item_id": 1, "empty item_id": 1, "empty title": 1}
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv", dtype=str, keep_default_na=False)
    assert list(rejects.columns) == ["row", "item_id", "reason", "record"]
    assert sorted(rejects["row"].astype(int)) == [len(ag_subset.frame) + 1, len(ag_subset.frame) + 2, len(ag_subset.frame) + 3]
    assert sorted(r.split(":")[0] for r in rejects["reason"]) == ["duplicate item_id", "empty item_id", "empty title"]
    assert "test:blank-title-0" in set(rejects["item_id"])
    assert all(json.loads(record)["seller"] in ("amazon", "google") for record in rejects["record"])
    published = warehouse_rows(tmp_path / "out" / "warehouse.sqlite")
    assert "test:blank-title-0" not in set(published["query_item_id"]) | set(published["candidate_item_id"])


def test_rejects_over_limit_fail_and_publish_nothing(
    ag_run: Run, ag_subset: Subset, warm_config: AppConfig, config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _with_bad_rows(ag_subset.frame, blank_titles=20)
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)
    out = tmp_path / "out"
    db = copy_warehouse(ag_run.out_dir, out)
    before = warehouse_rows(db)

    with pytest.raises(RejectThresholdError, match=r"22 of 762 rows rejected .*max_reject_fraction"):
        run_pipeline(
            warm_config, catalog_uri=str(catalog), out_dir=str(out), snapshot_date=SNAPSHOT, run_id="run-too-many-rejects", **QUIET
        )
    run_uri = out / "runs" / "run-too-many-rejects"
    assert len(pd.read_csv(layout.rejects(str(run_uri)))) == 22  # kept for the operator
    assert not storage.exists(layout.plan_manifest(str(run_uri)))

    capsys.readouterr()
    code = main(["run", "--config", str(config_path), "--catalog", str(catalog), "--out", str(out), "--snapshot-date", "2024-05-02"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pss: error:" in err and "rows rejected" in err and "max_reject_fraction" in err

    pd.testing.assert_frame_equal(warehouse_rows(db), before)
    assert not (out / "similar_items.parquet").exists() and not (out / "run_summary.json").exists()
    assert not list(out.glob("runs/*/publish"))


# --- the `pss step` commands --------------------------------------------------------------------


def test_step_commands_match_pss_run(
    ag_subset: Subset, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_uri = str(tmp_path / "steps" / "run")
    step_db = tmp_path / "steps" / "warehouse.sqlite"

    def step(*args: str) -> str:
        capsys.readouterr()
        assert main(["step", *args]) == 0
        return capsys.readouterr().out

    catalog_plan = CatalogPlan.model_validate_json(
        step(
            "plan",
            "--run-uri",
            run_uri,
            "--config",
            str(config_path),
            "--catalog",
            str(ag_subset.catalog),
            "--snapshot-date",
            SNAPSHOT.isoformat(),
            "--run-id",
            "run-by-steps",
        )
    )
    assert catalog_plan == CatalogPlan.read(layout.plan_manifest(run_uri))
    assert len(catalog_plan.partitions) >= 4
    for number, part in enumerate(catalog_plan.partitions):
        embedded = EmbeddedPartition.model_validate_json(step("embed", "--run-uri", run_uri, "--partition", str(number)))
        assert embedded.name == part.name and embedded.cache_misses == 0
    index_plan = IndexPlan.model_validate_json(step("plan-index", "--run-uri", run_uri))
    # The AWS Batch array index stands in for --partition.
    for number, part in enumerate(index_plan.partitions):
        assert not storage.exists(layout.index_manifest(run_uri, part.name))
        monkeypatch.setenv(ARRAY_INDEX_ENV, str(number))
        built = BuiltIndex.model_validate_json(step("build-index", "--run-uri", run_uri))
        assert (built.number, built.name, built.rows) == (number, part.name, part.rows)
        assert storage.exists(layout.index_manifest(run_uri, part.name))
    monkeypatch.delenv(ARRAY_INDEX_ENV)
    assert main(["step", "query", "--run-uri", run_uri]) == 1  # no partition given: pss: error: ... ARRAY_INDEX_ENV
    for number in range(len(catalog_plan.partitions)):
        step("query", "--run-uri", run_uri, "--partition", str(number))
    for number in range(len(catalog_plan.partitions)):
        monkeypatch.setenv(ARRAY_INDEX_ENV, str(number))
        step("post-filter", "--run-uri", run_uri)
    monkeypatch.delenv(ARRAY_INDEX_ENV)
    step("publish", "--run-uri", run_uri, "--warehouse-url", f"sqlite:///{step_db}")
    summary = json.loads(step("report", "--run-uri", run_uri))
    assert summary["run_id"] == "run-by-steps" and summary["search"]["recall_at_k"] >= 0.99

    out = tmp_path / "run_out"
    assert (
        main(
            [
                "run",
                "--config",
                str(config_path),
                "--catalog",
                str(ag_subset.catalog),
                "--out",
                str(out),
                "--snapshot-date",
                SNAPSHOT.isoformat(),
            ]
        )
        == 0
    )
    by_run = parquet_rows(out / "similar_items.parquet")
    by_steps = parquet_rows(layout.similar_items(run_uri))
    assert len(by_steps) == len(by_run) > 0
    pd.testing.assert_frame_equal(by_steps.drop(columns="run_id"), by_run.drop(columns="run_id"))
    assert comparable(warehouse_rows(step_db)).equals(comparable(warehouse_rows(out / "warehouse.sqlite")))
    assert summary["counts"] == json.loads((out / "run_summary.json").read_text())["counts"]


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the real server and a URL whose search_path points at it; dropped afterwards."""
    schema = f"pss_pipeline_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_SERVER_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield f"{PG_SERVER_URL}?options=-csearch_path%3D{schema}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


def _pg_rows(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sa.text(f"SELECT {', '.join(SIMILAR_ITEMS_COLUMNS)} FROM similar_items"), conn)
    finally:
        engine.dispose()
    return frame.sort_values(ROW_KEY).reset_index(drop=True)


@pytest.mark.postgres
def test_publish_to_postgres(ag_run: Run, ag_subset: Subset, warm_config: AppConfig, pg_url: str, tmp_path: Path) -> None:
    summary = run_pipeline(
        warm_config,
        catalog_uri=str(ag_subset.catalog),
        out_dir=str(tmp_path / "out"),
        warehouse_url=pg_url,
        snapshot_date=SNAPSHOT,
        **QUIET,
    )
    rows = _pg_rows(pg_url)
    expected = parquet_rows(ag_run.out_dir / "similar_items.parquet")
    assert len(rows) == len(expected) == summary["publish"]["rows"]
    assert set(rows["run_id"]) == {summary["run_id"]}
    assert comparable(rows).equals(comparable(expected))
    assert summary["publish"]["warehouse"].startswith("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert not (tmp_path / "out" / "warehouse.sqlite").exists()

    # Publishing the same run again replaces the slice: same rows, nothing doubled.
    ctx = RunContext.read(layout.context(summary["run_uri"]))
    again = publish(ctx, CatalogPlan.read(layout.plan_manifest(ctx.run_uri)), pg_url)
    assert again.rows_replaced == again.rows == len(expected)
    assert _pg_rows(pg_url).equals(rows)


# --- a killed step ----------------------------------------------------------------------------


def _index_dir_listing(run_uri: str) -> list[str]:
    directory = Path(run_uri, "index")
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("failure", ["serialize", "rename"])
def test_killed_build_index_leaves_nothing_half_visible(
    ag_run: Run, ag_subset: Subset, warm_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    ctx = make_context(
        warm_config,
        catalog_uri=str(ag_subset.catalog),
        run_uri=str(tmp_path / "run"),
        snapshot_date=SNAPSHOT,
        run_id="run-killed",
        cache_uri=str(warm_config.cache.uri),
    )
    catalog_plan = plan(ctx)
    cache = open_cache(ctx.cache_uri)
    try:
        embedded = [embed_partition(ctx, p, cache) for p in catalog_plan.partitions]
    finally:
        cache.close()
    index_plan = plan_index(ctx, catalog_plan)
    target = index_plan.partitions[0]

    if failure == "serialize":

        def boom(*_: object) -> None:
            raise MemoryError("killed while serialising")

        monkeypatch.setattr(faiss, "serialize_index", boom)
        expected_error: type[BaseException] = MemoryError
    else:
        real_replace = os.replace

        def replace(src: str, dst: str | os.PathLike[str]) -> None:
            if str(dst).endswith(".faiss"):
                assert Path(src).exists()  # the bytes were written to a temp file first
                raise KeyboardInterrupt("killed before the rename")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        expected_error = KeyboardInterrupt

    with pytest.raises(expected_error):
        build_index(ctx, target)
    monkeypatch.undo()

    listing = _index_dir_listing(ctx.run_uri)
    assert not storage.exists(layout.index_manifest(ctx.run_uri, target.name))
    assert not storage.exists(layout.index_file(ctx.run_uri, target.name))
    assert not [name for name in listing if name.startswith(".") or name.endswith(".tmp")], listing
    assert all(not name.endswith(".json") for name in listing)
    # A later step sees the partition as not built.
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        query_partition(ctx, embedded[0], index_plan)

    built = build_index(ctx, target)
    assert BuiltIndex.read(layout.index_manifest(ctx.run_uri, target.name)) == built
    assert not [name for name in _index_dir_listing(ctx.run_uri) if name.startswith(".") or name.endswith(".tmp")]
    # Same result as ag_run's build of the same partition (same catalog and config).
    reference = BuiltIndex.read(layout.index_manifest(ag_run.summary["run_uri"], target.name))
    assert built.rows == reference.rows
    assert storage.read_parquet(built.ids_uri).equals(storage.read_parquet(reference.ids_uri))
    _, vectors = read_vectors(embedded[0].uri)
    results = []
    for b in (built, reference):
        index = load_index(b.index_uri)
        index.hnsw.efSearch = 512
        results.append(index.search(vectors, 10))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)


def test_a_category_held_by_one_seller_publishes_no_rows_and_says_so(
    ag_subset: Subset, warm_config: AppConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """different-seller excludes every item of a one-seller category: the run finishes at once, names it, and publishes 0 rows for it."""
    frame = ag_subset.frame.copy()
    frame.loc[frame["category"] == "group_b", "seller"] = "amazon"
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)
    config_path = write_config(warm_config, tmp_path / "config.yaml")

    assert (
        main(
            [
                "run",
                "--config",
                str(config_path),
                "--catalog",
                str(catalog),
                "--out",
                str(tmp_path / "out"),
                "--snapshot-date",
                SNAPSHOT.isoformat(),
            ]
        )
        == 0
    )

    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    group_b = int((frame["category"] == "group_b").sum())
    assert summary["search"]["scopes_without_candidates"] == ["group_b"]
    assert summary["search"]["queries_without_candidates"] == group_b
    assert summary["counts"]["queries_short_of_k"] == group_b  # short only where no eligible candidate exists
    published = warehouse_rows(tmp_path / "out" / "warehouse.sqlite")
    assert set(published["category"]) == {"group_a"}
    assert len(published) == warm_config.k * int((frame["category"] == "group_a").sum())
    assert summary["cache"]["misses"] == 0  # the warm cache: no dense embedding computed
    assert "no candidates    1 scope(s) where every item fails the attribute rules, 0 rows: group_b" in capsys.readouterr().out


def test_a_vector_retriever_adds_its_own_candidates_and_cosines(ag_subset: Subset, warm_config: AppConfig, tmp_path: Path) -> None:
    """Three retrievers united: the dense compound, lexical TF-IDF, and an image_vector column searched exactly.

    The image vectors are synthetic (a functional check, not a quality claim): each true pair shares one vector
    up to noise, so the image retriever finds the partner whatever the titles say.
    """
    rng = np.random.default_rng(11)
    frame = ag_subset.frame.copy()
    base = {item: rng.standard_normal(16) for item in frame["item_id"]}
    for a, b in zip(ag_subset.matches["id_a"], ag_subset.matches["id_b"]):
        base[b] = base[a] + 0.05 * rng.standard_normal(16)
    frame["image_vector"] = [json.dumps([round(float(v), 6) for v in base[item]]) for item in frame["item_id"]]
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)
    retrievers = [
        *(r.model_dump() for r in warm_config.retrievers),
        {"type": "vector", "name": "image", "column": "image_vector", "dim": 16},
    ]
    config = parse_config({**warm_config.model_dump(mode="json"), "retrievers": retrievers})

    summary = run_pipeline(config, catalog_uri=str(catalog), out_dir=str(tmp_path / "out"), snapshot_date=SNAPSHOT, **QUIET)

    assert summary["cache"]["misses"] == 0  # the image retriever is not part of the cached dense embedding
    assert summary["search"]["recall_by_retriever"] == {"dense": 1.0, "lexical": 1.0, "image": 1.0}
    unit = {item: v / np.linalg.norm(v) for item, v in base.items()}
    seller = dict(zip(frame["item_id"], frame["seller"]))
    category = dict(zip(frame["item_id"], frame["category"]))
    k = config.k
    queried = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out" / "runs").glob("*/query/*.parquet"))], ignore_index=True)
    cosines = np.array([unit[q] @ unit[c] for q, c in zip(queried["query_item_id"], queried["candidate_item_id"])])
    np.testing.assert_allclose(queried["score_image"], cosines, atol=1e-5)
    for query, group in queried.groupby("query_item_id"):
        eligible = [i for i in frame["item_id"] if category[i] == category[query] and seller[i] != seller[query]]
        want = np.sort([unit[query] @ unit[i] for i in eligible])[::-1][:k]
        found = group[group["found_image"]]["score_image"].to_numpy()
        np.testing.assert_allclose(np.sort(found)[::-1][:k], want, atol=1e-5)  # the image retriever's own top k is exact
    published = parquet_rows(tmp_path / "out" / "similar_items.parquet")
    assert published["found_by"].str.contains("image").any()
    partners = {(a, b) for a, b in zip(ag_subset.matches["id_a"], ag_subset.matches["id_b"])}
    found_partner = {(q, c) for q, c in zip(queried["query_item_id"], queried["candidate_item_id"])} & partners
    image_found = {
        (q, c) for q, c, f in zip(queried["query_item_id"], queried["candidate_item_id"], queried["found_image"]) if f
    } & partners
    assert image_found == found_partner == partners  # every true pair is in the union, found by the image retriever
