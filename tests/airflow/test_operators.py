"""Operators by the exact call they make (submit_job kwargs, local commands), and the fan-out and run-request helpers."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from pss_ops.config import AppConfig, ConfigError, load_config, with_k
from pss_ops.orchestration.fanout import MAX_ARRAY_SIZE, MAX_MAPPED_TASKS, chunk_partitions, job_name
from pss_ops.orchestration.local import StepFailedError, run_commands
from pss_ops.orchestration.request import prepare_run, safe_run_id
from tests.conftest import write_config

RUN = "s3://pss-bucket/runs/near_identical/2024-05-01/scheduled__2024-05-01T00_00_00_00_00"
RUN_ID = "scheduled__2024-05-01T00:00:00+00:00"
RESOURCES = {"job_queue": "pss-gpu", "job_definition": "pss-step:3", "vcpus": 4, "memory_mib": 8192, "gpus": 1}
WAREHOUSE_CONN = '{"conn_type":"postgres","host":"db","login":"u","password":"p w","port":5432,"schema":"wh"}'
AWS_CONN = {
    "conn_type": "aws",
    "login": "AKIDPSSTEST",
    "password": "pss/secret+key",
    "extra": {"endpoint_url": "http://127.0.0.1:5999", "region_name": "eu-west-1"},
}


# PssBatchStepOperator


class _BatchClient:
    """Stands in for the boto3 Batch client: records submit_job."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, **kwargs: Any) -> dict[str, str]:
        self.submitted.append(kwargs)
        return {"jobId": "j-1", "jobName": "x", "jobArn": "arn"}


class _TaskInstance:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def batch_client(monkeypatch: pytest.MonkeyPatch) -> _BatchClient:
    from airflow.providers.amazon.aws.hooks.batch_client import BatchClientHook

    client = _BatchClient()
    monkeypatch.setattr(BatchClientHook, "client", property(lambda self: client))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(AWS_CONN))
    monkeypatch.delenv("AIRFLOW_CONN_PSS_WAREHOUSE", raising=False)
    return client


def _batch_operator(step: str, chunk: dict[str, int] | None = None, **kwargs: Any) -> Any:
    from pss_airflow.operators.pss_step import PssBatchStepOperator

    return PssBatchStepOperator(
        task_id=step.replace("-", "_"),
        step=step,
        run_uri=RUN,
        application="near_identical",
        batch_resources=dict(RESOURCES),
        chunk=chunk,
        aws_conn_id="aws_default",
        deferrable=False,
        wait_for_completion=False,
        **kwargs,
    )


def _execute(operator: Any) -> tuple[str | None, _TaskInstance]:
    ti = _TaskInstance()
    return operator.execute({"run_id": RUN_ID, "ti": ti}), ti


def test_batch_chunk_becomes_array_job_with_exact_submit_call(batch_client: _BatchClient) -> None:
    operator = _batch_operator("embed", {"offset": 6, "size": 3})
    job_id, ti = _execute(operator)

    assert job_id == "j-1"
    (call,) = batch_client.submitted
    assert call["jobName"] == job_name("near_identical", "embed", RUN_ID, 6)
    assert call["jobName"] == "pss-near_identical-embed-scheduled__2024-05-01T00-00-00-00-00-6"
    assert call["jobQueue"] == "pss-gpu"
    assert call["jobDefinition"] == "pss-step:3"
    assert call["arrayProperties"] == {"size": 3}
    overrides = call["containerOverrides"]
    assert overrides["command"] == ["embed", "--run-uri", RUN, "--partition-offset", "6"]
    assert overrides["resourceRequirements"] == [
        {"type": "VCPU", "value": "4"},
        {"type": "MEMORY", "value": "8192"},
        {"type": "GPU", "value": "1"},
    ]
    assert overrides["environment"] == []
    assert not {"ecsPropertiesOverride", "eksPropertiesOverride", "nodeOverrides"} & set(call)
    # The job-details link was persisted for the submitted job.
    assert any(value.get("job_id") == "j-1" for value in ti.xcom.values())


