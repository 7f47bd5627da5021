"""The similarity DAG in Batch mode on moto: S3 manifests, DynamoDB cache, array jobs run by the harness."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from pss_ops import layout, storage
from pss_ops.config import AppConfig, BatchConfig, BatchStepResources
from pss_ops.orchestration.run import run_pipeline
from tests.airflow.conftest import load_dag
from tests.aws.batch_harness import BatchHarness
from tests.aws.conftest import CREDENTIALS, REGION, S3Bucket, unique_name
from tests.conftest import Subset

SNAPSHOT = dt.datetime(2024, 6, 3, tzinfo=dt.UTC)
KEY = ["category", "query_item_id", "rank"]


@pytest.fixture
def batch_queue(aws_client: Callable[[str], Any]) -> dict[str, str]:
    """A moto compute environment, job queue and job definition for the pss image."""
    batch, iam = aws_client("batch"), aws_client("iam")
    role = iam.create_role(RoleName=unique_name("pss-batch"), AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    environment = batch.create_compute_environment(
        computeEnvironmentName=unique_name("pss-ce"), type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    queue = batch.create_job_queue(
        jobQueueName=unique_name("pss-queue"),
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
    )
    definition = batch.register_job_definition(
        jobDefinitionName=unique_name("pss-step"),
        type="container",
        containerProperties={"image": "pss-batch:latest", "vcpus": 1, "memory": 2048, "command": ["--help"]},
    )
    return {"job_queue": queue["jobQueueName"], "job_definition": definition["jobDefinitionName"]}


@pytest.fixture
def airflow_aws(aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """aws_default points at moto (endpoint_url in the connection); the warehouse is a SQLite file."""
    connection = {
        "conn_type": "aws",
        "login": CREDENTIALS["aws_access_key_id"],
        "password": CREDENTIALS["aws_secret_access_key"],
        "extra": {"endpoint_url": aws_env, "region_name": REGION},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    warehouse = tmp_path / "warehouse.sqlite"
    monkeypatch.setenv("AIRFLOW_CONN_PSS_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    return warehouse


@pytest.fixture
def batch_setup(
    airflow_db: None,
    aws_env: str,
    airflow_aws: Path,
    batch_queue: dict[str, str],
    s3_bucket: S3Bucket,
    cache_table: str,
    ag_subset: Subset,
    small_config: AppConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[tuple[Any, AppConfig, BatchHarness, Path]]:
    """A Batch-mode DAG over the subset catalog on S3, with the harness installed."""
    catalog_uri = storage.join(s3_bucket.uri, "catalogs", "ag_subset.csv")
    storage.write_bytes(catalog_uri, ag_subset.catalog.read_bytes())
    config = small_config.model_copy(
        update={
            "application": "near_identical_batch",
            "catalog_uri": catalog_uri,
            "batch": BatchConfig(
                **batch_queue,
                chunk_size=3,
                steps={"embed": BatchStepResources(vcpus=2, memory_mib=4096), "search": BatchStepResources(vcpus=2, memory_mib=3072)},
            ),
        }
    )
    dag = load_dag(
        config,
        tmp_path,
        monkeypatch,
        executor="batch",
        runs_uri=storage.join(s3_bucket.uri, "runs"),
        cache_uri=f"dynamodb://{cache_table}",
    )
    harness = BatchHarness({"AWS_ENDPOINT_URL": aws_env, "AWS_DEFAULT_REGION": REGION})
    harness.install(monkeypatch)
    yield dag, config, harness, airflow_aws


def _warehouse_rows(url: str, date: dt.date) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = pd.read_sql(sa.text("SELECT * FROM similar_items WHERE snapshot_date = :d"), conn, params={"d": date})
    finally:
        engine.dispose()
    return rows.sort_values(KEY).reset_index(drop=True)


def _run_summary(dag_run: Any, bucket: S3Bucket) -> dict[str, Any]:
    runs = [o["Key"] for o in bucket.client.list_objects_v2(Bucket=bucket.name, Prefix="runs/")["Contents"]]
    (key,) = [k for k in runs if k.endswith("report/run_summary.json") and dag_run.run_id.replace(":", "_").replace("+", "_") in k]
    return storage.read_json(f"s3://{bucket.name}/{key}")


def test_batch_dag_publishes_what_pss_run_publishes_and_rerun_hits_dynamodb(
    batch_setup: tuple[Any, AppConfig, BatchHarness, Path], s3_bucket: S3Bucket, ag_subset: Subset, tmp_path: Path
) -> None:
    dag, config, harness, warehouse = batch_setup
    dag_run = dag.test(logical_date=SNAPSHOT)
    assert dag_run.state == "success"

    # Every step went through Batch; per-partition steps as array jobs over chunks of ≤ 3 partitions.
    steps = [job.step for job in harness.jobs]
    assert steps[0] == "plan" and steps[-2:] == ["publish", "report"]
    assert all(job.succeeded for job in harness.jobs), [j.stderr for j in harness.jobs if not j.succeeded]
    summary = _run_summary(dag_run, s3_bucket)
    partitions = summary["counts"]["catalog_partitions"]
    embeds = [job for job in harness.jobs if job.step == "embed"]
    assert sum(job.array_size or 1 for job in embeds) == partitions >= 4
    assert any(job.array_size for job in embeds) and all((job.array_size or 1) <= 3 for job in embeds)
    assert all("--partition-offset" in job.command for job in embeds if job.array_size)
    assert sum(job.array_size or 1 for job in harness.jobs if job.step == "build-index") == summary["counts"]["index_partitions"]
    assert {job.resources["VCPU"] for job in embeds} == {"2"} and {job.resources["MEMORY"] for job in embeds} == {"4096"}
    assert {job.job_queue for job in harness.jobs} == {config.batch.job_queue}  # type: ignore[union-attr]
    assert summary["cache"]["misses"] == summary["counts"]["rows_accepted"] and summary["cache"]["hits"] == 0
    assert summary["run_uri"].startswith(f"s3://{s3_bucket.name}/runs/near_identical_batch/2024-06-03/")

    # The same catalog and config through `pss run` on this machine publishes the same rows.
    local = run_pipeline(
        config.model_copy(update={"cache": config.cache.model_copy(update={"uri": str(tmp_path / "local-cache.sqlite")})}),
        catalog_uri=str(ag_subset.catalog),
        out_dir=str(tmp_path / "local"),
        snapshot_date=SNAPSHOT.date(),
        progress=lambda _: None,
    )
    batch_rows = _warehouse_rows(f"sqlite:///{warehouse}", SNAPSHOT.date())
    local_rows = _warehouse_rows(local["publish"]["warehouse"], SNAPSHOT.date())
    assert len(batch_rows) == len(local_rows) == summary["counts"]["rows_published"] > 0
    columns = ["application", "snapshot_date", "category", "query_item_id", "candidate_item_id", "rank"]
    pd.testing.assert_frame_equal(batch_rows[columns], local_rows[columns])
    assert (batch_rows["score"] - local_rows["score"]).abs().max() < 1e-6

    # The asset event names each published (application, date, category) partition.
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == dag_run.run_id).all()
        keys = {event.partition_key for event in events}
        extras = [event.extra for event in events]
    assert keys == {f"near_identical_batch/2024-06-03/{c}" for c in summary["categories"]}
    assert all(extra["rows"] == summary["counts"]["rows_published"] for extra in extras)

    # A second run on the unchanged catalog reads every vector from DynamoDB.
    harness.jobs.clear()
    second = dag.test(logical_date=SNAPSHOT + dt.timedelta(days=1))
    assert second.state == "success"
    again = _run_summary(second, s3_bucket)
    assert again["cache"]["hits"] == again["counts"]["rows_accepted"] > 0
    assert again["cache"]["misses"] == 0


def test_failed_batch_job_fails_the_run_and_publishes_nothing(
    batch_setup: tuple[Any, AppConfig, BatchHarness, Path], s3_bucket: S3Bucket
) -> None:
    dag, _, harness, warehouse = batch_setup
    for task in dag.tasks:
        task.retries = 0

    def lose_the_indexes(job: Any) -> None:
        # A real failure: the search children find no index to load and exit non-zero.
        listing = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name, Prefix="runs/")["Contents"]
        for obj in listing:
            if obj["Key"].endswith(".faiss"):
                s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=obj["Key"])

    harness.before_step["search"] = lose_the_indexes
    dag_run = dag.test(logical_date=SNAPSHOT)
    assert dag_run.state == "failed"
    failed = [job for job in harness.jobs if not job.succeeded]
    assert failed and {job.step for job in failed} == {"search"}
    assert "publish" not in [job.step for job in harness.jobs]
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["publish"] != "success"
    assert not warehouse.exists() or _warehouse_rows(f"sqlite:///{warehouse}", SNAPSHOT.date()).empty
    listing = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name, Prefix="runs/")["Contents"]
    assert not [o for o in listing if o["Key"].endswith(("publish/manifest.json", layout.similar_items("").lstrip("/")))]
