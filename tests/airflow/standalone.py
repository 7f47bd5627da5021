"""A real Airflow (standalone, through scripts/airflow_standalone.py) for tests: started, waited for, and always cleaned up.

Its processes are found by session (the test's child and standalone each lead one; a task's own process group stays in
its session) and by the test's AIRFLOW_HOME in their environment. Neither alone is enough: most Airflow processes
retitle themselves (setproctitle), which overwrites what /proc shows of their environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import ROOT

STARTUP_SECONDS = 240
COMPONENTS = ("scheduler", "triggerer", "dag_processor")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """This process's environment without its Airflow and PSS settings (the test session sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PSS_"))}


def sessions_under(pid: int) -> set[int]:
    """The sessions of a process and of all its descendants now."""
    sessions = {os.getsid(pid)}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            sessions.add(os.getsid(child.pid))
        except OSError:
            continue
    return sessions


def processes_of(airflow_home: Path, sessions: Collection[int] = ()) -> list[psutil.Process]:
    """Live processes in one of these sessions, or whose environment names this AIRFLOW_HOME."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(process.pid) in sessions or process.environ().get("AIRFLOW_HOME") == str(airflow_home):
                found.append(process)
        except (OSError, psutil.Error):
            continue
    return found


def kill_all(airflow_home: Path, sessions: Collection[int] = ()) -> None:
    """The test's own cleanup, whatever happened: nothing it started may outlive it."""
    left = processes_of(airflow_home, sessions)
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)


def health(port: int) -> dict[str, Any] | None:
    """The api-server's component health, or None while it doesn't answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as response:
            return dict(json.loads(response.read()))
    except OSError:
        return None


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """Wait until the api-server answers and reports every component healthy."""
    deadline = time.monotonic() + STARTUP_SECONDS
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        assert process.poll() is None, f"standalone exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        state = health(port)
        if state and all((state.get(c) or {}).get("status") == "healthy" for c in COMPONENTS):
            return state
        time.sleep(2)
    raise AssertionError(f"not healthy after {STARTUP_SECONDS}s: {state}\n{log.read_text()[-3000:]}")


@dataclass
class Standalone:
    """A running standalone: its port, home, log, the process the test presses Ctrl-C on, and the sessions seen."""

    port: int
    home: Path
    log: Path
    process: subprocess.Popen[bytes]
    sessions: set[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        """Every live process it started (as far as sessions and environments tell)."""
        if self.process.poll() is None:
            self.sessions |= sessions_under(self.process.pid)
        return processes_of(self.home, self.sessions)

    def ctrl_c(self, timeout: float = 90) -> None:
        """SIGINT to its process group, as a terminal's Ctrl-C; waits for it to exit."""
        self.processes()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=timeout)


@contextmanager
def standalone(command: Sequence[str], env: Mapping[str, str], home: Path, log: Path, port: int) -> Iterator[Standalone]:
    """Start command (make airflow-standalone, or the helper itself), wait until healthy; kill whatever is left after."""
    sessions: set[int] = set()
    try:
        with log.open("wb") as output:
            # A session of its own, so the test can press Ctrl-C on its process group as a terminal does.
            process = subprocess.Popen(
                list(command), cwd=ROOT, env=dict(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
            sessions.add(process.pid)
            try:
                wait_healthy(port, process, log)
                running = Standalone(port, home, log, process, sessions)
                running.processes()
                yield running
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
    finally:
        kill_all(home, sessions)
