"""The real dags/ folder as the dag-processor parses it: DAGs, params, task graph, parse-time hygiene, executor choice."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pss_ops.config import AppConfig, BatchConfig, BatchStepResources, load_config
from tests.airflow.conftest import SETTINGS_ENV
from tests.conftest import EXAMPLE_CONFIG, ROOT, write_config

DAG_ID = "pss_near_identical"
TRAIN_DAG_ID = "pss_train_near_identical"
TRAIN_MATCHER_DAG_ID = "pss_train_matcher_near_identical"
ORDER = [
    "prepare_run",
    "plan",
    "catalog_chunks",
    "embed",
    "plan_index",
    "index_chunks",
    "build_index",
    "search",
    "publish",
    "report",
]
HEAVY_MODULES = ("torch", "faiss", "sentence_transformers", "pyarrow")


def _clear_pss_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PSS_CONFIG_DIR", raising=False)
    for variable in SETTINGS_ENV.values():
        monkeypatch.delenv(variable, raising=False)


def _parse_default(monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    _clear_pss_env(monkeypatch)
    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def default_bag() -> Iterator[Any]:
    """dags/ parsed with the default settings: PSS_CONFIG_DIR unset, so examples/ is read."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _parse_default(monkeypatch)


@pytest.fixture
def dag(default_bag: Any) -> Any:
    return default_bag.dags[DAG_ID]


def test_default_parse_has_no_import_errors_and_only_configs_with_a_catalog(default_bag: Any) -> None:
    assert default_bag.import_errors == {}
    assert DAG_ID in default_bag.dags
    assert load_config(ROOT / "examples" / "visually_similar_same_color.yaml").catalog_uri is None
    assert "pss_visually_similar_same_color" not in default_bag.dags
    # The similarity DAG (dags/pss_similarity.py), its training DAG (dags/pss_training.py) and its matcher-training DAG.
    assert sorted(default_bag.dags) == sorted([DAG_ID, TRAIN_DAG_ID, TRAIN_MATCHER_DAG_ID])


def test_dag_scheduling_ownership_and_retries(dag: Any) -> None:
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 * * *", "UTC")
    assert dag.catchup is False
    # One run at a time: a manual run for a date waits for the scheduled one, then replaces its rows.
    assert dag.max_active_runs == 1
    assert "pss" in dag.tags
    assert dag.doc_md and dag.doc_md.strip()
    assert "near_identical" in dag.doc_md
    assert sorted(t.task_id for t in dag.tasks) == sorted(ORDER)
    for task in dag.tasks:
        assert task.owner == "pss", task.task_id
        assert task.retries >= 2, task.task_id


def test_params_schema_and_defaults(dag: Any) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = dag.params
    assert isinstance(params, ParamsDict)
    assert set(params.keys()) == {"categories", "snapshot_date", "full_refresh", "k"}
    assert params.validate() == {
        "categories": [],
        "snapshot_date": None,
        "full_refresh": False,
        "k": load_config(EXAMPLE_CONFIG).k,
    }
    categories = params.get_param("categories")
    assert categories.schema["type"] == "array" and categories.schema["items"] == {"type": "string"}
    assert set(params.get_param("snapshot_date").schema["type"]) == {"null", "string"}
    assert params.get_param("full_refresh").schema["type"] == "boolean"
    k = params.get_param("k").schema
    # The config's own bounds (1..1000), exclusive so the form does not clamp an out-of-range k silently.
    assert (k["type"], k["exclusiveMinimum"], k["exclusiveMaximum"]) == ("integer", 0, 1001)
    assert "minimum" not in k and "maximum" not in k
    assert "1 to 1000" in params.get_param("k").description


def test_form_hints_at_the_demo_catalogs_only_category(dag: Any) -> None:
    """The demo catalog has no category column: the form says every item is in 'uncategorized'."""
    description = dag.params.get_param("categories").description
    assert "no category column" in description and "'uncategorized'" in description
    assert "'uncategorized'" in dag.doc_md


def test_category_hint_reads_a_csv_header_only(tmp_path: Path) -> None:
    from pss_airflow.dag_factory import category_hint

    with_column = tmp_path / "with.csv"
    with_column.write_text("item_id,title,category\n1,a,toys\n", encoding="utf-8")
    without = tmp_path / "without.csv"
    without.write_text("item_id,title\n1,a\n", encoding="utf-8")
    assert "no category column" in category_hint(str(without), "misc") and "'misc'" in category_hint(str(without), "misc")
    for uri in (str(with_column), str(tmp_path / "missing.csv"), "s3://bucket/catalog.csv", str(tmp_path / "c.parquet")):
        hint = category_hint(uri, "misc")
        assert "category column" in hint and "lists the catalog's categories" in hint, uri


