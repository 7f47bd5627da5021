"""The matcher-training DAG: parsed from dags/, its params and task graph, its step, and a real `pss step train-matcher` run."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pss_ops import storage
from pss_ops.config import AppConfig, BatchConfig, BatchStepResources, MatcherRef, load_config, parse_config
from tests.airflow.conftest import SETTINGS_ENV, load_dag
from tests.conftest import EXAMPLE_CONFIG, ROOT, Subset, write_config

DAG_ID = "pss_train_matcher_near_identical"
ORDER = ["prepare_training", "train", "report"]
MATCHER_ID = re.compile(r"^matcher-[0-9a-f]{16}$")
APPLICATION = "near_identical_matcher"
RUN = "/runs/near_identical/train_matcher/r1"


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


# --- the DAG as parsed ---------------------------------------------------------------------------------


def test_matcher_dag_is_parsed_and_only_triggered_manually(default_bag: Any, dag: Any) -> None:
    assert default_bag.import_errors == {}
    assert "pss_train_matcher_visually_similar_same_color" not in default_bag.dags
    assert dag.schedule is None
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.start_date == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert set(dag.tags) == {"pss", "training", "matcher", "near_identical", "local"}
    assert "never promotes" in dag.doc_md.lower() and str(EXAMPLE_CONFIG) in dag.doc_md
    for task in dag.tasks:
        assert task.owner == "pss", task.task_id
        assert task.retries >= 2, task.task_id


def test_task_graph_is_prepare_train_report(dag: Any) -> None:
    from pss_airflow.operators.pss_step import PssLocalStepOperator

    assert sorted(t.task_id for t in dag.tasks) == sorted(ORDER)
    for position, task_id in enumerate(ORDER):
        assert dag.get_task(task_id).get_flat_relative_ids(upstream=True) == set(ORDER[:position]), task_id
    train = dag.get_task("train")
    assert isinstance(train, PssLocalStepOperator) and train.step == "train-matcher"


def test_train_matcher_is_one_unpartitioned_step() -> None:
    from pss_airflow.operators.pss_step import _partitions

    from pss_ops.orchestration.fanout import PARTITIONED_STEPS, step_arguments

    assert "train-matcher" not in PARTITIONED_STEPS
    assert _partitions("train-matcher", None) == (None, 1)
    assert step_arguments("train-matcher", RUN) == ["train-matcher", "--run-uri", RUN]


def test_params_schema_and_defaults(dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert set(params.keys()) == {"pairs", "registry_uri", "seed"}
    for name in params.keys():
        assert params.get_param(name).description, name
    # No runs root is configured by default, so the registry has no default either; pairs must always be given.
    with pytest.raises(ParamValidationError, match="pairs"):
        copy.deepcopy(params).validate()
    good = copy.deepcopy(params)
    good["pairs"] = "labels/train_pairs.csv"
    good["registry_uri"] = "/matchers"
    assert good.validate() == {"pairs": "labels/train_pairs.csv", "registry_uri": "/matchers", "seed": 0}


@pytest.mark.parametrize(
    ("name", "value"),
    [("pairs", "train_pairs.csv"), ("pairs", "s3://bucket/labels.csv"), ("seed", 0), ("seed", 7), ("registry_uri", "s3://bucket/matchers")],
)
def test_params_accept_good_values(dag: Any, name: str, value: Any) -> None:
    params = copy.deepcopy(dag.params)
    params[name] = value
    assert params.get_param(name).resolve(value) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [("pairs", ""), ("pairs", ["a.csv"]), ("pairs", None), ("seed", -1), ("seed", 1.5), ("seed", None), ("registry_uri", "")],
)
def test_params_reject_bad_values(dag: Any, name: str, value: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError):
        params.get_param(name).resolve(value)
    with pytest.raises(ParamValidationError, match=name):
        params[name] = value


def test_registry_defaults_to_matchers_under_the_runs_root(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_airflow.settings import PssSettings
    from pss_airflow.train_matcher_dag import build_train_matcher_dag

    path = write_config(small_config.model_copy(update={"catalog_uri": "catalog.csv"}), tmp_path / "near_identical.yaml")
    dag = build_train_matcher_dag(path, PssSettings.from_env({"PSS_RUNS_URI": str(tmp_path / "runs")}))
    assert dag.dag_id == DAG_ID
    assert dag.params["registry_uri"] == str(tmp_path / "runs" / "matchers")
    s3 = build_train_matcher_dag(path, PssSettings.from_env({"PSS_RUNS_URI": "s3://bucket/runs/", "PSS_EXECUTOR": "local"}))
    assert s3.params["registry_uri"] == "s3://bucket/runs/matchers"
    assert s3.get_task("train").use_aws is True


def test_batch_train_matcher_runs_on_its_own_step_resources(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_airflow.operators.pss_step import PssBatchStepOperator
    from pss_airflow.settings import PssSettings
    from pss_airflow.train_matcher_dag import build_train_matcher_dag

    config = small_config.model_copy(
        update={
            "application": "near_identical_aws",
            "catalog_uri": "s3://pss-bucket/catalogs/catalog.csv",
            "runs_uri": "s3://pss-bucket/runs",
            "batch": BatchConfig(
                job_queue="pss-queue",
                job_definition="pss-step:1",
                # The embedding trainer's GPU queue is not the matcher's: its trees need CPUs.
                steps={
                    "train": BatchStepResources(job_queue="pss-gpu", gpus=1),
                    "train_matcher": BatchStepResources(vcpus=8, memory_mib=30000),
                },
            ),
        }
    )
    dag = build_train_matcher_dag(write_config(config, tmp_path / "aws.yaml"), PssSettings.from_env({}))
    assert dag.dag_id == "pss_train_matcher_near_identical_aws" and "batch" in dag.tags
    train = dag.get_task("train")
    assert isinstance(train, PssBatchStepOperator) and train.step == "train-matcher"
    assert train.batch_resources == {"job_queue": "pss-queue", "job_definition": "pss-step:1", "vcpus": 8, "memory_mib": 30000, "gpus": 0}
    assert dag.params["registry_uri"] == "s3://pss-bucket/runs/matchers"


# --- the step and the run's preparation -------------------------------------------------------------------


def test_dag_arguments_reach_train_matcher(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from pss_ops.cli import main
    from pss_ops.orchestration.fanout import step_arguments

    config = tmp_path / "app.yaml"
    config.write_text("application: a\nfeatures: [{type: char_ngram}]\n")
    run = str(tmp_path / "run")
    seen: dict[str, Any] = {}

    def fake_train_matcher(app: AppConfig, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs, application=app.application)
        return {"matcher_id": "matcher-0123456789abcdef", "registry_uri": kwargs["registry_uri"], "training": {}, "holdout": {}}

    monkeypatch.setattr("pss_ops.matching.training.train_matcher", fake_train_matcher)
    extra = ["--config", str(config), "--catalog", "s3://b/catalog.parquet", "--pairs", f"{run}/pairs.csv", "--registry", "s3://b/m"]
    capsys.readouterr()
    assert main(["step", *step_arguments("train-matcher", run), *extra, "--seed", "7"]) == 0
    assert seen == {
        "application": "a",
        "catalog_uri": "s3://b/catalog.parquet",
        "pairs_uri": f"{run}/pairs.csv",
        "registry_uri": "s3://b/m",
        "work_dir": str(Path(run) / "work"),
        "seed": 7,
    }
    written = storage.read_json(str(Path(run) / "report.json"))
    assert written["matcher_id"] == "matcher-0123456789abcdef"
    assert json.loads(capsys.readouterr().out) == written


def test_step_train_matcher_without_its_inputs_names_them(capsys: pytest.CaptureFixture[str]) -> None:
    from pss_ops.cli import main

    assert main(["step", "train-matcher", "--run-uri", RUN, "--config", "app.yaml"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pss: error: pss step train-matcher: --config, --catalog, --pairs and --registry are required"
    )


def _labels(path: Path, rows: list[tuple[str, str, str]], header: str = "id_a,id_b,label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n", encoding="utf-8")
    return path


def test_prepare_freezes_config_and_labels_with_paths_relative_to_the_config(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_ops.orchestration.matcher_training import prepare_matcher_training

    config_path = write_config(small_config.model_copy(update={"catalog_uri": "catalog.csv"}), tmp_path / "near_identical.yaml")
    labels = _labels(tmp_path / "labels" / "pairs.csv", [("a", "b", "1"), ("a", "c", "0")])
    runs = str(tmp_path / "runs")
    request = prepare_matcher_training(
        str(config_path), pairs="labels/pairs.csv", run_id="manual__2026-01-01T00:00:00+00:00", runs_root=runs, seed=3, cache_uri="c.sqlite"
    )
    run_uri = str(tmp_path / "runs" / "near_identical" / "train_matcher" / "manual__2026-01-01T00_00_00_00_00")
    assert request.run_uri == run_uri
    assert request.pairs_source == str(labels) and Path(request.pairs_uri).read_bytes() == labels.read_bytes()
    assert request.registry_uri == str(tmp_path / "runs" / "matchers")
    assert request.catalog_uri == str(tmp_path / "catalog.csv")
    assert load_config(request.config_uri) == small_config.model_copy(
        update={"catalog_uri": "catalog.csv", "cache": small_config.cache.model_copy(update={"uri": "c.sqlite"})}
    )
    assert request.train_arguments == [
        "--config",
        request.config_uri,
        "--catalog",
        request.catalog_uri,
        "--pairs",
        request.pairs_uri,
        "--registry",
        request.registry_uri,
        "--seed",
        "3",
    ]
    other = prepare_matcher_training(str(config_path), pairs=str(labels), run_id="r2", runs_root=runs, registry_uri="matchers")
    assert other.registry_uri == str(tmp_path / "matchers") and other.seed == 0


@pytest.mark.parametrize(
    ("header", "rows", "error", "message"),
    [
        ("id_a,id_b", [("a", "b", "1")], "LabelError", "lacks column.*label"),
        ("id_a,id_b,label", [("a", "b", "1"), ("a", "c", "yes")], "LabelError", "row 2 .*label must be 0 or 1"),
        ("id_a,id_b,label", [("a", "b", "1"), ("a", "c", "1")], "LabelError", "every pair is labelled matches"),
    ],
)
def test_prepare_refuses_bad_labels_before_writing_anything(
    small_config: AppConfig, tmp_path: Path, header: str, rows: list[tuple[str, str, str]], error: str, message: str
) -> None:
    from pss_ops.orchestration.matcher_training import prepare_matcher_training

    config_path = write_config(small_config.model_copy(update={"catalog_uri": "catalog.csv"}), tmp_path / "app.yaml")
    _labels(tmp_path / "pairs.csv", rows, header)
    with pytest.raises(ValueError, match=message) as raised:
        prepare_matcher_training(str(config_path), pairs="pairs.csv", run_id="r", runs_root=str(tmp_path / "runs"))
    assert type(raised.value).__name__ == error
    assert not (tmp_path / "runs").exists()


def test_prepare_refuses_a_missing_file_and_s3_runs_without_a_shared_cache(small_config: AppConfig, tmp_path: Path) -> None:
    from pss_ops.orchestration.matcher_training import prepare_matcher_training

    config_path = str(write_config(small_config.model_copy(update={"catalog_uri": "catalog.csv"}), tmp_path / "app.yaml"))
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        prepare_matcher_training(config_path, pairs="missing.csv", run_id="r", runs_root=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="PSS_CACHE_URI"):
        prepare_matcher_training(config_path, pairs="missing.csv", run_id="r", runs_root="s3://bucket/runs")
    with pytest.raises(ValueError, match="no runs location"):
        prepare_matcher_training(config_path, pairs="missing.csv", run_id="r", runs_root=None)


@pytest.mark.parametrize("registry", ["/srv/pss/matchers", "s3://bucket/runs/matchers", "relative dir/with: colon"])
def test_promotion_line_reads_back_as_the_config_section(registry: str) -> None:
    from pss_ops.orchestration.matcher_training import promotion_line

    report = {"matcher_id": "matcher-0123456789abcdef", "registry_uri": registry}
    line = promotion_line(report)
    assert "\n" not in line and line.startswith("matcher: {")
    assert MatcherRef.model_validate(yaml.safe_load(line)["matcher"]) == MatcherRef(registry_uri=registry, model_id=report["matcher_id"])
    kept = yaml.safe_load(promotion_line(report, match_threshold=0.8))["matcher"]
    assert MatcherRef.model_validate(kept).match_threshold == 0.8


# --- a real run -----------------------------------------------------------------------------------------


def _lexical_config(subset: Subset) -> AppConfig:
    data = load_config(EXAMPLE_CONFIG).model_dump(mode="json", exclude_none=True)
    data.update(application=APPLICATION, features=[{"type": "char_ngram", "dims": 128}], catalog_uri=str(subset.catalog))
    return parse_config(data, "lexical test config")


@pytest.fixture(scope="module")
def labelled_pairs(ag_subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's labels: a prior run's published pairs among half the items, labelled from the true matches."""
    from pss_ops.orchestration.run import run_pipeline

    out = tmp_path_factory.mktemp("matcher_labels")
    run_pipeline(_lexical_config(ag_subset), catalog_uri=str(ag_subset.catalog), out_dir=str(out / "run"), progress=lambda _: None)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "labels_from_truth.py"),
            "--pairs",
            str(out / "run" / "similar_items.parquet"),
            "--truth",
            str(ag_subset.matches_path),
            "--out-dir",
            str(out / "labels"),
        ],
        check=True,
        capture_output=True,
    )
    labels = pd.read_csv(out / "labels" / "train_pairs.csv", dtype={"label": int})
    assert list(labels.columns) == ["id_a", "id_b", "label"]
    assert (labels["label"] == 1).sum() >= 15 and (labels["label"] == 0).sum() >= 15
    return out / "labels" / "train_pairs.csv"


