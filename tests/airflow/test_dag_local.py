"""The similarity DAG on embedded defaults (PSS_EXECUTOR=local), and a category backfill on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from pss_ops import storage
from pss_ops.config import AppConfig
from tests.airflow.conftest import load_dag
from tests.conftest import ROOT, Run, Subset

SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DAY_1 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
DAY_2 = dt.datetime(2024, 3, 2, tzinfo=dt.UTC)


def _config(warm_config: AppConfig, subset: Subset, name: str) -> AppConfig:
    return warm_config.model_copy(update={"application": name, "catalog_uri": str(subset.catalog)})


def _rows(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text("SELECT * FROM similar_items"), conn)
    finally:
        engine.dispose()
    frame["snapshot_date"] = pd.to_datetime(frame["snapshot_date"]).dt.date
    return frame.sort_values(["snapshot_date", "category", "query_item_id", "rank"]).reset_index(drop=True)


def _summary(runs: Path, dag_run: Any) -> dict[str, Any]:
    (path,) = [p for p in runs.rglob("report/run_summary.json") if dag_run.run_id.replace(":", "_").replace("+", "_") in str(p)]
    return storage.read_json(str(path))


def test_local_dag_runs_on_embedded_defaults(
    airflow_db: None, ag_run: Run, warm_config: AppConfig, ag_subset: Subset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_PSS_WAREHOUSE", raising=False)
    runs = tmp_path / "runs"
    dag = load_dag(_config(warm_config, ag_subset, "near_identical_local"), tmp_path, monkeypatch, runs_uri=runs, local_chunk_size=2)
    assert "local" in dag.tags

    dag_run = dag.test(logical_date=DAY_1)
    assert dag_run.state == "success"
    summary = _summary(runs, dag_run)
    # snapshot_date defaults to the logical date; the run lives under <runs>/<app>/<date>/<run id>.
    assert summary["snapshot_date"] == "2024-03-01"
    assert Path(summary["run_uri"]).parent == runs / "near_identical_local" / "2024-03-01"
    # Every vector came from the cache ag_run filled, through separate `pss step` processes.
    assert summary["cache"]["misses"] == 0 and summary["cache"]["hits"] == summary["counts"]["rows_accepted"]
    rows = _rows(f"sqlite:///{runs / 'warehouse.sqlite'}")
    expected = pd.read_parquet(ag_run.out_dir / "similar_items.parquet")
    assert len(rows) == len(expected) == summary["counts"]["rows_published"]
    assert set(zip(rows.query_item_id, rows.candidate_item_id, rows["rank"])) == set(
        zip(expected.query_item_id, expected.candidate_item_id, expected["rank"])
    )
    _assert_paths_to_the_results(dag, dag_run, summary)


class _Recorder:
    """Stands in for an operator's logger: the lines it was given, %-formatted."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


def _assert_paths_to_the_results(dag: Any, dag_run: Any, summary: dict[str, Any]) -> None:
    """Mapped tasks named by partitions, links from report and publish, an informative asset event, the summary logged."""
    from airflow.models import TaskInstance
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from pss_airflow.operators.pss_step import PssLocalStepOperator

    from pss_ops.reporting import page_uri

    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id)).all()
        names = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis}
        links = {
            (x.task_id, x.key): XComModel.deserialize_value(x)
            for x in session.scalars(
                select(XComModel).where(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key.like("_link_%"))
            )
        }
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_dag_id == dag.dag_id, AssetEvent.source_run_id == dag_run.run_id)
        ).all()
        # One event per published (application, date, category) partition, each with the run's extra.
        partitions = sorted(e.partition_key for e in events)
        extras = [dict(e.extra) for e in events]
    # local_chunk_size=2: the first chunk of each mapped step is partitions 0 and 1.
    assert names[("embed", 0)] == "partitions 0–1" and names[("search", 0)] == "partitions 0–1"
    assert names[("build_index", 0)].startswith("partition")
    quoted = dag_run.run_id.replace(":", "%3A").replace("+", "%2B")
    assert links[("report", "_link_RunReportLink")] == f"/pss/runs/{dag.dag_id}/{quoted}/report"
    assert links[("publish", "_link_RunResultsLink")] == f"/pss/runs/{dag.dag_id}/{quoted}/results"
    assert links[("plan", "_link_RunReportLink")] == ""
    assert partitions == [f"{dag.dag_id[4:]}/2024-03-01/group_a", f"{dag.dag_id[4:]}/2024-03-01/group_b"]
    extra = extras[0]
    assert all(e == extra for e in extras)
    assert extra["report"] == page_uri(summary["run_uri"]) and extra["run_uri"] == summary["run_uri"]
    assert extra["table"] == "similar_items" and extra["rows"] == summary["counts"]["rows_published"]
    assert extra["warehouse"].startswith("sqlite:///") and extra["snapshot_date"] == "2024-03-01"

    report = PssLocalStepOperator(task_id="report", step="report", run_uri=summary["run_uri"])
    recorder = _Recorder()
    report._cached_logger = recorder  # type: ignore[assignment]
    report._log_run_summary()
    text = "\n".join(recorder.lines)
    # What `pss summary` prints, ending with where the report is.
    counts = summary["counts"]
    assert f"{counts['rows_read']} read, {counts['rows_accepted']} accepted" in text
    assert f"published        {counts['rows_published']} rows" in text
    assert "run_summary.json" in text and recorder.lines[-1] == f"report           {page_uri(summary['run_uri'])}"


