"""Runs `pss step` commands on this machine, in parallel up to a limit: Batch's stand-in on a laptop."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

STDERR_TAIL = 4000
TAIL_LINES = 200
# `pss` exits 2 when its input is wrong (config, catalog, arguments): running it again cannot help.
INPUT_ERROR_EXIT = 2


class StepFailedError(RuntimeError):
    """A `pss step` command exited non-zero; the message carries its command and stderr tail."""

    def __init__(self, message: str, exit_codes: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.exit_codes = tuple(exit_codes)

    @property
    def input_error(self) -> bool:
        """Every failed command reported wrong input (exit 2): a retry would fail the same way."""
        return bool(self.exit_codes) and all(code == INPUT_ERROR_EXIT for code in self.exit_codes)


@dataclass(frozen=True)
class _Finished:
    command: Sequence[str]
    returncode: int
    tail: str
    error_line: str | None


def pss_command(arguments: Sequence[str]) -> list[str]:
    """The `pss step ...` command line, run with this interpreter so the same install is used."""
    return [sys.executable, "-m", "pss_ops.cli", "step", *arguments]


def command_label(command: Sequence[str]) -> str:
    """How a command's log lines are prefixed: its partition ('partition 3: '), or nothing for a single step."""
    for flag in ("--partition", "--partition-offset"):
        if flag in command[:-1]:
            return f"partition {command[list(command).index(flag) + 1]}: "
    return ""


def _run_one(command: Sequence[str], environment: Mapping[str, str]) -> _Finished:
    """Run one command, logging each stderr line as it comes (a worker's progress shows while it works)."""
    label = command_label(command)
    log.info("%srunning: %s", label, " ".join(command))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    error = None
    # stdout carries the step's JSON manifest, which is also written to the run folder: not worth the log.
    with subprocess.Popen(
        list(command), env=dict(environment), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace"
    ) as process:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.rstrip("\n")
            log.info("%s%s", label, line)
            tail.append(line)
            if line.startswith("pss: error:"):
                error = line
        returncode = process.wait()
    return _Finished(command, returncode, "\n".join(tail)[-STDERR_TAIL:], error)


def run_commands(commands: Sequence[Sequence[str]], *, max_parallel: int, env: Mapping[str, str] | None = None) -> None:
    """Run every command, streaming their stderr to the log; wait for all, then raise if any failed (naming each failure)."""
    environment = {**os.environ, **(env or {})}
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        finished = list(pool.map(lambda command: _run_one(command, environment), commands))
    failures = [done for done in finished if done.returncode != 0]
    if failures:
        # The first line is the worker's own `pss: error:` line, so the task log's failure reads as the CLI's would.
        first = next((done.error_line for done in failures if done.error_line), None)
        details = "\n".join(f"exit {done.returncode}: {' '.join(done.command)}\n{done.tail}" for done in failures)
        raise StepFailedError(
            (f"{first}\n" if first else "") + f"{len(failures)} of {len(commands)} step commands failed:\n{details}",
            [done.returncode for done in failures],
        )