def test_batch_single_partition_is_a_plain_job(batch_client: _BatchClient) -> None:
    _execute(_batch_operator("embed", {"offset": 6, "size": 1}))
    (call,) = batch_client.submitted
    assert "arrayProperties" not in call
    assert call["containerOverrides"]["command"] == ["embed", "--run-uri", RUN, "--partition", "6"]
    assert call["jobName"].endswith("-embed-scheduled__2024-05-01T00-00-00-00-00-6")


def test_batch_without_gpus_requests_no_gpu(batch_client: _BatchClient) -> None:
    from pss_airflow.operators.pss_step import PssBatchStepOperator

    operator = PssBatchStepOperator(
        task_id="search",
        step="search",
        run_uri=RUN,
        application="near_identical",
        batch_resources={"job_queue": "q", "job_definition": "d"},
        chunk={"offset": 0, "size": 2},
        deferrable=False,
        wait_for_completion=False,
    )
    _execute(operator)
    (call,) = batch_client.submitted
    assert call["containerOverrides"]["resourceRequirements"] == [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}]


def test_batch_partitioned_step_without_chunk_is_refused(batch_client: _BatchClient) -> None:
    with pytest.raises(ValueError, match="'search' runs per partition"):
        _execute(_batch_operator("search"))
    assert batch_client.submitted == []


def test_batch_publish_reads_warehouse_connection_at_execute_time(batch_client: _BatchClient, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = _batch_operator(
        "publish", warehouse_conn_id="pss_warehouse", default_warehouse_url="sqlite:///fallback.sqlite", environment={"PSS_X": "1"}
    )
    # Defined only after the operator exists: the URL (with its password) is read when the task runs.
    monkeypatch.setenv("AIRFLOW_CONN_PSS_WAREHOUSE", WAREHOUSE_CONN)
    _execute(operator)

    (call,) = batch_client.submitted
    assert "arrayProperties" not in call
    overrides = call["containerOverrides"]
    assert overrides["command"] == ["publish", "--run-uri", RUN]
    assert overrides["environment"] == [
        {"name": "PSS_WAREHOUSE_URL", "value": "postgresql+psycopg://u:p%20w@db:5432/wh"},
        {"name": "PSS_X", "value": "1"},
    ]
    assert call["jobName"] == "pss-near_identical-publish-scheduled__2024-05-01T00-00-00-00-00"


def test_batch_publish_without_connection_uses_default_url(batch_client: _BatchClient) -> None:
    _execute(_batch_operator("publish", warehouse_conn_id="pss_warehouse", default_warehouse_url="sqlite:////srv/wh.sqlite"))
    (call,) = batch_client.submitted
    assert call["containerOverrides"]["environment"] == [{"name": "PSS_WAREHOUSE_URL", "value": "sqlite:////srv/wh.sqlite"}]


class _FailedBatchClient(_BatchClient):
    """A Batch client whose job failed: a plain job with one exit code, or an array whose failed children have theirs."""

    def __init__(self, codes: list[int | None], array: bool) -> None:
        super().__init__()
        self.codes, self.array = codes, array

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        job: dict[str, Any] = {"jobId": jobs[0], "jobName": "x", "status": "FAILED", "jobQueue": "q", "jobDefinition": "d"}
        if self.array:
            job["arrayProperties"] = {"size": len(self.codes)}
        else:
            job["attempts"] = [{"container": {"exitCode": self.codes[0]}}]
        return {"jobs": [job]}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_jobs"
        summaries = [{"jobId": f"j-1:{i}", "container": {} if c is None else {"exitCode": c}} for i, c in enumerate(self.codes)]

        class Pages:
            def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
                assert kwargs == {"arrayJobId": "j-1", "jobStatus": "FAILED"}
                return [{"jobSummaryList": summaries[:1]}, {"jobSummaryList": summaries[1:]}]

        return Pages()


@pytest.mark.parametrize(
    ("codes", "array", "fails_fast"),
    [
        ([2], False, True),
        ([1], False, False),
        ([None], False, False),
        ([2, 2], True, True),
        ([2, 137], True, False),
        ([2, None], True, False),
    ],
)
def test_batch_job_that_exited_2_fails_without_retries(
    monkeypatch: pytest.MonkeyPatch, codes: list[int | None], array: bool, fails_fast: bool
) -> None:
    from airflow.providers.amazon.aws.hooks.batch_client import BatchClientHook
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    client = _FailedBatchClient(codes, array)
    monkeypatch.setattr(BatchClientHook, "client", property(lambda self: client))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(AWS_CONN))
    operator = _batch_operator("search", {"offset": 0, "size": len(codes)}, awslogs_enabled=False)
    operator.job_id = "j-1"
    with pytest.raises(AirflowException) as raised:
        operator.execute_complete({}, {"status": "failure", "job_id": "j-1"})
    assert isinstance(raised.value, AirflowFailException) is fails_fast, raised.value
    if fails_fast:
        assert "exit status 2" in str(raised.value) and "pss step search" in str(raised.value)


