"""DAG factory: one similarity DAG per application config, steps fanned out over manifest chunks."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from pss_airflow.operators.pss_step import SIMILAR_ITEMS_ASSET, PssBatchStepOperator, PssLocalStepOperator
from pss_airflow.settings import PssSettings
from pss_ops.config import load_config

log = logging.getLogger(__name__)

DOC_MD = """
### Product similarity: `{application}`

{description}

Finds each catalog item's most similar items and publishes them to the warehouse table
`similar_items` (replacing exactly this run's categories for the snapshot date), then emits an
asset event on `similar_items`.

plan → embed (mapped) → plan_index → build_index (mapped) → query + post-filter (mapped) → publish → report

* **categories**: empty means every category; otherwise only these are recomputed and replaced.
* **snapshot_date**: defaults to the run's logical date (a backfill's dates).
* **full_refresh**: ignore cached embeddings.
* **k**: results per item.

Executor: `{executor}`. Config: `{config_path}`.
"""


def _executor(settings: PssSettings, has_batch: bool, runs_uri: str | None) -> str:
    if settings.executor:
        if settings.executor == "batch" and not has_batch:
            raise ValueError("PSS_EXECUTOR=batch but the config has no batch section")
        return settings.executor
    # With no AWS settings the laptop default applies: the same commands, run locally.
    return "batch" if has_batch and runs_uri and runs_uri.startswith("s3://") else "local"


def catalog_config_paths(settings: PssSettings) -> list[Path]:
    """The configs in the config directory that name a catalog (the others get no DAGs), sorted."""
    paths = []
    for path in sorted(Path(settings.config_dir).glob("*.yaml")):
        if load_config(path).catalog_uri is None:
            log.warning("config %s sets no catalog_uri; no DAGs for it", path)
            continue
        paths.append(path)
    return paths


def build_similarity_dags(settings: PssSettings | None = None) -> list[DAG]:
    """A DAG for every config in the config directory that names a catalog to refresh."""
    settings = settings or PssSettings.from_env()
    return [build_similarity_dag(path, settings) for path in catalog_config_paths(settings)]


def _check_warehouse(warehouse_conn_id: str | None, default_url: str | None) -> None:
    """Before any compute: the publish's warehouse must parse and answer. A wrong URL fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from pss_airflow.hooks.warehouse import warehouse_url
    from pss_ops.warehouse.errors import WarehouseUrlError
    from pss_ops.warehouse.publish import check_warehouse

    url = (warehouse_conn_id and warehouse_url(warehouse_conn_id)) or default_url
    if not url:
        return
    try:
        check_warehouse(url)
    except WarehouseUrlError as err:
        raise AirflowFailException(f"pss: error: {err}") from err


