"""`airflow standalone` on a laptop (`make airflow-standalone`): this venv's airflow, and Ctrl-C stops all of it.

`airflow standalone` starts its api-server, scheduler, dag-processor and triggerer as `airflow ...` from PATH, so
without this venv's bin/ on PATH each dies at start and standalone waits forever. Stopping it is not enough to stop
everything it started either: each task runs in a process group of its own (so Airflow can signal the task's
subprocesses), which Ctrl-C in the terminal does not reach. So standalone runs in a session of its own, and stopping
it ends every process still in that session: standalone first (it stops its components), then whatever is left.

Usage: python scripts/airflow_standalone.py   (settings from the environment, as for `airflow`; AIRFLOW__API__PORT
for another port than 8080)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

# How long standalone gets to stop its components, then how long the leftovers get after SIGTERM.
STANDALONE_GRACE = 30.0
LEFTOVER_GRACE = 10.0


def session_processes(sid: int) -> list[psutil.Process]:
    """Every live process in session sid (a task's own process group stays in its session)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def stop(standalone: subprocess.Popen[bytes]) -> int:
    """Stop standalone and everything else in its session; returns how many processes had to be signalled after it."""
    sid = standalone.pid
    # A second Ctrl-C while stopping means "now": skip the graces.
    hurry = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: hurry.update(now=True))
    if standalone.poll() is None:
        # Its own Ctrl-C handling: it terminates its components and waits for them.
        standalone.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STANDALONE_GRACE
        while standalone.poll() is None and time.monotonic() < deadline and not hurry["now"]:
            time.sleep(0.2)
    leftovers = session_processes(sid)
    for process in leftovers:
        _signal(process, signal.SIGTERM)
    _, alive = psutil.wait_procs(leftovers, timeout=0 if hurry["now"] else LEFTOVER_GRACE)
    for process in alive:
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    standalone.poll()
    return len(leftovers)


def _signal(process: psutil.Process, sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except psutil.Error:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run `airflow standalone` until it exits or Ctrl-C (SIGINT) or SIGTERM arrives, then stop everything it started."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    port = env.get("AIRFLOW__API__PORT")
    if port and not env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        # Tasks reach the api-server's execution API at port 8080 unless told otherwise: on another port, every task
        # would fail to start (connection refused) and be retried.
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{port}/execution/"
    # SIGTERM (kill, a CI timeout) stops it as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    standalone = subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=env, start_new_session=True)
    code = 0
    try:
        code = standalone.wait()
        print(f"airflow standalone exited with status {code}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\nstopping airflow standalone and every process it started ...", file=sys.stderr, flush=True)
        code = 130
    finally:
        leftovers = stop(standalone)
        print(f"stopped ({leftovers} process(es) outlived standalone and were ended)", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