# PssLocalStepOperator


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """run_commands as the operator calls it (it imports it from pss_ops.orchestration.local at execute time)."""
    import pss_ops.orchestration.local

    calls: list[dict[str, Any]] = []

    def record(commands: Any, *, max_parallel: int, env: Any = None) -> None:
        calls.append({"commands": [list(c) for c in commands], "max_parallel": max_parallel, "env": dict(env or {})})

    monkeypatch.setattr(pss_ops.orchestration.local, "run_commands", record)
    monkeypatch.delenv("AIRFLOW_CONN_PSS_WAREHOUSE", raising=False)
    return calls


def _local_operator(step: str, **kwargs: Any) -> Any:
    from pss_airflow.operators.pss_step import PssLocalStepOperator

    return PssLocalStepOperator(task_id=step.replace("-", "_"), step=step, run_uri=RUN, **kwargs)


def _step(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "pss_ops.cli", "step", *arguments]


def test_local_chunk_runs_one_process_per_partition(recorded: list[dict[str, Any]]) -> None:
    _local_operator("search", chunk={"offset": 2, "size": 3}, max_parallel=5).execute({})
    (call,) = recorded
    assert call["commands"] == [_step("search", "--run-uri", RUN, "--partition", p) for p in ("2", "3", "4")]
    assert call["max_parallel"] == 5
    assert call["env"] == {}


def test_local_single_step_appends_extra_arguments(recorded: list[dict[str, Any]]) -> None:
    extra = ["--config", "/runs/x/config.yaml", "--categories", "a,b"]
    _local_operator("plan", extra_arguments=extra, environment={"PSS_KEEP": "1", "PSS_EMPTY": ""}).execute({})
    (call,) = recorded
    assert call["commands"] == [_step("plan", "--run-uri", RUN, *extra)]
    assert call["max_parallel"] == 2
    assert call["env"] == {"PSS_KEEP": "1"}


def test_local_partitioned_step_without_chunk_is_refused(recorded: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="'build-index' runs per partition"):
        _local_operator("build-index").execute({})
    assert recorded == []


def test_local_use_aws_passes_the_connection_to_step_processes(recorded: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(AWS_CONN))
    _local_operator("embed", chunk={"offset": 0, "size": 1}, use_aws=True).execute({})
    (call,) = recorded
    assert call["commands"] == [_step("embed", "--run-uri", RUN, "--partition", "0")]
    assert call["env"] == {
        "AWS_ACCESS_KEY_ID": "AKIDPSSTEST",
        "AWS_SECRET_ACCESS_KEY": "pss/secret+key",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5999",
    }


def test_local_without_use_aws_passes_no_credentials(recorded: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(AWS_CONN))
    _local_operator("embed", chunk={"offset": 0, "size": 1}).execute({})
    assert recorded[0]["env"] == {}


