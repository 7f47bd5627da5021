"""The Airflow UI as a data engineer drives it, in chromium against a real standalone (api-server, scheduler, dag-processor,
triggerer on SQLite; this repo's dags/ and plugins/, a small catalog): log in, open pss_near_identical's trigger form,
see an out-of-range k refused, "Unpause and trigger" a valid run, see exactly one run, watch it finish, and follow the
report task's Run report link. Ctrl-C on standalone at the end must leave no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pss_ops.config import load_config
from tests.airflow.standalone import Standalone, clean_environment, free_port, standalone
from tests.browser.conftest import PageWatch
from tests.conftest import DATA, EXAMPLE_CONFIG, ROOT

DAG_ID = "pss_near_identical"
USER, PASSWORD = "admin", "pss-browser-test"
CATEGORIES = ("electronics", "software")
# The run's budget: ~10 tasks, each `pss step` process loading its libraries on a shared 2-core machine.
RUN_SECONDS = 240
# The README's screenshot is refreshed only when asked (PSS_UPDATE_DOCS=1): its logical date changes every run, and
# `make test` must leave the checkout as it found it.
DOCS_SCREENSHOT = ROOT / "docs" / "airflow-trigger.png"


class Api:
    """The api-server's REST API as the admin user, for what the test checks beside the page."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token: str | None = None
        self.token = self.call("/auth/token", {"username": USER, "password": PASSWORD})["access_token"]

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def runs(self) -> list[dict[str, Any]]:
        return list(self.call(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"])

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.parse.quote(run_id, safe="")
        return list(self.call(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances")["task_instances"])


def _catalog(path: Path) -> None:
    """The two listings (Amazon's and Google's) of 60 known matches, each pair in one of two categories: a run small
    enough to finish while the test waits, with near-identical items from other sellers to find."""
    catalog = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    matches = pd.read_csv(DATA / "matches.csv", dtype=str, keep_default_na=False).drop_duplicates("id_a").drop_duplicates("id_b")
    category = {}
    for i, (a, b) in enumerate(zip(matches["id_a"].head(60), matches["id_b"].head(60))):
        category[a] = category[b] = CATEGORIES[i % 2]
    rows = catalog[catalog["item_id"].isin(category)].copy()
    rows.insert(2, "category", rows["item_id"].map(category))
    rows.to_csv(path, index=False)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """standalone through scripts/airflow_standalone.py on a throwaway home; after the tests, Ctrl-C must stop it all."""
    base = tmp_path_factory.mktemp("airflow_ui")
    home = base / "airflow-home"
    home.mkdir()
    # The simple auth manager's password file, written first so the admin's password is known.
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}), encoding="utf-8")
    _catalog(base / "catalog.csv")
    (base / "configs").mkdir()
    config = load_config(EXAMPLE_CONFIG).model_copy(update={"catalog_uri": str(base / "catalog.csv")})
    (base / "configs" / "near_identical.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    port = free_port()
    env = clean_environment()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__PORT": str(port),
            "PSS_CONFIG_DIR": str(base / "configs"),
            "PSS_RUNS_URI": str(base / "runs"),
            "PSS_CACHE_URI": str(base / "cache" / "embeddings.sqlite"),
            "PSS_EXECUTOR": "local",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    command = [sys.executable, str(ROOT / "scripts" / "airflow_standalone.py")]
    with standalone(command, env, home, base / "standalone.log", port) as running:
        yield running
        running.ctrl_c()
        # Before the context's own cleanup: Ctrl-C alone must have stopped everything, tasks' processes included.
        survivors = [(p.pid, p.cmdline()) for p in running.processes()]
        assert survivors == [], survivors


def _log_in(page: Any, airflow: Standalone) -> None:
    page.goto(airflow.url + "/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(airflow.url + "/")


def _wait_for_dag(api: Api, timeout: float = 120) -> dict[str, Any]:
    """The dag-processor has parsed dags/ and stored the DAG."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dict(api.call(f"/api/v2/dags/{DAG_ID}"))
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(2)


def _open_trigger_form(page: Any, airflow: Standalone) -> Any:
    page.goto(f"{airflow.url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    dialog.get_by_role("spinbutton").wait_for()
    return dialog


def _wait_for_run(api: Api, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        (run,) = [r for r in api.runs() if r["dag_run_id"] == run_id]
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    states = {(t["task_id"], t["map_index"]): t["state"] for t in api.task_instances(run_id)}
    raise AssertionError(f"run {run_id} not finished after {RUN_SECONDS}s: {states}")


def test_trigger_form_refuses_bad_k_then_one_run_goes_from_form_to_report(
    airflow: Standalone, watched_page: PageWatch, artifacts: Path
) -> None:
    page = watched_page.page
    # Tall enough for the whole form in one screenshot.
    page.set_viewport_size({"width": 1400, "height": 1800})
    api = Api(airflow.url)
    assert _wait_for_dag(api)["is_paused"] is True
    _log_in(page, airflow)
    page.screenshot(path=artifacts / "airflow-1-home.png")

    dialog = _open_trigger_form(page, airflow)
    # The form says where categories come from, and k's range.
    assert "category column" in dialog.inner_text() and "1 to 1000" in dialog.inner_text()
    dialog.screenshot(path=artifacts / "airflow-2-trigger-form.png")
    if os.environ.get("PSS_UPDATE_DOCS") == "1":
        shutil.copyfile(artifacts / "airflow-2-trigger-form.png", DOCS_SCREENSHOT)

    # k = -1, with unpausing unticked so the refused attempt changes nothing.
    unpause = dialog.get_by_text(f"Unpause {DAG_ID} on trigger")
    unpause.click()
    k = dialog.get_by_role("spinbutton")
    k.fill("-1")
    dialog.get_by_text("Run Parameters").click()
    # Not clamped to 1 on leaving the field (the old minimum=1 did that silently): sent as typed, and refused.
    assert k.input_value() == "-1"
    dialog.get_by_test_id("trigger-dag-submit").click()
    refusal = dialog.get_by_text("Invalid input for param k")
    refusal.wait_for()
    assert "-1" in dialog.inner_text()
    page.screenshot(path=artifacts / "airflow-3-k-refused.png")
    assert api.runs() == []
    assert api.call(f"/api/v2/dags/{DAG_ID}")["is_paused"] is True
    page.keyboard.press("Escape")

    # A valid run, "Unpause and trigger" as the form suggests: one category, k = 5.
    dialog = _open_trigger_form(page, airflow)
    assert dialog.get_by_text(f"Unpause {DAG_ID} on trigger").is_visible()
    dialog.locator("#element_categories").fill("software")
    dialog.get_by_role("spinbutton").fill("5")
    dialog.get_by_test_id("trigger-dag-submit").click()
    dialog.wait_for(state="hidden")
    runs = api.runs()
    assert len(runs) == 1 and runs[0]["run_type"] == "manual", runs
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["conf"] == {"categories": ["software"], "snapshot_date": None, "full_refresh": False, "k": 5}
    assert api.call(f"/api/v2/dags/{DAG_ID}")["is_paused"] is False

    page.goto(f"{airflow.url}/dags/{DAG_ID}/runs")
    page.get_by_text(run_id).wait_for()
    page.screenshot(path=artifacts / "airflow-4-runs.png")

    run = _wait_for_run(api, run_id)
    instances = api.task_instances(run_id)
    assert run["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in instances]
    # Unpausing added no scheduled run for the same date beside the manual one.
    assert [r["dag_run_id"] for r in api.runs()] == [run_id]
    named = {t["task_id"]: t["rendered_map_index"] for t in instances if t["map_index"] >= 0}
    assert named == {"embed": "partition 0", "build_index": "partition 0", "search": "partition 0"}

    quoted = urllib.parse.quote(run_id, safe="")
    page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{quoted}")
    page.get_by_text("partition 0").first.wait_for()
    page.screenshot(path=artifacts / "airflow-5-run-tasks.png")
    # The graph: prepare_run feeds plan only, then the pipeline in order.
    page.keyboard.press("g")
    page.locator(".react-flow__node", has_text="report").wait_for()
    page.get_by_role("button", name="Collapse Details Panel").click()
    page.get_by_role("button", name="Fit View").click()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=artifacts / "airflow-6-run-graph.png")

    # The report task's links, as the task page shows them, and where they lead.
    links = api.call(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/report/links")["extra_links"]
    assert links == {"Run report": f"/pss/runs/{DAG_ID}/{quoted}/report", "Warehouse table": f"/pss/runs/{DAG_ID}/{quoted}/results"}
    page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{quoted}/tasks/report/details")
    # Same-origin, so the UI shows it (it drops file:// links) and opens it in place.
    shown = page.locator("a", has_text="Run report")
    shown.wait_for()
    assert shown.get_attribute("href") == links["Run report"]
    page.screenshot(path=artifacts / "airflow-7-report-task-links.png")
    # Behind Airflow's login: the page's session cookie opens them, nothing else does.
    for link in links.values():
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(airflow.url + link, timeout=30)
        assert refused.value.code in (401, 403)
    page.goto(airflow.url + links["Warehouse table"])
    results = json.loads(page.locator("body").inner_text())
    assert (results["table"], results["categories"], results["snapshot_date"]) == ("similar_items", ["software"], run["logical_date"][:10])
    # 30 matched pairs in software: 60 items, up to k = 5 results each.
    assert 0 < results["rows"] <= 60 * 5 and results["warehouse"].startswith("sqlite:///"), results
    page.goto(airflow.url + links["Run report"])
    assert page.locator("figure.chart svg").count() > 0
    page.screenshot(path=artifacts / "airflow-8-run-report.png", full_page=True)
