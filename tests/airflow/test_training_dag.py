"""The training DAG: parsed from dags/, its params and task graph, executor choice, and a real `pss step train` run."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pss_ops import storage
from pss_ops.config import AppConfig, BatchConfig, BatchStepResources, load_config, parse_config
from tests.airflow.conftest import SETTINGS_ENV, load_dag
from tests.conftest import EXAMPLE_CONFIG, ROOT, Subset, write_config

DAG_ID = "pss_train_near_identical"
ORDER = ["prepare_training", "train", "report"]
PAIRS = "/data/matches.csv:labelled"


@pytest.fixture(scope="module")
def default_bag() -> Iterator[Any]:
    """dags/ parsed with the default settings: PSS_CONFIG_DIR unset, so examples/ is read."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("PSS_CONFIG_DIR", raising=False)
        for variable in SETTINGS_ENV.values():
            monkeypatch.delenv(variable, raising=False)
        yield DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def dag(default_bag: Any) -> Any:
    return default_bag.dags[DAG_ID]


def test_training_dag_is_parsed_and_only_triggered_manually(default_bag: Any, dag: Any) -> None:
    assert default_bag.import_errors == {}
    assert "pss_train_visually_similar_same_color" not in default_bag.dags
    assert dag.schedule is None
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.start_date == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert set(dag.tags) == {"pss", "training", "near_identical", "local"}
    assert "never promotes" in dag.doc_md.lower() and str(EXAMPLE_CONFIG) in dag.doc_md
    for task in dag.tasks:
        assert task.owner == "pss", task.task_id
        assert task.retries >= 2, task.task_id


def test_task_graph_is_prepare_train_report(dag: Any) -> None:
    from pss_airflow.operators.pss_step import PssLocalStepOperator

    assert sorted(t.task_id for t in dag.tasks) == sorted(ORDER)
    for position, task_id in enumerate(ORDER):
        assert dag.get_task(task_id).get_flat_relative_ids(upstream=True) == set(ORDER[:position]), task_id
    assert "train" in dag.get_task("prepare_training").downstream_task_ids
    assert "report" in dag.get_task("train").downstream_task_ids
    train = dag.get_task("train")
    assert isinstance(train, PssLocalStepOperator) and train.step == "train"


def test_train_is_one_unpartitioned_step() -> None:
    from pss_airflow.operators.pss_step import _partitions

    from pss_ops.orchestration.fanout import PARTITIONED_STEPS, step_arguments

    assert "train" not in PARTITIONED_STEPS
    assert _partitions("train", None) == (None, 1)
    assert step_arguments("train", "/runs/r") == ["train", "--run-uri", "/runs/r"]


def test_params_schema_and_defaults(dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert set(params.keys()) == {"pairs", "registry_uri", "holdout", "seed", "epochs", "training_config"}
    pairs = params.get_param("pairs").schema
    assert (pairs["type"], pairs["minItems"], pairs["items"]["type"]) == ("array", 1, "string")
    # No runs root is configured by default, so the registry has no default either; pairs must be given.
    with pytest.raises(ParamValidationError, match="pairs"):
        copy.deepcopy(params).validate()
    good = copy.deepcopy(params)
    good["pairs"] = [PAIRS]
    good["registry_uri"] = "/models"
    assert good.validate() == {
        "pairs": [PAIRS],
        "registry_uri": "/models",
        "holdout": 0.3,
        "seed": None,
        "epochs": None,
        "training_config": None,
    }


def test_registry_defaults_to_models_under_the_runs_root(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_airflow.settings import PssSettings
    from pss_airflow.train_dag import build_training_dag

    path = write_config(small_config.model_copy(update={"catalog_uri": "catalog.csv"}), tmp_path / "near_identical.yaml")
    dag = build_training_dag(path, PssSettings.from_env({"PSS_RUNS_URI": str(tmp_path / "runs")}))
    assert dag.params["registry_uri"] == str(tmp_path / "runs" / "models")
    s3 = build_training_dag(path, PssSettings.from_env({"PSS_RUNS_URI": "s3://bucket/runs/", "PSS_EXECUTOR": "local"}))
    assert s3.params["registry_uri"] == "s3://bucket/runs/models"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pairs", ["a.csv:labelled", "s3://bucket/clicks.csv:co_click"]),
        ("holdout", 0.05),
        ("holdout", 0.9),
        ("seed", 7),
        ("seed", None),
        ("epochs", 1),
        ("epochs", None),
        ("training_config", "training/siamese.yaml"),
        ("training_config", None),
        ("registry_uri", "s3://bucket/models"),
    ],
)
def test_params_accept_good_values(dag: Any, name: str, value: Any) -> None:
    params = copy.deepcopy(dag.params)
    params[name] = value
    assert params.get_param(name).resolve(value) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pairs", "a.csv:labelled"),
        ("pairs", [1]),
        ("pairs", []),
        ("pairs", ["a.csv"]),
        ("pairs", ["s3://bucket/pairs.csv"]),
        ("holdout", 0),
        ("holdout", -0.1),
        ("holdout", 0.95),
        ("holdout", "0.3"),
        ("seed", -1),
        ("seed", 1.5),
        ("epochs", 0),
        ("training_config", 3),
        ("registry_uri", ""),
    ],
)
def test_params_reject_bad_values(dag: Any, name: str, value: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError):
        params.get_param(name).resolve(value)
    with pytest.raises(ParamValidationError, match=name):
        params[name] = value


