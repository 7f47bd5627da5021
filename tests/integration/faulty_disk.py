"""`pss` on a disk that fills up or refuses writes: the child process of tests/integration/test_disk_faults.py.

    python -m tests.integration.faulty_disk [--full FOLDER STEP LEAVE]... [--inject [--read-only FOLDER]...] -- PSS ARGS

--full: when `pss run` reaches STEP (start, embed, query or publish), FOLDER's filesystem (a small tmpfs) is filled
with a ballast file until LEAVE bytes are free.  With --inject there is no filesystem of its own to fill (the host
can't mount one), so from STEP on every write under FOLDER fails as a full disk fails it instead: ENOSPC from the
OS, SQLITE_FULL from SQLite (its page limit set to the pages it has).  --read-only, with --inject only, makes every
write under FOLDER fail with EROFS, SQLite unable to open a file there and statvfs report the folder read-only, as
a read-only mount does; a real read-only mount needs no help.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import errno
import functools
import io
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Where a full disk strikes: the function of pss_ops.orchestration.run that starts the step.
STEP_FUNCTIONS = {"embed": "embed_partition", "query": "query_partition", "publish": "publish"}
BALLAST = ".ballast"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def fill(folder: Path, leave: int) -> None:
    """Fill folder's filesystem with a ballast file until `leave` bytes are free."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free <= leave:
        return
    fd = os.open(folder / BALLAST, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, os.fstat(fd).st_size, free - leave)
    finally:
        os.close(fd)


class InjectedFaults:
    """Writes under some folders fail as a full or read-only disk fails them, from the moment each fault starts."""

    def __init__(self) -> None:
        self.faults: dict[Path, int] = {}  # folder -> errno of a write under it
        self.connections: list[tuple[Path, sqlite3.Connection]] = []
        self._open, self._os_open, self._statvfs, self._connect = builtins.open, os.open, os.statvfs, sqlite3.connect

    def start(self, folder: Path, code: int) -> None:
        self.faults[folder.resolve()] = code
        if code == errno.ENOSPC:
            for path, connection in self.connections:
                if self._fault(path) == errno.ENOSPC:
                    _no_more_pages(connection)

    def _fault(self, path: Any) -> int | None:
        if not isinstance(path, str | os.PathLike):
            return None  # a file descriptor
        target = Path(os.fsdecode(path)).resolve()
        return next((code for folder, code in self.faults.items() if target.is_relative_to(folder)), None)

    def _refuse(self, code: int | None, path: Any, *, codes: tuple[int, ...] = (errno.ENOSPC, errno.EROFS)) -> None:
        if code in codes:
            raise OSError(code, os.strerror(code), os.fsdecode(path))

    def install(self) -> None:
        """Patch the OS write path (open, os.open, mkdir, rename, unlink), os.statvfs and sqlite3.connect."""

        def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if any(flag in mode for flag in "wxa+"):
                self._refuse(self._fault(file), file)
            return self._open(file, mode, *args, **kwargs)

        def faulty_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & _WRITE_FLAGS:
                self._refuse(self._fault(path), path)
            return self._os_open(path, flags, *args, **kwargs)

        def read_only(call: Callable[..., Any]) -> Callable[..., Any]:
            # A full disk still makes folders, renames and unlinks; a read-only one does none of them.
            @functools.wraps(call)
            def refused(path: Any, *args: Any, **kwargs: Any) -> Any:
                self._refuse(self._fault(path), path, codes=(errno.EROFS,))
                if args and isinstance(args[0], str | os.PathLike):  # rename's and replace's target
                    self._refuse(self._fault(args[0]), args[0], codes=(errno.EROFS,))
                return call(path, *args, **kwargs)

            return refused

        def faulty_connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            path = Path(os.fsdecode(database))
            code = self._fault(path)
            if code == errno.EROFS:
                # What SQLite says on a read-only mount, where it can't make the WAL's -shm file even to read.
                refused = sqlite3.OperationalError("unable to open database file")
                vars(refused).update(sqlite_errorcode=sqlite3.SQLITE_CANTOPEN, sqlite_errorname="SQLITE_CANTOPEN")
                raise refused
            connection = self._connect(database, *args, **kwargs)
            self.connections.append((path, connection))
            if code == errno.ENOSPC:
                _no_more_pages(connection)
            return connection

        def faulty_statvfs(path: Any) -> os.statvfs_result:
            stats = self._statvfs(path)
            if self._fault(path) != errno.EROFS:
                return stats
            return os.statvfs_result((*stats[:8], stats.f_flag | os.ST_RDONLY, *stats[9:]))  # as a read-only mount says

        builtins.open = io.open = faulty_open
        os.statvfs = faulty_statvfs  # io.open for pathlib's read_text and write_text
        os.open = faulty_os_open
        for name in ("mkdir", "rename", "replace", "unlink", "remove", "rmdir"):
            setattr(os, name, read_only(getattr(os, name)))
        sqlite3.connect = faulty_connect  # type: ignore[assignment]


def _no_more_pages(connection: sqlite3.Connection) -> None:
    # A limit below the current size sets it to the current size: the next page SQLite needs is SQLITE_FULL.
    with contextlib.suppress(sqlite3.ProgrammingError):  # closed already (the cache is closed after embed)
        connection.execute("PRAGMA max_page_count = 1")


def at_step(step: str, action: Callable[[], None]) -> None:
    """Run action when `pss run` first enters step ("start": now)."""
    if step == "start":
        action()
        return
    from pss_ops.orchestration import run

    name = STEP_FUNCTIONS[step]
    real = getattr(run, name)
    started: list[bool] = []

    @functools.wraps(real)
    def entered(*args: Any, **kwargs: Any) -> Any:
        if not started:
            started.append(True)
            action()
        return real(*args, **kwargs)

    setattr(run, name, entered)


def main(argv: list[str]) -> int:
    """Set up the faults, then run `pss` with the arguments after `--`."""
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="faulty_disk")
    parser.add_argument("--full", nargs=3, action="append", default=[], metavar=("FOLDER", "STEP", "LEAVE"))
    parser.add_argument("--inject", action="store_true")
    parser.add_argument("--read-only", action="append", default=[], metavar="FOLDER")
    args = parser.parse_args(argv[:split])
    injected = InjectedFaults() if args.inject else None
    if injected is not None:
        injected.install()
        for folder in args.read_only:
            injected.start(Path(folder), errno.EROFS)
    for folder, step, leave in args.full:
        if injected is not None:
            at_step(step, functools.partial(injected.start, Path(folder), errno.ENOSPC))
        else:
            at_step(step, functools.partial(fill, Path(folder), int(leave)))

    from pss_ops.cli import main as pss

    return pss(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