def test_wrong_parameters_fail_prepare_run_at_once(
    airflow_db: None, warm_config: AppConfig, ag_subset: Subset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An unknown category fails prepare_run on its first try (no 3 x 2-minute retries) and nothing else runs."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    monkeypatch.delenv("AIRFLOW_CONN_PSS_WAREHOUSE", raising=False)
    runs = tmp_path / "runs"
    dag = load_dag(_config(warm_config, ag_subset, "near_identical_bad"), tmp_path, monkeypatch, runs_uri=runs)
    started = time.monotonic()
    dag_run = dag.test(logical_date=DAY_1, run_conf={"categories": ["group_a", "toys"]})
    assert dag_run.state == "failed"
    assert time.monotonic() - started < 60
    with create_session() as session:
        tis = {
            ti.task_id: ti
            for ti in session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id))
        }
    assert (tis["prepare_run"].state, tis["prepare_run"].try_number) == ("failed", 1)
    assert tis["plan"].state == "upstream_failed"
    assert not runs.exists()


@pytest.fixture
def postgres_warehouse(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The pss_warehouse connection on a fresh PostgreSQL schema (dropped afterwards)."""
    schema = f"pss_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVER_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{SERVER_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("AIRFLOW_CONN_PSS_WAREHOUSE", json.dumps({"conn_type": "postgres", "extra": {"sqlalchemy_url": url}}))
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.mark.postgres
def test_category_backfill_replaces_only_that_category_on_postgres(
    airflow_db: None,
    ag_run: Run,
    warm_config: AppConfig,
    ag_subset: Subset,
    postgres_warehouse: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    dag = load_dag(_config(warm_config, ag_subset, "near_identical_pg"), tmp_path, monkeypatch, runs_uri=runs)
    assert dag.test(logical_date=DAY_1).state == "success"
    assert dag.test(logical_date=DAY_2).state == "success"
    before = _rows(postgres_warehouse)
    assert set(before["category"]) == {"group_a", "group_b"}
    assert set(before["snapshot_date"]) == {DAY_1.date(), DAY_2.date()}

    # The backfill: group_a only, for the past date DAY_1, with a different k so replaced rows are visible.
    backfill = dag.test(logical_date=DAY_1, run_conf={"categories": ["group_a"], "k": 3})
    assert backfill.state == "success"
    after = _rows(postgres_warehouse)

    untouched = (after["category"] != "group_a") | (after["snapshot_date"] != DAY_1.date())
    was_untouched = (before["category"] != "group_a") | (before["snapshot_date"] != DAY_1.date())
    pd.testing.assert_frame_equal(after[untouched].reset_index(drop=True), before[was_untouched].reset_index(drop=True))
    replaced = after[~untouched]
    assert len(replaced) > 0 and replaced["rank"].max() == 3
    assert set(replaced["run_id"]) == {backfill.run_id.replace(":", "_").replace("+", "_")}
    summary = _summary(runs, backfill)
    assert summary["categories"] == ["group_a"] and summary["counts"]["rows_out_of_scope"] > 0
    assert summary["publish"]["rows_replaced"] == len(before[~was_untouched])


def test_airflow_backfill_create_accepts_the_category_conf(airflow_db: None, tmp_path: Path) -> None:
    """`airflow backfill create ... --dag-run-conf` is the CLI path of the same backfill (dry run: no scheduler here)."""
    env = {**dict(__import__("os").environ), "PYTHONPATH": str(ROOT / "plugins")}
    conf = json.dumps({"categories": ["group_a"]})
    # The DAG must be in the metadata DB first, as the dag-processor would put it.
    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "backfill",
            "create",
            "--dag-id",
            "pss_near_identical",
            "--from-date",
            "2024-03-01",
            "--to-date",
            "2024-03-02",
            "--dag-run-conf",
            conf,
            "--dry-run",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2024-03-01" in done.stdout and "2024-03-02" in done.stdout