def test_unpausing_starts_no_run_for_today(dag: Any) -> None:
    """A new DAG's first scheduled run is the next midnight: "Unpause and trigger" starts only the manual run."""
    import pendulum
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    before = pendulum.now("UTC")
    first = serialized.next_dagrun_info(last_automated_run_info=None)
    assert first is not None and first.run_after > before
    assert first.run_after == before.add(days=1).start_of("day")


@pytest.mark.parametrize(
    ("name", "value"),
    [("categories", ["a", "b"]), ("snapshot_date", "2024-05-01"), ("snapshot_date", None), ("full_refresh", True), ("k", 1), ("k", 1000)],
)
def test_params_accept_good_values(dag: Any, name: str, value: Any) -> None:
    params = copy.deepcopy(dag.params)
    assert params.get_param(name).resolve(value) == value
    params[name] = value
    assert params.validate()[name] == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("k", 0),
        ("k", 1001),
        ("k", "ten"),
        ("categories", "a"),
        ("categories", [1]),
        ("snapshot_date", "not-a-date"),
        ("snapshot_date", "2024-13-01"),
        ("full_refresh", "yes"),
    ],
)
def test_params_reject_bad_values(dag: Any, name: str, value: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError):
        params.get_param(name).resolve(value)
    with pytest.raises(ParamValidationError, match=name):
        params[name] = value


def test_task_graph_runs_steps_in_order(dag: Any) -> None:
    for upstream, downstream in zip(ORDER, ORDER[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    # The order is total: no task can start before its predecessor in ORDER.
    for position, task_id in enumerate(ORDER):
        ancestors = dag.get_task(task_id).get_flat_relative_ids(upstream=True)
        assert ancestors == set(ORDER[:position]), task_id
    assert dag.get_task("prepare_run").upstream_task_ids == set()
    assert dag.get_task("report").downstream_task_ids == set()


def test_run_context_reaches_steps_without_an_edge_from_prepare_run(dag: Any) -> None:
    """The graph view reads as the pipeline: prepare_run feeds plan, and the steps read the run folder by template."""
    from pss_airflow.dag_factory import RUN_URI

    assert dag.get_task("prepare_run").downstream_task_ids == {"plan"}
    for task_id in ("plan", "plan_index", "publish", "report"):
        assert dag.get_task(task_id).run_uri == RUN_URI, task_id
    for task_id in ("embed", "build_index", "search"):
        assert dag.get_task(task_id).partial_kwargs["run_uri"] == RUN_URI, task_id
    assert dag.get_task("catalog_chunks").op_args[0] == RUN_URI
    edges = sum(len(t.downstream_task_ids) for t in dag.tasks)
    assert edges == len(ORDER) - 1 + 1  # the chain, plus catalog_chunks -> search


def test_mapped_steps_are_named_by_their_partitions(dag: Any) -> None:
    from pss_airflow.operators.pss_step import PARTITIONS_MAP_INDEX_TEMPLATE, partition_range

    for task_id in ("embed", "build_index", "search"):
        assert dag.get_task(task_id).partial_kwargs["map_index_template"] == PARTITIONS_MAP_INDEX_TEMPLATE
    assert partition_range({"offset": 0, "size": 4}) == "partitions 0–3"
    assert partition_range({"offset": 4, "size": 1}) == "partition 4"
    assert partition_range(None) == ""


def test_report_and_publish_link_to_the_run_results(dag: Any) -> None:
    from airflow.sdk.types import TaskInstanceKey

    run_id = "manual__2026-11-30T10:00:00+00:00"
    links = {}
    for task_id in ("plan", "publish", "report"):
        task = dag.get_task(task_id)
        key = TaskInstanceKey(dag_id=DAG_ID, task_id=task_id, run_id=run_id)
        links[task_id] = {link.name: link.get_link(task, ti_key=key) for link in task.operator_extra_links}
    base = f"/pss/runs/{DAG_ID}/manual__2026-11-30T10%3A00%3A00%2B00%3A00"
    assert links["report"] == {"Run report": f"{base}/report", "Warehouse table": f"{base}/results"}
    assert links["publish"] == {"Run report": "", "Warehouse table": f"{base}/results"}
    assert links["plan"] == {"Run report": "", "Warehouse table": ""}


@pytest.mark.parametrize(("task_id", "over"), [("embed", "catalog_chunks"), ("build_index", "index_chunks"), ("search", "catalog_chunks")])
def test_partitioned_steps_are_mapped_over_chunk_xcoms(dag: Any, task_id: str, over: str) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from airflow.sdk.definitions.xcom_arg import PlainXComArg
    from pss_airflow.operators.pss_step import PssLocalStepOperator

    task = dag.get_task(task_id)
    assert isinstance(task, MappedOperator)
    assert task.operator_class is PssLocalStepOperator
    mapped = task.expand_input.value
    assert isinstance(mapped, dict) and list(mapped) == ["chunk"]
    xcom = mapped["chunk"]
    assert isinstance(xcom, PlainXComArg)
    assert xcom.operator.task_id == over and xcom.key == "return_value"
    # Mapped over chunks (a few per run), never over items or per-partition lists.
    assert over.endswith("_chunks")


def test_single_steps_are_not_mapped(dag: Any) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    mapped = {t.task_id for t in dag.tasks if isinstance(t, MappedOperator)}
    assert mapped == {"embed", "build_index", "search"}


_IMPORT_SCRIPT = """
import json, runpy, sys
from airflow.sdk.execution_time import context
from airflow.sdk.definitions.connection import Connection

reads = []

def _refuse(name):
    def refuse(*args, **kwargs):
        reads.append(name)
        raise RuntimeError(f"{name} read at parse time")
    return refuse

for name in ("_get_connection", "_async_get_connection", "_get_variable", "_get_variable_keys"):
    setattr(context, name, _refuse(name))
Connection.get = classmethod(_refuse("Connection.get"))

namespace = runpy.run_path(sys.argv[1])
print(json.dumps({
    "dags": sorted({v.dag_id for v in namespace.values() if type(v).__name__ == "DAG"}),
    "heavy": [m for m in sys.argv[2:] if m in sys.modules],
    "reads": reads,
}))
"""


@pytest.mark.parametrize(
    ("dag_file", "dag_ids"),
    [("pss_similarity.py", [DAG_ID]), ("pss_training.py", [TRAIN_DAG_ID]), ("pss_train_matcher.py", [TRAIN_MATCHER_DAG_ID])],
)
def test_dag_file_is_wiring_only(tmp_path: Path, dag_file: str, dag_ids: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "plugins"), str(ROOT), env.get("PYTHONPATH")) if p)
    env["AIRFLOW_CONN_PSS_WAREHOUSE"] = '{"conn_type": "postgres", "host": '
    env["AIRFLOW_CONN_AWS_DEFAULT"] = '{"conn_type": '
    env["AIRFLOW_VAR_PSS_CONFIG_DIR"] = '{"not": '
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT, str(ROOT / "dags" / dag_file), *HEAVY_MODULES],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dags"] == dag_ids
    assert result["heavy"] == []
    assert result["reads"] == []


