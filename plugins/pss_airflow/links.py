"""Extra links from a run's report and publish tasks to its results, served by the api-server (pss_airflow.run_results)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

# Where pss_airflow.run_results is mounted on the api-server.
URL_PREFIX = "/pss"


def run_results_url(dag_id: str, run_id: str, page: str) -> str:
    """The api-server URL of one of a DAG run's result pages ('report' or 'results')."""
    from airflow.providers.common.compat.sdk import conf

    # Absolute when the deployment says where the UI lives; else relative to the UI, which serves both.
    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{URL_PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/{page}"


class _RunPageLink(BaseOperatorLink):
    """A link shown on the tasks of `steps` only (the others have nothing to show yet)."""

    page: ClassVar[str]
    steps: ClassVar[tuple[str, ...]]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if getattr(operator, "step", None) not in self.steps:
            return ""
        return run_results_url(ti_key.dag_id, ti_key.run_id, self.page)


class RunReportLink(_RunPageLink):
    """The run's report.html, which the report step writes."""

    name = "Run report"
    page = "report"
    steps = ("report",)


class RunResultsLink(_RunPageLink):
    """What the run published: warehouse (password redacted), table, snapshot, categories, rows, and the query."""

    name = "Warehouse table"
    page = "results"
    steps = ("publish", "report")