def test_batch_train_uses_the_train_step_resources(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_airflow.operators.pss_step import PssBatchStepOperator
    from pss_airflow.settings import PssSettings
    from pss_airflow.train_dag import build_training_dag

    config = small_config.model_copy(
        update={
            "application": "near_identical_aws",
            "catalog_uri": "s3://pss-bucket/catalogs/catalog.csv",
            "runs_uri": "s3://pss-bucket/runs",
            "batch": BatchConfig(
                job_queue="pss-queue",
                job_definition="pss-step:1",
                steps={"train": BatchStepResources(job_queue="pss-gpu", vcpus=8, memory_mib=30000, gpus=1)},
            ),
        }
    )
    dag = build_training_dag(write_config(config, tmp_path / "aws.yaml"), PssSettings.from_env({}))
    assert dag.dag_id == "pss_train_near_identical_aws" and "batch" in dag.tags
    train = dag.get_task("train")
    assert isinstance(train, PssBatchStepOperator) and train.step == "train"
    assert (train.job_queue, train.job_definition) == ("pss-gpu", "pss-step:1")
    assert train.batch_resources == {"job_queue": "pss-gpu", "job_definition": "pss-step:1", "vcpus": 8, "memory_mib": 30000, "gpus": 1}
    assert dag.params["registry_uri"] == "s3://pss-bucket/runs/models"


def _lexical_config(subset: Subset) -> AppConfig:
    data = load_config(EXAMPLE_CONFIG).model_dump(mode="json", exclude_none=True)
    data.update(
        application="near_identical_train",
        features=[{"type": "char_ngram", "dims": 128}],
        catalog_uri=str(subset.catalog),
    )
    return parse_config(data, "lexical test config")


def test_training_dag_trains_and_registers_a_model_without_promoting_it(
    airflow_db: None, ag_subset: Subset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pss_ops.learning.registry import list_models

    runs = tmp_path / "runs"
    dag = load_dag(_lexical_config(ag_subset), tmp_path, monkeypatch, dag_id="pss_train_near_identical_train", runs_uri=runs)
    configs = {p.name: p.read_bytes() for p in (tmp_path / "configs").iterdir()}

    dag_run = dag.test(run_conf={"pairs": [f"{ag_subset.matches_path}:labelled"], "epochs": 3})
    assert dag_run.state == "success"

    (report_path,) = (runs / "near_identical_train" / "training").glob("*/train/report.json")
    run_dir = report_path.parent.parent
    report = storage.read_json(str(report_path))
    registry = runs / "models"
    assert report["registry_uri"] == str(registry)
    assert list_models(str(registry)) == [report["model_id"]]
    assert set(report["holdout"]) >= {"compound", "model"}
    assert yaml.safe_load((run_dir / "training.yaml").read_text()) == {"epochs": 3, "seed": 0}
    assert load_config(run_dir / "config.yaml") == _lexical_config(ag_subset)
    # The report task returns the model id; no config was promoted.
    (report_ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "report"]
    assert report_ti.state == "success"
    assert {p.name: p.read_bytes() for p in (tmp_path / "configs").iterdir()} == configs
    assert load_config(tmp_path / "configs" / "near_identical_train.yaml").embedding_model is None


def test_training_dag_trains_the_shipped_recipe_from_a_training_config(
    airflow_db: None, ag_subset: Subset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    dag = load_dag(_lexical_config(ag_subset), tmp_path, monkeypatch, dag_id="pss_train_near_identical_train", runs_uri=runs)
    recipe_path = ROOT / "examples" / "training" / "siamese.yaml"
    conf = {"pairs": [f"{ag_subset.matches_path}:labelled"], "training_config": str(recipe_path), "epochs": 2, "seed": 1}
    assert dag.test(run_conf=conf).state == "success"

    (report_path,) = (runs / "near_identical_train" / "training").glob("*/train/report.json")
    recipe = yaml.safe_load(recipe_path.read_text())
    # The run directory keeps the exact settings trained with: the recipe, with the params' epochs and seed.
    assert yaml.safe_load((report_path.parent.parent / "training.yaml").read_text()) == {**recipe, "epochs": 2, "seed": 1}
    report = storage.read_json(str(report_path))
    assert report["training_config"]["widths"] == [256] and report["training_config"]["skip_weight"] == 1.0
    assert report["training"]["epochs_run"] <= 2
    assert set(report["training"]["pair_counts"]) == {"labelled", "part_numbers"}


def test_training_dag_fails_without_pairs(airflow_db: None, ag_subset: Subset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    runs = tmp_path / "runs"
    dag = load_dag(_lexical_config(ag_subset), tmp_path, monkeypatch, dag_id="pss_train_near_identical_train", runs_uri=runs)
    with pytest.raises(ParamValidationError, match="pairs"):
        dag.test(run_conf={"epochs": 3})
    assert not (runs / "models").exists()
