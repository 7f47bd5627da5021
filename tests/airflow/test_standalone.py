"""`make airflow-standalone`: every component comes up, and Ctrl-C stops every process it started, a running task's too."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.airflow.standalone import clean_environment, free_port, health, standalone
from tests.conftest import ROOT

DAG_ID = "pss_near_identical"


def _api(port: int, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    """The REST API; no token needed in the simple auth manager's all-admins mode."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait(predicate: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except urllib.error.HTTPError:
            found = None
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"no {what} after {seconds}s")


def test_make_airflow_standalone_starts_every_component_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    home = out / "airflow-home"
    port = free_port()
    env = clean_environment()
    # Not the venv's bin: standalone must find `airflow` without it, as from a fresh terminal.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv")))
    env["AIRFLOW__API__PORT"] = str(port)
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    # -o: never reinstall the venv from here.
    command = ["make", "-o", ".venv/.installed", "airflow-standalone", f"OUT={out}"]
    with standalone(command, env, home, tmp_path / "standalone.log", port) as airflow:
        state = health(port)
        assert state is not None and state["metadatabase"]["status"] == "healthy"
        commands = [" ".join(p.cmdline()) for p in airflow.processes()]
        # The components, as they name themselves once running.
        for component in ("airflow standalone", "airflow scheduler", "airflow dag-processor", "airflow triggerer", "airflow api_server"):
            assert any(component in c for c in commands), (component, commands)

        # The hard case: a task running a `pss step` worker, in a process group of its own, when Ctrl-C comes.
        _wait(lambda: _api(port, f"/dags/{DAG_ID}"), 120, "parsed DAG")
        _api(port, f"/dags/{DAG_ID}", {"is_paused": False}, method="PATCH")
        _api(port, f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})
        workers = _wait(
            lambda: [p for p in airflow.processes() if "pss_ops.cli step" in " ".join(p.cmdline())], 180, "running `pss step` worker"
        )
        assert os.getpgid(workers[0].pid) != os.getpgid(airflow.process.pid)

        airflow.ctrl_c()
        # Checked before the context's own cleanup kills anything: Ctrl-C alone must have stopped them all.
        survivors = [(p.pid, p.cmdline()) for p in airflow.processes()]
    assert survivors == [], survivors
    text = (tmp_path / "standalone.log").read_text()
    assert "FileNotFoundError" not in text
    assert "stopped (" in text