def _config_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_matcher_dag_trains_and_registers_a_matcher_without_promoting_it(
    airflow_db: None,
    ag_subset: Subset,
    labelled_pairs: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pss_ops.matching.registry import SPEC_FILE
    from pss_ops.orchestration.matcher_training import promotion_line

    runs = tmp_path / "runs"
    dag = load_dag(_lexical_config(ag_subset), tmp_path, monkeypatch, dag_id=f"pss_train_matcher_{APPLICATION}", runs_uri=runs)
    configs = tmp_path / "configs"
    # Given relative to the config file, as a user would next to it.
    (configs / "labels").mkdir()
    (configs / "labels" / "train_pairs.csv").write_bytes(labelled_pairs.read_bytes())
    before = _config_files(configs)

    with caplog.at_level(logging.INFO, logger="pss_airflow.train_matcher_dag"):
        dag_run = dag.test(run_conf={"pairs": "labels/train_pairs.csv", "seed": 1})
    assert dag_run.state == "success"

    (report_path,) = (runs / APPLICATION / "train_matcher").glob("*/report.json")
    run_dir = report_path.parent
    report = storage.read_json(str(report_path))
    matcher_id = report["matcher_id"]
    assert MATCHER_ID.match(matcher_id)
    registry = runs / "matchers"
    assert report["registry_uri"] == str(registry)
    assert [p.name for p in registry.iterdir()] == [matcher_id] and (registry / matcher_id / SPEC_FILE).is_file()
    assert report["training"]["pairs_uri"] == str(run_dir / "pairs.csv") and report["training"]["seed"] == 1
    assert (run_dir / "pairs.csv").read_bytes() == labelled_pairs.read_bytes()
    assert load_config(run_dir / "config.yaml") == _lexical_config(ag_subset)
    assert {"R@P90", "f1@threshold", "best_f1"} <= set(report["holdout"])
    assert (run_dir / "work" / "runs").is_dir()

    # The report task names the matcher; the config file is left as it was: training never promotes.
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert {task_id: ti.state for task_id, ti in tis.items()} == dict.fromkeys(ORDER, "success")
    assert tis["report"].xcom_pull(task_ids="report") == matcher_id
    logged = [r.getMessage() for r in caplog.records if r.name == "pss_airflow.train_matcher_dag"]
    assert f"matcher {matcher_id} saved in {registry} (NOT promoted)" in logged
    assert any(line.strip().startswith("R@P90 ") for line in logged)
    assert f"  {promotion_line(report)}" in logged
    assert _config_files(configs) == before
    assert load_config(configs / f"{APPLICATION}.yaml").matcher is None


@pytest.mark.parametrize(
    ("pairs", "content"),
    [("labels/missing.csv", None), ("labels/unlabelled.csv", "id_a,id_b\na,b\n")],
    ids=["missing file", "no label column"],
)
def test_bad_pairs_fail_in_prepare_without_retries(
    airflow_db: None, ag_subset: Subset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pairs: str, content: str | None
) -> None:
    runs = tmp_path / "runs"
    dag = load_dag(_lexical_config(ag_subset), tmp_path, monkeypatch, dag_id=f"pss_train_matcher_{APPLICATION}", runs_uri=runs)
    if content is not None:
        (tmp_path / "configs" / pairs).parent.mkdir(parents=True)
        (tmp_path / "configs" / pairs).write_text(content, encoding="utf-8")

    dag_run = dag.test(run_conf={"pairs": pairs})
    assert dag_run.state == "failed"
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert dag.get_task("prepare_training").retries >= 2
    # Failed on the first try, though retries are allowed: AirflowFailException skips them.
    assert (tis["prepare_training"].state, tis["prepare_training"].try_number) == ("failed", 1)
    assert tis["train"].state == "upstream_failed" and tis["report"].state == "upstream_failed"
    assert not runs.exists()
