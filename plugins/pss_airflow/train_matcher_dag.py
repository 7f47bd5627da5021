"""Matcher-training DAGs: one manually triggered `pss step train-matcher` DAG per application config; promotion is a manual edit."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from pss_airflow.dag_factory import _executor, catalog_config_paths
from pss_airflow.settings import PssSettings
from pss_airflow.train_dag import train_task
from pss_ops import storage
from pss_ops.config import load_config
from pss_ops.orchestration.matcher_training import default_matcher_registry_uri, matcher_report_text, matcher_report_uri
from pss_ops.orchestration.matcher_training import prepare_matcher_training as prepare_matcher_training_run
from pss_ops.orchestration.training import resolve_runs_root

log = logging.getLogger(__name__)

DOC_MD = """
### Train a pair matcher: `{application}`

Trains a pair matcher (gradient-boosted trees over pair features, calibrated match probabilities) on labelled
candidate pairs, measures it on held-out pairs and saves it in the matcher registry. **It never promotes the
matcher**: the `report` task logs the held-out figures and the one-line config change that would promote it
(`matcher:` in `{config_path}`), which is a reviewed, manual edit.

prepare_training → train (`pss step train-matcher`) → report

* **pairs**: the labelled pairs CSV (`id_a,id_b,label`, label 1 same product, 0 not), e.g. from `pss label-queue`.
  A relative local path is relative to the config file's directory. It is checked before the search starts (a bad
  file fails at once, without retries) and copied into the run directory.
* **registry_uri**: where the matcher is saved (default `<runs root>/matchers`).
* **seed**: seed of the held-out split and the trees.

Runs go under `<runs root>/{application}/train_matcher/<run id>`. Executor: `{executor}`. Config: `{config_path}`.
"""


def build_train_matcher_dags(settings: PssSettings | None = None) -> list[DAG]:
    """A matcher-training DAG for every config in the config directory that names a catalog."""
    settings = settings or PssSettings.from_env()
    return [build_train_matcher_dag(path, settings) for path in catalog_config_paths(settings)]


def build_train_matcher_dag(config_path: str | Path, settings: PssSettings | None = None) -> DAG:
    """The manually triggered matcher-training DAG of one application config."""
    settings = settings or PssSettings.from_env()
    config_path = str(Path(config_path).resolve())
    config_dir = Path(config_path).parent
    config = load_config(config_path)
    runs_root = resolve_runs_root(config, config_path, settings.runs_uri)
    executor = _executor(settings, config.batch is not None, runs_root)
    catalog_uri = storage.resolve(config.catalog_uri, config_dir) if config.catalog_uri else None
    cache_uri = settings.cache_uri or config.cache.uri
    default_registry = default_matcher_registry_uri(runs_root) if runs_root else None
    uses_aws = any(u and u.startswith(("s3://", "dynamodb://")) for u in (runs_root, catalog_uri, cache_uri))
    # Its own entry (batch.steps.train_matcher): the trees need CPUs, never the embedding trainer's GPU queue.
    resources = config.batch.resources("train_matcher") if config.batch else None

    def configure_s3(*uris: str) -> None:
        if uses_aws or any(u.startswith("s3://") for u in uris):
            from pss_airflow.hooks.pss_aws import PssAwsHook

            PssAwsHook(aws_conn_id=settings.aws_conn_id).configure_storage()

    with DAG(
        dag_id=f"pss_train_matcher_{config.application}",
        description=f"Train a pair matcher for {config.application} (manual trigger; never promotes)",
        doc_md=DOC_MD.format(application=config.application, executor=executor, config_path=config_path),
        schedule=None,
        start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["pss", "training", "matcher", config.application, executor],
        default_args={"owner": "pss", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
        params={
            # No default: a run must name its labels.
            "pairs": Param(
                type="string",
                minLength=1,
                title="Labelled pairs",
                description="CSV with columns id_a,id_b,label (1 same product, 0 not); a relative path is relative to the config file.",
            ),
            "registry_uri": Param(
                default_registry,
                type="string",
                minLength=1,
                description="Matcher registry the trained matcher is saved in (local path or s3://).",
            ),
            "seed": Param(0, type="integer", minimum=0, description="Seed of the held-out split and the trees."),
        },
    ) as dag:

        @task(multiple_outputs=True)
        def prepare_training(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
            """Check the labels, freeze them and the config into the run directory; build `pss step train-matcher`'s arguments."""
            params = params or {}
            configure_s3(*(str(params.get(name) or "") for name in ("pairs", "registry_uri")))
            try:
                request = prepare_matcher_training_run(
                    config_path,
                    pairs=str(params.get("pairs") or ""),
                    run_id=str(run_id),
                    runs_root=runs_root,
                    registry_uri=params.get("registry_uri"),
                    seed=int(params.get("seed") or 0),
                    cache_uri=settings.cache_uri,
                )
            except (ValueError, FileNotFoundError) as err:
                # Bad labels, a missing file or an unset runs location fail the same way on every try.
                raise AirflowFailException(str(err)) from err
            return request.as_dict()

        @task
        def report(run_uri: str, config_uri: str) -> str:
            """Log the held-out figures of the run's report and the promotion edit; return the matcher id. Configs are left alone."""
            configure_s3(run_uri)
            result = storage.read_json(matcher_report_uri(run_uri))
            # The config trained with: promoting keeps its match threshold, if it already sets a matcher.
            trained_with = load_config(config_uri).matcher
            for line in matcher_report_text(result, config_path, trained_with.match_threshold if trained_with else None).splitlines():
                log.info("%s", line)
            return str(result["matcher_id"])

        run: Any = prepare_training()
        train = train_task("train-matcher", run, settings, executor, config.application, resources, uses_aws)
        train >> report(run["run_uri"], run["config_uri"])
    return dag
