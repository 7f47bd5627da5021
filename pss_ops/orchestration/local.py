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
                failures.append(f"exit {done.returncode}: {' '.join(command)}\n{done.stderr[-STDERR_TAIL:]}")
    if failures:
        raise StepFailedError(f"{len(failures)} of {len(commands)} step commands failed:\n" + "\n".join(failures))