def build_similarity_dag(config_path: str | Path, settings: PssSettings | None = None) -> DAG:
    """The daily similarity DAG of one application config."""
    settings = settings or PssSettings.from_env()
    config_path = str(Path(config_path).resolve())
    config = load_config(config_path)
    runs_uri = settings.runs_uri or config.runs_uri
    executor = _executor(settings, config.batch is not None, runs_uri)
    uses_aws = any(u and u.startswith(("s3://", "dynamodb://")) for u in (runs_uri, settings.cache_uri, config.cache.uri))

    with DAG(
        dag_id=f"pss_{config.application}",
        description=config.description or f"Product similarity for {config.application}",
        doc_md=DOC_MD.format(application=config.application, description=config.description, executor=executor, config_path=config_path),
        schedule="@daily",
        # Early, so backfills can reach old snapshot dates; catchup stays off for the daily schedule.
        start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=2,
        tags=["pss", "similarity", config.application, executor],
        default_args={"owner": "pss", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
        params={
            "categories": Param([], type="array", items={"type": "string"}, description="Categories to recompute; empty = all."),
            "snapshot_date": Param(
                None, type=["null", "string"], format="date", description="Snapshot date (YYYY-MM-DD); empty = the logical date."
            ),
            "full_refresh": Param(False, type="boolean", description="Ignore cached embeddings and embed every item."),
            "k": Param(config.k, type="integer", minimum=1, maximum=1000, description="Similar items per item."),
        },
    ) as dag:

        @task(multiple_outputs=True)
        def prepare_run(params: dict[str, Any] | None = None, run_id: str | None = None, **context: Any) -> dict[str, Any]:
            """Freeze the config into the run directory and build the plan command's arguments."""
            from pss_ops import storage
            from pss_ops.orchestration.request import prepare_run as prepare

            params = params or {}
            if uses_aws:
                from pss_airflow.hooks.pss_aws import PssAwsHook

                PssAwsHook(aws_conn_id=settings.aws_conn_id).configure_storage()
            when = context.get("logical_date") or context["dag_run"].run_after
            snapshot = dt.date.fromisoformat(params["snapshot_date"]) if params.get("snapshot_date") else when.date()
            request = prepare(
                config_path,
                run_id=str(run_id),
                snapshot_date=snapshot,
                # A config's own relative runs_uri is resolved by prepare() against the config file's folder.
                runs_uri=settings.runs_uri and storage.absolute(settings.runs_uri),
                cache_uri=settings.cache_uri,
                categories=list(params.get("categories") or []),
                full_refresh=bool(params.get("full_refresh")),
                k=params.get("k"),
            )
            _check_warehouse(settings.warehouse_conn_id, request.warehouse_url)
            return request.as_dict()

        @task
        def chunks(run_uri: str, kind: str) -> list[dict[str, int]]:
            """Partitions of the plan (catalog) or index plan (index) in chunks: one mapped task each."""
            from pss_ops.orchestration.fanout import chunk_partitions, partition_count

            if uses_aws:
                from pss_airflow.hooks.pss_aws import PssAwsHook

                PssAwsHook(aws_conn_id=settings.aws_conn_id).configure_storage()
            size = config.batch.chunk_size if executor == "batch" and config.batch else settings.local_chunk_size
            return chunk_partitions(partition_count(run_uri, kind), size)  # type: ignore[arg-type]

        run = prepare_run()
        run_uri = run["run_uri"]

        def operator(step: str, task_id: str, **kwargs: Any) -> dict[str, Any]:
            """The operator class and its arguments for one step, for the configured executor."""
            common = {
                "task_id": task_id,
                "step": step,
                "run_uri": run_uri,
                "aws_conn_id": settings.aws_conn_id,
                "warehouse_conn_id": settings.warehouse_conn_id,
                **kwargs,
            }
            if executor == "batch":
                assert config.batch is not None
                return {
                    "cls": PssBatchStepOperator,
                    **common,
                    "application": config.application,
                    "batch_resources": config.batch.resources(task_id).model_dump(),  # type: ignore[arg-type]
                    "deferrable": True,
                    "poll_interval": 5,
                }
            return {"cls": PssLocalStepOperator, **common, "max_parallel": settings.local_parallelism, "use_aws": uses_aws}

        def single(step: str, task_id: str, **kwargs: Any) -> Any:
            arguments = operator(step, task_id, **kwargs)
            return arguments.pop("cls")(**arguments)

        def mapped(step: str, task_id: str, over: Any) -> Any:
            arguments = operator(step, task_id)
            return arguments.pop("cls").partial(**arguments).expand(chunk=over)

        plan = single("plan", "plan", extra_arguments=run["plan_arguments"])
        catalog_chunks = chunks.override(task_id="catalog_chunks")(run_uri, "catalog")
        embed = mapped("embed", "embed", catalog_chunks)
        plan_index = single("plan-index", "plan_index")
        index_chunks = chunks.override(task_id="index_chunks")(run_uri, "index")
        build_index = mapped("build-index", "build_index", index_chunks)
        search = mapped("search", "search", catalog_chunks)
        # The warehouse connection wins; without one, a local run publishes to SQLite beside its runs.
        publish = single("publish", "publish", default_warehouse_url=run["warehouse_url"], outlets=[SIMILAR_ITEMS_ASSET])
        report = single("report", "report")

        plan >> catalog_chunks >> embed >> plan_index >> index_chunks >> build_index >> search >> publish >> report
    return dag
