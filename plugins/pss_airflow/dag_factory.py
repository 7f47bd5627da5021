"""DAG factory: one similarity DAG per application config, steps fanned out over manifest chunks."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import logging
from pathlib import Path
from typing import Any

import annotated_types
from airflow.sdk import DAG, CronTriggerTimetable, Param, task

from pss_airflow.operators.pss_step import (
    PARTITIONS_MAP_INDEX_TEMPLATE,
    SIMILAR_ITEMS_ASSET,
    PssBatchStepOperator,
    PssLocalStepOperator,
)
from pss_airflow.settings import PssSettings
from pss_ops import storage
from pss_ops.config import AppConfig, load_config
from pss_ops.orchestration.request import config_directory

log = logging.getLogger(__name__)

PREPARE_TASK_ID = "prepare_run"
# The run context reaches every step through a template rather than an XComArg, so the graph shows the pipeline's
# order, not an edge from prepare_run to each task. prepare_run (upstream of plan) always runs first.
RUN_URI = "{{ ti.xcom_pull(task_ids='" + PREPARE_TASK_ID + "', key='run_uri') }}"
# None would render as the text 'None'.
WAREHOUSE_URL = "{{ ti.xcom_pull(task_ids='" + PREPARE_TASK_ID + "', key='warehouse_url') or '' }}"

DOC_MD = """
### Product similarity: `{application}`

{description}

Finds each catalog item's most similar items and publishes them to the warehouse table
`similar_items` (replacing exactly this run's categories for the snapshot date), then emits an
asset event on `similar_items`.

plan → embed (mapped) → plan_index → build_index (mapped) → query + post-filter (mapped) → publish → report

* **categories**: empty means every category; otherwise only these are recomputed and replaced.
  {categories}
* **snapshot_date**: defaults to the run's logical date (a backfill's dates).
* **full_refresh**: ignore cached embeddings.
* **k**: results per item.

The parameters are checked before any compute; a wrong one fails `prepare_run` at once, without retries.

One run at a time (`max_active_runs=1`): a manual run for a date that a scheduled run is computing waits for it,
then replaces exactly its rows. Unpausing does not start a run for today; the first scheduled run is the next
midnight (UTC), so "Unpause and trigger" starts one run.

The report task's **Run report** link opens the run's report; **Warehouse table** says where the rows went and how to
query them.

Executor: `{executor}`. Config: `{config_path}`.
"""


def _k_bounds() -> tuple[int, int]:
    """The config's own limits on k, so the form and the config agree."""
    metadata = AppConfig.model_fields["k"].metadata
    low = next(m.ge for m in metadata if isinstance(m, annotated_types.Ge))
    high = next(m.le for m in metadata if isinstance(m, annotated_types.Le))
    return int(low), int(high)


def _csv_header(path: str) -> list[str] | None:
    """A local CSV catalog's column names (its first line only); None when it can't be read now."""
    try:
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as file:  # type: ignore[operator]
            return next(csv.reader(file), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def category_hint(catalog_uri: str, default_category: str) -> str:
    """What the form says about categories: the only one when the catalog has no category column, else where to look.

    Reads at most a local CSV's header line: the DAG is parsed every few seconds, and a catalog may be large or on S3.
    """
    header = _csv_header(catalog_uri) if catalog_uri.lower().endswith((".csv", ".csv.gz")) and not storage.is_s3(catalog_uri) else None
    if header is not None and "category" not in header:
        return f"This catalog has no category column: every item is in '{default_category}'."
    return (
        f"Names from the catalog's category column (a blank one is '{default_category}'). "
        "An unknown name fails prepare_run at once and lists the catalog's categories."
    )


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


def _snapshot_date(value: str | None, when: dt.datetime) -> dt.date:
    """The snapshot_date parameter, or the run's logical date (its run_after for a manual run without one)."""
    if not value:
        return when.date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"snapshot_date {value!r} is not a date: use YYYY-MM-DD") from None


