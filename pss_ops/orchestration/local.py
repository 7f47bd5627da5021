"""Runs `pss step` commands on this machine, in parallel up to a limit: Batch's stand-in on a laptop."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

STDERR_TAIL = 4000


class StepFailedError(RuntimeError):
    """A `pss step` command exited non-zero; the message carries its command and stderr tail."""


def pss_command(arguments: Sequence[str]) -> list[str]:
    """The `pss step ...` command line, run with this interpreter so the same install is used."""
    return [sys.executable, "-m", "pss_ops.cli", "step", *arguments]


def run_commands(commands: Sequence[Sequence[str]], *, max_parallel: int, env: Mapping[str, str] | None = None) -> None:
    """Run every command; wait for all, then raise if any failed (naming each failure)."""
    environment = {**os.environ, **(env or {})}

    def run(command: Sequence[str]) -> tuple[Sequence[str], subprocess.CompletedProcess[str]]:
        log.info("running: %s", " ".join(command))
        return command, subprocess.run(list(command), env=environment, capture_output=True, text=True, check=False)

    failures = []
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        for command, done in pool.map(run, commands):
            for line in done.stderr.splitlines()[-20:]:
                log.info("  %s", line)
            if done.returncode != 0:
                failures.append((error_line(done.stderr), f"exit {done.returncode}: {' '.join(command)}\n{done.stderr[-STDERR_TAIL:]}"))
    if failures:
        # The first line is the worker's own `pss: error:` line, so the task log's failure reads as the CLI's would.
        first = next((line for line, _ in failures if line), None)
        details = "\n".join(detail for _, detail in failures)
        raise StepFailedError((f"{first}\n" if first else "") + f"{len(failures)} of {len(commands)} step commands failed:\n{details}")


def error_line(stderr: str) -> str | None:
    """The last `pss: error:` line a pss command printed, if any."""
    return next((line for line in reversed(stderr.splitlines()) if line.startswith("pss: error:")), None)
