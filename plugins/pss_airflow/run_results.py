"""The api-server's path from a DAG run to its results: its report.html and what it published, behind Airflow's auth.

Mounted at /pss by PssRunResultsPlugin; the report and publish tasks' extra links point here (pss_airflow.links).
The run folder is the one the run's prepare_run task returned (its `run_uri` XCom), never a path from the URL.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from pss_airflow.dag_factory import PREPARE_TASK_ID
from pss_airflow.links import URL_PREFIX

app = FastAPI(title="PSS run results", description="A similarity run's report and published table, by DAG run.")
# Whoever may read a DAG's runs in the UI may read their results.
_can_read_runs = Depends(requires_access_dag("GET", DagAccessEntity.RUN))


def _run_uri(session: Any, dag_id: str, run_id: str) -> str:
    from airflow.models.xcom import XComModel

    row = session.scalars(XComModel.get_many(run_id=run_id, key="run_uri", task_ids=PREPARE_TASK_ID, dag_ids=dag_id, limit=1)).first()
    if row is None:
        raise HTTPException(404, f"run {run_id} of {dag_id} has no run folder: its {PREPARE_TASK_ID} task has not succeeded")
    return str(XComModel.deserialize_value(row))


def s3_console_url(uri: str) -> str:
    """The AWS console page of an s3:// object."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"


@app.get("/runs/{dag_id}/{run_id}/report", dependencies=[_can_read_runs])
def run_report(dag_id: str, run_id: str, session: SessionDep) -> Any:
    """The run's report.html (on S3: its console page)."""
    from pss_ops import storage
    from pss_ops.reporting import page_uri

    report = page_uri(_run_uri(session, dag_id, run_id))
    if storage.is_s3(report):
        return RedirectResponse(s3_console_url(report))
    if not storage.exists(report):
        raise HTTPException(404, f"{report} is not written yet: the run's report task writes it")
    return FileResponse(report, media_type="text/html")


@app.get("/runs/{dag_id}/{run_id}/results", dependencies=[_can_read_runs])
def run_results(dag_id: str, run_id: str, session: SessionDep) -> dict[str, Any]:
    """Where the run published and how to read it back: warehouse (password redacted), table, rows and a query."""
    from pss_ops import layout, storage
    from pss_ops.manifests import PublishResult, RunContext
    from pss_ops.reporting import page_uri

    run_uri = _run_uri(session, dag_id, run_id)
    try:
        if not storage.exists(layout.publish_manifest(run_uri)):
            raise HTTPException(404, f"run {run_id} of {dag_id} has not published yet (no {layout.publish_manifest(run_uri)})")
        run = RunContext.read(layout.context(run_uri))
        published = PublishResult.read(layout.publish_manifest(run_uri))
    except OSError as err:
        # On S3 the api-server needs read access to the runs bucket (its default AWS credentials).
        raise HTTPException(502, f"cannot read run {run_uri}: {err}") from err
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "application": run.application,
        "snapshot_date": run.snapshot_date.isoformat(),
        "categories": list(published.categories),
        "warehouse": published.warehouse,
        "table": published.table,
        "rows": published.rows,
        "rows_replaced": published.rows_replaced,
        "query": f"SELECT * FROM {published.table} WHERE application = '{run.application}' "
        f"AND snapshot_date = '{run.snapshot_date.isoformat()}' ORDER BY category, query_item_id, rank",
        "parquet": published.parquet_uri,
        "report": page_uri(run_uri),
        "run_uri": run_uri,
    }


class PssRunResultsPlugin(AirflowPlugin):
    """Serves the run results pages on the api-server."""

    name = "pss_run_results"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "PSS run results"}]