def _k(value: Any, low: int, high: int) -> int | None:
    """The k parameter, checked here too: a run triggered without the form's schema (dag.test) must not slip by."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"k must be a whole number from {low} to {high}, got {value!r}")
    return value


def build_similarity_dag(config_path: str | Path, settings: PssSettings | None = None) -> DAG:
    """The daily similarity DAG of one application config."""
    settings = settings or PssSettings.from_env()
    config_path = str(Path(config_path).resolve())
    config = load_config(config_path)
    runs_uri = settings.runs_uri or config.runs_uri
    executor = _executor(settings, config.batch is not None, runs_uri)
    uses_aws = any(u and u.startswith(("s3://", "dynamodb://")) for u in (runs_uri, settings.cache_uri, config.cache.uri))
    categories_hint = ""
    if config.catalog_uri:
        categories_hint = category_hint(storage.resolve(config.catalog_uri, config_directory(config_path)), config.catalog.default_category)
    k_low, k_high = _k_bounds()

    with DAG(
        dag_id=f"pss_{config.application}",
        description=config.description or f"Product similarity for {config.application}",
        doc_md=DOC_MD.format(
            application=config.application,
            description=config.description,
            executor=executor,
            config_path=config_path,
            categories=categories_hint,
        ),
        # run_immediately=False and no start_date: unpausing creates no run for today, which would race (and
        # duplicate) the manual run that "Unpause and trigger" starts. Backfills give their own dates.
        schedule=CronTriggerTimetable("@daily", timezone="UTC", run_immediately=False),
        catchup=False,
        # A second run for a date waits for the first, then replaces its rows; two at once would both publish.
        max_active_runs=1,
        tags=["pss", "similarity", config.application, executor],
        default_args={"owner": "pss", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
        params={
            "categories": Param(
                [], type="array", items={"type": "string"}, description=f"Categories to recompute; empty = all. {categories_hint}"
            ),
            "snapshot_date": Param(
                None, type=["null", "string"], format="date", description="Snapshot date (YYYY-MM-DD); empty = the logical date."
            ),
            "full_refresh": Param(False, type="boolean", description="Ignore cached embeddings and embed every item."),
            # Exclusive bounds, not minimum/maximum: the form clamps a number to those silently (-1 became 1);
            # with these it sends what was typed and the out-of-range value is refused with a message.
            "k": Param(
                config.k,
                type="integer",
                exclusiveMinimum=k_low - 1,
                exclusiveMaximum=k_high + 1,
                description=f"Similar items per item, {k_low} to {k_high}.",
            ),
        },
    ) as dag:

        @task(task_id=PREPARE_TASK_ID, multiple_outputs=True)
        def prepare_run(params: dict[str, Any] | None = None, run_id: str | None = None, **context: Any) -> dict[str, Any]:
            """Check the parameters (before any compute), freeze the config into the run directory, build plan's arguments."""
            from airflow.sdk.exceptions import AirflowFailException

            from pss_ops.orchestration.request import prepare_run as prepare

            params = params or {}
            if uses_aws:
                from pss_airflow.hooks.pss_aws import PssAwsHook

                PssAwsHook(aws_conn_id=settings.aws_conn_id).configure_storage()
            when = context.get("logical_date") or context["dag_run"].run_after
            try:
                snapshot = _snapshot_date(params.get("snapshot_date"), when)
                request = prepare(
                    config_path,
                    run_id=str(run_id),
                    snapshot_date=snapshot,
                    # A config's own relative runs_uri is resolved by prepare() against the config file's folder.
                    runs_uri=settings.runs_uri and storage.absolute(settings.runs_uri),
                    cache_uri=settings.cache_uri,
                    categories=list(params.get("categories") or []),
                    full_refresh=bool(params.get("full_refresh")),
                    k=_k(params.get("k"), k_low, k_high),
                )
            except ValueError as err:
                # Wrong input (a category, k, the date, the config or catalog): the same run would fail the same way.
                from pss_ops.cli import error_message

                raise AirflowFailException(f"pss: error: {error_message(err)}") from err
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

        def operator(step: str, task_id: str, **kwargs: Any) -> dict[str, Any]:
            """The operator class and its arguments for one step, for the configured executor."""
            common = {
                "task_id": task_id,
                "step": step,
                "run_uri": RUN_URI,
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
            arguments = operator(step, task_id, map_index_template=PARTITIONS_MAP_INDEX_TEMPLATE)
            return arguments.pop("cls").partial(**arguments).expand(chunk=over)

        # plan_arguments is plan's own input, so that one edge from prepare_run is the graph's.
        plan = single("plan", "plan", extra_arguments=run["plan_arguments"])
        catalog_chunks = chunks.override(task_id="catalog_chunks")(RUN_URI, "catalog")
        embed = mapped("embed", "embed", catalog_chunks)
        plan_index = single("plan-index", "plan_index")
        index_chunks = chunks.override(task_id="index_chunks")(RUN_URI, "index")
        build_index = mapped("build-index", "build_index", index_chunks)
        search = mapped("search", "search", catalog_chunks)
        # The warehouse connection wins; without one, a local run publishes to SQLite beside its runs.
        publish = single("publish", "publish", default_warehouse_url=WAREHOUSE_URL, outlets=[SIMILAR_ITEMS_ASSET])
        report = single("report", "report")

        plan >> catalog_chunks >> embed >> plan_index >> index_chunks >> build_index >> search >> publish >> report
    return dag