def test_import_script_detects_heavy_imports_and_connection_reads(tmp_path: Path) -> None:
    """The subprocess check above can fail: a DAG file that imports pyarrow or reads a connection is reported."""
    dag_file = tmp_path / "heavy_dag.py"
    dag_file.write_text(
        "import pyarrow\nfrom airflow.sdk import BaseHook, Variable\n"
        "for read in (lambda: BaseHook.get_connection('pss_warehouse'), lambda: Variable.get('pss')):\n"
        "    try:\n        read()\n    except Exception:\n        pass\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT, str(dag_file), *HEAVY_MODULES], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == ["pyarrow"]
    assert result["reads"] == ["Connection.get", "_get_variable"]


# Executor selection


def test_executor_choice_from_settings_and_config() -> None:
    from pss_airflow.dag_factory import _executor
    from pss_airflow.settings import PssSettings

    default = PssSettings.from_env({})
    assert default.executor is None
    assert _executor(default, has_batch=False, runs_uri=None) == "local"
    assert _executor(default, has_batch=True, runs_uri=None) == "local"
    assert _executor(default, has_batch=True, runs_uri="/srv/pss/runs") == "local"
    assert _executor(default, has_batch=False, runs_uri="s3://bucket/runs") == "local"
    assert _executor(default, has_batch=True, runs_uri="s3://bucket/runs") == "batch"
    assert _executor(PssSettings.from_env({"PSS_EXECUTOR": "local"}), has_batch=True, runs_uri="s3://bucket/runs") == "local"
    assert _executor(PssSettings.from_env({"PSS_EXECUTOR": "batch"}), has_batch=True, runs_uri=None) == "batch"
    with pytest.raises(ValueError, match="PSS_EXECUTOR=batch.*no batch section"):
        _executor(PssSettings.from_env({"PSS_EXECUTOR": "batch"}), has_batch=False, runs_uri="s3://bucket/runs")


def test_bogus_executor_is_rejected() -> None:
    from pss_airflow.settings import PssSettings

    with pytest.raises(ValueError, match="PSS_EXECUTOR.*'bogus'"):
        PssSettings.from_env({"PSS_EXECUTOR": "bogus"})


def test_settings_defaults_point_at_examples() -> None:
    from pss_airflow.settings import PssSettings

    settings = PssSettings.from_env({})
    assert Path(settings.config_dir) == ROOT / "examples"
    assert (settings.runs_uri, settings.cache_uri) == (None, None)
    assert (settings.aws_conn_id, settings.warehouse_conn_id) == ("aws_default", "pss_warehouse")


def _batch_config(config: AppConfig) -> AppConfig:
    return config.model_copy(
        update={
            "application": "near_identical_aws",
            "catalog_uri": "s3://pss-bucket/catalogs/catalog.csv",
            "runs_uri": "s3://pss-bucket/runs",
            "batch": BatchConfig(
                job_queue="pss-queue",
                job_definition="pss-step:1",
                chunk_size=50,
                steps={"embed": BatchStepResources(job_queue="pss-gpu", vcpus=4, memory_mib=8192, gpus=1)},
            ),
        }
    )


def test_batch_section_and_s3_runs_select_batch_operators(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_airflow.dag_factory import build_similarity_dag
    from pss_airflow.operators.pss_step import PssBatchStepOperator
    from pss_airflow.settings import PssSettings

    path = write_config(_batch_config(small_config), tmp_path / "aws.yaml")
    dag = build_similarity_dag(path, PssSettings.from_env({"PSS_CONFIG_DIR": str(tmp_path)}))
    assert "batch" in dag.tags and "local" not in dag.tags
    plan = dag.get_task("plan")
    assert isinstance(plan, PssBatchStepOperator)
    assert (plan.job_queue, plan.job_definition) == ("pss-queue", "pss-step:1")
    embed = dag.get_task("embed")
    assert embed.operator_class is PssBatchStepOperator
    resources = embed.partial_kwargs["batch_resources"]
    assert resources == {"job_queue": "pss-gpu", "job_definition": "pss-step:1", "vcpus": 4, "memory_mib": 8192, "gpus": 1}
    assert embed.partial_kwargs["deferrable"] is True


def test_same_config_runs_locally_when_forced(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_airflow.dag_factory import build_similarity_dag
    from pss_airflow.operators.pss_step import PssLocalStepOperator
    from pss_airflow.settings import PssSettings

    path = write_config(_batch_config(small_config), tmp_path / "aws.yaml")
    dag = build_similarity_dag(path, PssSettings.from_env({"PSS_EXECUTOR": "local"}))
    assert "local" in dag.tags
    assert isinstance(dag.get_task("plan"), PssLocalStepOperator)
    # S3 runs need the AWS connection in local step processes too.
    assert dag.get_task("embed").partial_kwargs["use_aws"] is True


def test_forced_batch_without_batch_section_is_an_import_error(
    small_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    no_batch = small_config.model_copy(update={"catalog_uri": "/data/catalog.csv", "batch": None})
    write_config(no_batch, config_dir / "near_identical.yaml")
    _clear_pss_env(monkeypatch)
    monkeypatch.setenv("PSS_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("PSS_EXECUTOR", "batch")
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not {DAG_ID, TRAIN_DAG_ID, TRAIN_MATCHER_DAG_ID} & set(bag.dags)
    # One import error per DAG file: the similarity and both training DAGs refuse alike.
    assert sorted(Path(f).name for f in bag.import_errors) == ["pss_similarity.py", "pss_train_matcher.py", "pss_training.py"]
    for error in bag.import_errors.values():
        assert "PSS_EXECUTOR=batch" in error and "no batch section" in error


def test_bogus_executor_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    _clear_pss_env(monkeypatch)
    monkeypatch.setenv("PSS_EXECUTOR", "bogus")
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.dags
    assert sorted(Path(f).name for f in bag.import_errors) == ["pss_similarity.py", "pss_train_matcher.py", "pss_training.py"]
    for error in bag.import_errors.values():
        assert "PSS_EXECUTOR" in error and "bogus" in error


def test_prepare_run_checks_k_and_the_snapshot_date_itself() -> None:
    """For runs that bypass the form's schema (dag.test, an old conf): the same bounds, as wrong input."""
    import datetime as dt

    from pss_airflow.dag_factory import _k, _k_bounds, _snapshot_date

    assert _k_bounds() == (1, 1000)
    assert _k(None, 1, 1000) is None and _k(7, 1, 1000) == 7
    for bad in (-1, 0, 1001, True, 2.5, "5"):
        with pytest.raises(ValueError, match=r"k must be a whole number from 1 to 1000"):
            _k(bad, 1, 1000)
    when = dt.datetime(2026, 11, 30, 14, 5, tzinfo=dt.UTC)
    assert _snapshot_date(None, when) == dt.date(2026, 11, 30)
    assert _snapshot_date("2024-05-01", when) == dt.date(2024, 5, 1)
    with pytest.raises(ValueError, match=r"snapshot_date '2024-13-01' is not a date: use YYYY-MM-DD"):
        _snapshot_date("2024-13-01", when)
