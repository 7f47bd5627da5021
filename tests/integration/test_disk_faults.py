"""`pss run` on a disk that is full, fills up mid-run, or is read-only: one clear error line, nothing half-written.

Each run is the real CLI in a child process (tests/integration/faulty_disk.py), whose out folder (or cache folder)
is a small tmpfs: mounted here when this process may mount, else in a mount namespace of our own (unshare -rm, read
back through /proc/PID/root), else the faults are injected into the child's OS write path and SQLite.  Set
PSS_DISK_FAULTS=mount, unshare or inject to force one way; each must pass.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pss_ops.cli import WAREHOUSE_ENV
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache
from tests.conftest import ROOT, SNAPSHOT, Subset
from tests.integration.faulty_disk import BALLAST

MODE_ENV = "PSS_DISK_FAULTS"
MODES = ("mount", "unshare", "inject")
DISK_BYTES = 64 * 1024 * 1024  # a run of the subset writes about 10 MB; room for a failed run and a good one
MEGABYTE = 1024 * 1024

# Fast: character n-grams, no text model.  1024 dims make the cache's first partition (300 items, 1.2 MB) more
# than the megabyte left free when the disk fills during embed.
CONFIG = {
    "application": "disk_faults",
    "features": [{"type": "char_ngram", "dims": 1024}],
    "k": 5,
    "post_filter": {"different": ["seller"]},
    "catalog": {"partition_size": 300},
    "quality": {"recall_sample": 50},
}


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="session")
def fault_mode(tmp_path_factory: pytest.TempPathFactory) -> str:
    """How this machine gives the tests a small disk: mount, unshare or inject (the first that works)."""
    forced = os.environ.get(MODE_ENV)
    if forced:
        assert forced in MODES, f"{MODE_ENV} is one of {MODES}"
        return forced
    probe = tmp_path_factory.mktemp("mount-probe")
    if _succeeds(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)]):
        subprocess.run(["umount", str(probe)], check=True)
        return "mount"
    if _succeeds(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)]):
        return "unshare"
    return "inject"


class Disks:
    """Small disks for one test and the `pss` runs that use them, in one of the three modes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.mounted: list[Path] = []
        self.read_only_folders: set[Path] = set()
        self._holder: subprocess.Popen[bytes] | None = None
        if mode == "unshare":
            # A process that only holds the namespace; mounts, runs and reads all go through it.
            self._holder = subprocess.Popen(["unshare", "-rm", "sleep", "infinity"])
            # Ready once unshare has written the user mapping and become `sleep`: nsenter sooner fails in setgid.
            deadline = time.monotonic() + 30
            while not os.readlink(f"/proc/{self._holder.pid}/exe").endswith("/sleep"):
                assert time.monotonic() < deadline, "unshare did not start"
                time.sleep(0.05)

    def _inside(self, command: list[str]) -> list[str]:
        if self._holder is None:
            return command
        return ["nsenter", "-t", str(self._holder.pid), "-U", "-m", f"--wd={ROOT}", *command]

    def disk(self, folder: Path, size: int = DISK_BYTES) -> Path:
        """folder, made a filesystem of `size` bytes (injected: a plain folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.mode != "inject":
            subprocess.run(self._inside(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]), check=True)
            self.mounted.append(folder)
        return folder

    def read_only(self, folder: Path, read_only: bool = True) -> None:
        """Remount a disk read-only, or back read-write."""
        if self.mode == "inject":
            (self.read_only_folders.add if read_only else self.read_only_folders.discard)(folder)
            return
        option = "remount,ro" if read_only else "remount,rw"
        subprocess.run(self._inside(["mount", "-o", option, str(folder)]), check=True)

    def view(self, folder: Path) -> Path:
        """Where this process reads what the runs wrote in folder."""
        if self._holder is None:
            return folder
        return Path(f"/proc/{self._holder.pid}/root") / folder.relative_to("/")

    def free(self, folder: Path) -> None:
        """Take the ballast off a disk that a run filled."""
        (self.view(folder) / BALLAST).unlink(missing_ok=True)

    def pss(self, *arguments: str, full: tuple[Path, str, int] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `pss ARGUMENTS`; full=(folder, step, bytes left) fills folder's disk when the run reaches step."""
        faults: list[str] = []
        if full is not None:
            folder, step, leave = full
            faults += ["--full", str(folder), step, str(leave)]
        if self.mode == "inject":
            faults += ["--inject", *[arg for folder in sorted(self.read_only_folders) for arg in ("--read-only", str(folder))]]
        command = [sys.executable, "-m", "tests.integration.faulty_disk", *faults, "--", *arguments]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop(WAREHOUSE_ENV, None)
        env.pop("PSS_DEBUG", None)
        return subprocess.run(self._inside(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    def close(self) -> None:
        if self._holder is not None:
            self._holder.kill()  # its namespace, and every mount in it, goes with it
            self._holder.wait()
        for folder in reversed(self.mounted if self._holder is None else []):
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def disks(fault_mode: str) -> Iterator[Disks]:
    made = Disks(fault_mode)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("disk_faults_config") / "app.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return path


def run_arguments(config: Path, catalog: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(config), "--catalog", str(catalog), "--out", str(out), "--snapshot-date", SNAPSHOT.isoformat(), *extra]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `pss: error:` line, which ends stderr; a traceback, or a second error line, fails the test."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("pss: error:")]
    assert result.returncode != 0, result.stderr
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "cannot rollback" not in result.stderr
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Temporaries and scratch folders under folder: what an interrupted write leaves."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".scratch-"))


def assert_nothing_partial(out: Path) -> None:
    """Every visible Parquet and JSON file under out reads whole; the run's final outputs are not there at all."""
    assert not (out / "similar_items.parquet").exists() and not (out / "run_summary.json").exists()
    for path in out.rglob("*"):
        if path.name.startswith("."):
            continue
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    assert leftovers(out) == []


def assert_recovers(disks: Disks, arguments: list[str], *folders: Path) -> None:
    """The same run, on the disk freed, succeeds and leaves no temporary in any of folders."""
    result = disks.pss(*arguments)
    assert result.returncode == 0, result.stderr
    out = disks.view(Path(arguments[arguments.index("--out") + 1]))
    assert pq.read_table(out / "similar_items.parquet").num_rows > 0
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    assert summary["counts"]["rows_published"] > 0
    for folder in folders:
        assert leftovers(disks.view(folder)) == []


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"run_summary.json holds {name}, which is not JSON")


# --- the out folder fills up --------------------------------------------------------------------------------------


def full_disk(out: Path, written: str) -> str:
    """The error line of a full disk, for a file under out whose path matches the pattern `written`."""
    # The warehouse, SQLite in out, may be the first to be refused: SQLite's words and its URL then.
    # Or the check that the out folder is writable, before anything is read, when its probe is refused already.
    warehouse = rf"warehouse sqlite:///{out}/warehouse\.sqlite: .*database or disk is full"
    probe = rf"output folder {out} is not writable: No space left on device"
    return rf"pss: error: (No space left on device: {out}/{written}|{warehouse}|{probe})"


@pytest.mark.parametrize(
    ("step", "leave", "written"),
    [
        ("start", 0, r"runs/[^/]+/run\.json"),  # the first file a run writes
        # During embed the embedding cache (in out/cache) fills first: SQLite's words and the cache's path, not
        # "cannot rollback - no transaction is active" from a ROLLBACK after SQLite had rolled back by itself.
        ("embed", MEGABYTE, None),
        ("query", 0, r"runs/[^/]+/query/part-\d+\.parquet"),
        ("publish", 0, r"runs/[^/]+/publish/similar_items\.parquet"),
    ],
)
def test_out_folder_full(
    disks: Disks, ag_subset: Subset, config_path: Path, tmp_path: Path, step: str, leave: int, written: str | None
) -> None:
    out = disks.disk(tmp_path / "out")
    arguments = run_arguments(config_path, ag_subset.catalog, out)
    error = error_line(disks.pss(*arguments, full=(out, step, leave)))
    if written is None:
        assert error.endswith(f"database or disk is full: {out}/cache/embeddings.sqlite"), error
    else:
        assert re.fullmatch(full_disk(out, written), error), error
    assert_nothing_partial(disks.view(out))
    disks.free(out)
    assert_recovers(disks, arguments, out)


def test_debug_adds_the_traceback(disks: Disks, ag_subset: Subset, config_path: Path, tmp_path: Path) -> None:
    out = disks.disk(tmp_path / "out")
    result = disks.pss(*run_arguments(config_path, ag_subset.catalog, out, "--debug"), full=(out, "query", 0))
    lines = result.stderr.splitlines()
    assert result.returncode != 0 and "Traceback (most recent call last):" in result.stderr
    assert lines[-1].startswith("pss: error: No space left on device: ") and sum(line.startswith("pss: error:") for line in lines) == 1


# --- read-only folders --------------------------------------------------------------------------------------------


def test_out_folder_read_only(disks: Disks, ag_subset: Subset, config_path: Path, tmp_path: Path) -> None:
    out = disks.disk(tmp_path / "out")
    disks.read_only(out)
    arguments = run_arguments(config_path, ag_subset.catalog, out)
    error = error_line(disks.pss(*arguments))
    assert "Read-only file system" in error and str(out) in error, error
    assert list(disks.view(out).iterdir()) == []
    disks.read_only(out, False)
    assert_recovers(disks, arguments, out)


def test_cache_folder_read_only(disks: Disks, ag_subset: Subset, config_path: Path, tmp_path: Path) -> None:
    cache = disks.disk(tmp_path / "cache")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["cache"] = {"uri": str(cache / "embeddings.sqlite")}
    cached_config = tmp_path / "app.yaml"
    cached_config.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "out"
    arguments = run_arguments(cached_config, ag_subset.catalog, out)
    assert disks.pss(*arguments).returncode == 0  # a filled cache, which then becomes read-only
    disks.read_only(cache)
    error = error_line(disks.pss(*arguments))
    assert error == f"pss: error: Read-only file system: {cache / 'embeddings.sqlite'}"
    disks.read_only(cache, False)
    assert_recovers(disks, arguments, out, cache)


# --- the cache alone, on any machine ------------------------------------------------------------------------------


def test_sqlite_cache_full_says_so_and_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "embeddings.sqlite"
    cache = SQLiteEmbeddingCache(str(path))
    try:
        cache.put_many("m", [("a", "h", np.ones(4, np.float32))])
        # The page limit makes SQLite fail as a full disk does: SQLITE_FULL, the transaction already rolled back.
        cache._conn.execute("PRAGMA max_page_count = 1")
        with pytest.raises(sqlite3.OperationalError) as raised:
            cache.put_many("m", [(f"i{n}", "h", np.ones(1024, np.float32)) for n in range(500)])
        assert str(raised.value) == f"database or disk is full: {path}"
        assert raised.value.sqlite_errorname == "SQLITE_FULL"
        assert cache.count("m") == 1
        cache._conn.execute("PRAGMA max_page_count = 1073741823")
        cache.put_many("m", [(f"i{n}", "h", np.ones(1024, np.float32)) for n in range(500)])
        assert cache.count("m") == 501
    finally:
        cache.close()