def _failing_run_commands(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    import pss_ops.orchestration.local

    def fail(commands: Any, *, max_parallel: int, env: Any = None) -> None:
        raise StepFailedError(f"pss: error: catalog x.csv not found\n1 of 1 step commands failed:\nexit {code}: ...", [code])

    monkeypatch.setattr(pss_ops.orchestration.local, "run_commands", fail)


def test_local_input_error_fails_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    _failing_run_commands(monkeypatch, 2)
    with pytest.raises(AirflowFailException, match=r"^pss: error: catalog x.csv not found") as raised:
        _local_operator("plan").execute({})
    assert "not retried" in str(raised.value)


def test_local_machine_fault_stays_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    _failing_run_commands(monkeypatch, 1)
    with pytest.raises(StepFailedError) as raised:
        _local_operator("plan").execute({})
    assert not isinstance(raised.value, AirflowFailException)


# run_commands, for real


def test_run_commands_runs_all_then_names_the_failure(tmp_path: Path) -> None:
    script = "import os, pathlib, sys; pathlib.Path(os.environ['PSS_T'], 'fail').touch(); sys.stderr.write('boom'); sys.exit(3)"
    failing = [sys.executable, "-c", script]
    passing = [sys.executable, "-c", "import os, pathlib; pathlib.Path(os.environ['PSS_T'], 'ok').write_text(os.environ['PSS_T'])"]
    with pytest.raises(StepFailedError) as raised:
        run_commands([failing, passing], max_parallel=1, env={"PSS_T": str(tmp_path)})
    message = str(raised.value)
    assert "1 of 2 step commands failed" in message
    assert "exit 3" in message and " ".join(failing) in message and "boom" in message
    assert " ".join(passing) not in message
    # Both ran, the failing one first; the env reached them.
    assert (tmp_path / "fail").exists()
    assert (tmp_path / "ok").read_text() == str(tmp_path)


def test_run_commands_streams_each_line_while_the_worker_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The worker waits for a file that only the log handler creates on seeing its first line: streamed, or it times out."""
    released = tmp_path / "released"
    script = (
        "import pathlib, sys, time\n"
        "print('embedding 3 batches', file=sys.stderr, flush=True)\n"
        f"deadline = time.monotonic() + 20\n"
        f"while not pathlib.Path({str(released)!r}).exists():\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit('pss: error: the line was not logged while the worker ran')\n"
        "    time.sleep(0.05)\n"
        "print('done', file=sys.stderr)\n"
    )

    class Release(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "embedding 3 batches" in record.getMessage():
                released.touch()

    handler = Release()
    logger = logging.getLogger("pss_ops.orchestration.local")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="pss_ops.orchestration.local"):
            run_commands([[sys.executable, "-c", script, "--partition", "3"]], max_parallel=1)
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in caplog.records]
    # Every line carries its partition, and none is cut to a tail.
    assert "partition 3: embedding 3 batches" in lines and "partition 3: done" in lines


def test_run_commands_failure_starts_with_the_workers_error_line(tmp_path: Path) -> None:
    noisy = (
        "import sys\nfor i in range(50): print(f'line {i}', file=sys.stderr)\n"
        "print('pss: error: unknown category toys', file=sys.stderr)\nsys.exit(2)"
    )
    with pytest.raises(StepFailedError) as raised:
        run_commands([[sys.executable, "-c", noisy]], max_parallel=1)
    assert str(raised.value).splitlines()[0] == "pss: error: unknown category toys"
    assert raised.value.exit_codes == (2,) and raised.value.input_error
    with pytest.raises(StepFailedError) as mixed:
        run_commands([[sys.executable, "-c", noisy], [sys.executable, "-c", "import sys; sys.exit(1)"]], max_parallel=2)
    assert sorted(mixed.value.exit_codes) == [1, 2] and not mixed.value.input_error


def test_run_commands_succeeds_quietly(tmp_path: Path) -> None:
    commands = [[sys.executable, "-c", f"import os, pathlib; pathlib.Path(os.environ['PSS_T'], '{i}').touch()"] for i in range(3)]
    run_commands(commands, max_parallel=2, env={"PSS_T": str(tmp_path)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]


# fanout


def _assert_chunks(chunks: list[dict[str, int]], count: int, chunk_size: int) -> None:
    assert len(chunks) <= MAX_MAPPED_TASKS
    allowed = max(chunk_size, math.ceil(count / MAX_MAPPED_TASKS))
    position = 0
    for chunk in chunks:
        assert set(chunk) == {"offset", "size"}
        assert chunk["offset"] == position
        assert 1 <= chunk["size"] <= allowed
        position += chunk["size"]
    assert position == count


@pytest.mark.parametrize(("count", "chunk_size"), [(1, 1), (1, 100), (10, 3), (12, 3), (99, 100), (1024, 1), (1025, 1), (3000, 7)])
def test_chunk_partitions_cover_every_partition(count: int, chunk_size: int) -> None:
    _assert_chunks(chunk_partitions(count, chunk_size), count, chunk_size)


def test_chunk_partitions_examples() -> None:
    assert chunk_partitions(0, 5) == []
    assert chunk_partitions(10, 3) == [{"offset": o, "size": s} for o, s in ((0, 3), (3, 3), (6, 3), (9, 1))]
    chunks = chunk_partitions(5000, 1)
    _assert_chunks(chunks, 5000, 1)
    assert len(chunks) == 1000 and {c["size"] for c in chunks} == {5}


def test_chunk_partitions_limits() -> None:
    limit = MAX_MAPPED_TASKS * MAX_ARRAY_SIZE
    chunks = chunk_partitions(limit, 1)
    assert len(chunks) == MAX_MAPPED_TASKS and {c["size"] for c in chunks} == {MAX_ARRAY_SIZE}
    with pytest.raises(ValueError, match="larger partitions"):
        chunk_partitions(limit + 1, 1)


def test_job_name_is_a_valid_batch_name() -> None:
    name = job_name("near_identical", "build-index", RUN_ID, 12)
    assert name == "pss-near_identical-build-index-scheduled__2024-05-01T00-00-00-00-00-12"
    assert job_name("app", "plan", "manual__x") == "pss-app-plan-manual__x"
    assert job_name("app", "embed", "r", 0).endswith("-r-0")
    long = job_name("a" * 100, "build-index", "backfill__" + "2024-05-01T00:00:00+00:00" * 5, 9999)
    assert len(long) == 128
    for value in (name, long):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", value)


# prepare_run


@pytest.fixture
def config_file(small_config: AppConfig, tmp_path: Path) -> Path:
    """near_identical with a catalog relative to the config file's directory."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "catalogs").mkdir()
    (tmp_path / "catalogs" / "catalog.csv").write_text(
        "item_id,title,category\n1,red kettle,group_a\n2,blue kettle,group_b\n3,green kettle,\n4,grey kettle,group_b\n", encoding="utf-8"
    )
    config = small_config.model_copy(update={"catalog_uri": "../catalogs/catalog.csv", "runs_uri": "../runs"})
    return write_config(config, tmp_path / "configs" / "near_identical.yaml")


def test_prepare_run_freezes_config_and_builds_plan_arguments(config_file: Path, tmp_path: Path) -> None:
    root = (tmp_path / "runs-elsewhere").resolve()
    request = prepare_run(
        str(config_file),
        run_id=RUN_ID,
        snapshot_date=dt.date(2024, 5, 1),
        runs_uri=str(root),
        categories=["group_b", " group_a", "group_b", "", "  "],
        full_refresh=True,
        k=7,
    )
    run_dir = root / "near_identical" / "2024-05-01" / "scheduled__2024-05-01T00_00_00_00_00"
    assert safe_run_id(RUN_ID) == "scheduled__2024-05-01T00_00_00_00_00"
    assert request.run_uri == str(run_dir)
    assert request.config_uri == str(run_dir / "config.yaml")
    frozen = load_config(run_dir / "config.yaml")
    expected = with_k(load_config(config_file), 7)
    assert frozen == expected and frozen.k == 7
    catalog = str((tmp_path / "catalogs" / "catalog.csv").resolve())
    assert request.catalog_uri == catalog
    assert request.cache_uri == str(root / "cache" / "embeddings.sqlite")
    assert request.warehouse_url == f"sqlite:///{root / 'warehouse.sqlite'}"
    assert request.categories == ["group_a", "group_b"]
    assert request.plan_arguments == [
        "--config", str(run_dir / "config.yaml"),
        "--catalog", catalog,
        "--snapshot-date", "2024-05-01",
        "--run-id", "scheduled__2024-05-01T00_00_00_00_00",
        "--cache-uri", str(root / "cache" / "embeddings.sqlite"),
        "--category", "group_a",
        "--category", "group_b",
        "--full-refresh",
    ]  # fmt: skip
    assert request.as_dict()["plan_arguments"] == request.plan_arguments


def test_prepare_run_defaults_to_config_runs_root_and_keeps_k(config_file: Path, tmp_path: Path) -> None:
    request = prepare_run(str(config_file), run_id="manual__1", snapshot_date=dt.date(2024, 5, 2), cache_uri="dynamodb://pss-cache")
    root = (tmp_path / "runs").resolve()
    assert request.run_uri == str(root / "near_identical" / "2024-05-02" / "manual__1")
    assert load_config(request.config_uri) == load_config(config_file)
    assert request.cache_uri == "dynamodb://pss-cache"
    assert request.categories == []
    assert "--category" not in request.plan_arguments and "--full-refresh" not in request.plan_arguments


def test_prepare_run_on_s3_needs_a_shared_cache(config_file: Path) -> None:
    with pytest.raises(ValueError, match="PSS_CACHE_URI"):
        prepare_run(str(config_file), run_id="r", snapshot_date=dt.date(2024, 5, 1), runs_uri="s3://pss-bucket/runs")


def test_prepare_run_rejects_bad_k_and_missing_catalog(config_file: Path, small_config: AppConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="k"):
        prepare_run(str(config_file), run_id="r", snapshot_date=dt.date(2024, 5, 1), k=0)
    bare = write_config(small_config.model_copy(update={"catalog_uri": None}), tmp_path / "bare.yaml")
    with pytest.raises(ValueError, match="catalog_uri"):
        prepare_run(str(bare), run_id="r", snapshot_date=dt.date(2024, 5, 1), runs_uri=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_prepare_run_refuses_unknown_categories_naming_the_catalogs(config_file: Path, tmp_path: Path) -> None:
    from pss_ops.orchestration.request import catalog_categories

    catalog = str((tmp_path / "catalogs" / "catalog.csv").resolve())
    # A blank category is the config's default one, as plan reads it.
    assert catalog_categories(catalog, "uncategorized") == ["group_a", "group_b", "uncategorized"]
    with pytest.raises(ValueError) as raised:
        prepare_run(str(config_file), run_id="r", snapshot_date=dt.date(2024, 5, 1), categories=["group_a", "toys", "Group_B"])
    assert str(raised.value) == (
        f"unknown categories 'Group_B', 'toys': catalog {catalog} has 3 categories: group_a, group_b, uncategorized"
    )
    # Refused before anything was written.
    assert not (tmp_path / "runs").exists()
    ok = prepare_run(str(config_file), run_id="r", snapshot_date=dt.date(2024, 5, 1), categories=["uncategorized"])
    assert ok.categories == ["uncategorized"]


def test_catalog_without_category_column_has_only_the_default(tmp_path: Path) -> None:
    from pss_ops.orchestration.request import catalog_categories, check_categories

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("item_id,title\n1,a\n", encoding="utf-8")
    assert catalog_categories(str(catalog), "uncategorized") == ["uncategorized"]
    with pytest.raises(ValueError, match=r"unknown category 'electronics': catalog .* has 1 category: uncategorized$"):
        check_categories(["electronics"], str(catalog), "uncategorized")


def test_prepare_run_refuses_a_malformed_warehouse_url_without_retries_and_lets_an_unreachable_one_retry(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from pss_airflow.dag_factory import _check_warehouse

    from pss_ops.warehouse.errors import WarehouseError

    with pytest.raises(AirflowFailException, match=r"^pss: error: malformed warehouse URL postgresql\+psycopg://reader:\*\*\*@"):
        _check_warehouse(None, "postgresql+psycopg://reader:s3cret@db.example.com:port/warehouse")
    # A server that doesn't answer may answer on the next try: an ordinary failure, retried by the task's policy.
    with pytest.raises(WarehouseError, match="connecting and creating the schema failed") as raised:
        _check_warehouse(None, "postgresql+psycopg://reader:s3cret@127.0.0.1:9/test")
    assert not isinstance(raised.value, AirflowFailException) and "s3cret" not in str(raised.value)
    _check_warehouse(None, f"sqlite:///{tmp_path / 'warehouse.sqlite'}")  # creates the tables, as the publish would
    assert (tmp_path / "warehouse.sqlite").exists()
