"""`make airflow-standalone`: every component comes up, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
from pathlib import Path

from tests.airflow.standalone import clean_environment, free_port, health, processes_of, standalone
from tests.conftest import ROOT


def test_make_airflow_standalone_starts_every_component_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    home = out / "airflow-home"
    port = free_port()
    env = clean_environment()
    # Not the venv's bin: standalone must find `airflow` without it, as from a fresh terminal.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv")))
    env["AIRFLOW__API__PORT"] = str(port)
    # -o: never reinstall the venv from here.
    command = ["make", "-o", ".venv/.installed", "airflow-standalone", f"OUT={out}"]
    with standalone(command, env, home, tmp_path / "standalone.log", port) as airflow:
        state = health(port)
        assert state is not None and state["metadatabase"]["status"] == "healthy"
        started = processes_of(home)
        commands = [" ".join(p.cmdline()) for p in started]
        for component in ("standalone", "scheduler", "dag-processor", "triggerer", "api-server"):
            assert any(f"airflow {component}" in c for c in commands), (component, commands)
        airflow.ctrl_c()
        # Checked before the context's own cleanup kills anything: Ctrl-C alone must have stopped them all.
        survivors = [(p.pid, p.cmdline()) for p in processes_of(home)]
    assert survivors == [], survivors
    text = (tmp_path / "standalone.log").read_text()
    assert "FileNotFoundError" not in text
    assert "stopped (" in text
