"""kill -9 mid-step, in every step and in `pss run`: nothing partial is visible, and a re-run ends as an uninterrupted run.

After the kill: every visible file reads whole (a data file holds what the uninterrupted run's does), the killed work
has no manifest and a later step refuses to start, and the warehouse shows one whole publish. After a re-run in a new
process and the rest of the run: similar_items, duplicate_groups, the warehouse rows, the rejects and the summary's
counts equal the uninterrupted run's (run ids aside), and no temporary of the killed attempt is left.

A kill lands at a chosen write, not after a chosen time. The step's process runs `pss` with a hook that only watches (a
Python audit hook on os.rename, an SQLite trace callback, a wrapper around the ADBC cursor the SQLite publish writes
through) and stops the process (SIGSTOP) just before the chosen file
becomes visible (its temporary is written whole by then), or at the chosen SQL statement inside the warehouse
transaction; the test then sends SIGKILL. No code of the step is changed, and the kill lands at the same point every try.

The uninterrupted reference runs each step as `python -m pss_ops.cli step ...`, as the local executor does. The killed
and re-run processes are forked from a server that has imported pss once: each is still a process of its own, killed
outright, but starts without the seconds of imports (sklearn, faiss) that would otherwise be most of this file's time.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_manager.dbapi as adbc_dbapi
import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pss_ops import layout
from pss_ops.cli import ARRAY_INDEX_ENV, WAREHOUSE_ENV, main
from pss_ops.config import AppConfig, parse_config
from pss_ops.manifests import CatalogPlan, IndexPlan
from pss_ops.orchestration.local import pss_command, run_commands
from pss_ops.orchestration.outputs import finish_interrupted_switch
from tests.conftest import SNAPSHOT, Subset, write_config

# In pipeline order; a mapped step runs one process per partition.
STEPS = ("plan", "embed", "plan-index", "build-index", "search", "publish", "report")
MAPPED = ("embed", "build-index", "search")
# Rows are compared without run_id, in this order.
TABLE_KEYS = {"similar_items": ["category", "query_item_id", "rank"], "duplicate_groups": ["category", "group_id", "item_id"]}


@pytest.fixture(scope="module", autouse=True)
def _no_ambient_env() -> Iterator[None]:
    """Every command here names its warehouse and partition; the environment's must not redirect one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(WAREHOUSE_ENV, raising=False)
        patch.delenv(ARRAY_INDEX_ENV, raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def catalog(ag_subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real subset and three rows plan rejects (empty title, empty item_id, a repeated item_id)."""
    frame = ag_subset.frame
    bad = pd.concat(
        [frame.iloc[[0]].assign(item_id="amazon:kill-rerun-no-title", title=""), frame.iloc[[1]].assign(item_id=""), frame.iloc[[2]]]
    )
    path = tmp_path_factory.mktemp("kill_catalog") / "catalog.csv"
    pd.concat([frame, bad], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def config_path(small_config: AppConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """near_identical without MiniLM (hashed character n-grams and model tokens): two catalog partitions per category."""
    data = small_config.model_dump(mode="json")
    data["features"] = [{"type": "char_ngram", "dims": 512}, {"type": "model_tokens", "dims": 256}]
    data["catalog"]["partition_size"] = 200
    data["index"]["partition_size"] = 400
    return write_config(parse_config(data), tmp_path_factory.mktemp("kill_config") / "fast.yaml")


@dataclass(frozen=True)
class StepRun:
    """A run driven one `pss step` at a time, as the DAG drives it: out folder, run id and inputs."""

    out: Path
    run_id: str
    config: Path
    catalog: Path

    @property
    def run_uri(self) -> str:
        return str(self.out / "runs" / self.run_id)

    @property
    def warehouse(self) -> Path:
        return self.out / "warehouse.sqlite"

    def catalog_partitions(self) -> list[str]:
        return [p.name for p in CatalogPlan.read(layout.plan_manifest(self.run_uri)).partitions]

    def index_partitions(self) -> list[str]:
        return [p.name for p in IndexPlan.read(layout.index_plan_manifest(self.run_uri)).partitions]

    def arguments(self, step: str, partition: int | None = None) -> list[str]:
        """What follows `pss step` for one step, or one partition of a mapped step."""
        arguments = [step, "--run-uri", self.run_uri]
        if step == "plan":
            arguments += ["--config", str(self.config), "--catalog", str(self.catalog), "--snapshot-date", SNAPSHOT.isoformat()]
            arguments += ["--run-id", self.run_id, "--cache-uri", str(self.out / "cache" / "embeddings.sqlite")]
        if step == "publish":
            arguments += ["--warehouse-url", f"sqlite:///{self.warehouse}"]
        if partition is not None:
            arguments += ["--partition", str(partition)]
        return arguments

    def commands(self, step: str) -> list[list[str]]:
        """Every process of a step: one per partition of a mapped step (the last one is the one a test kills)."""
        if step not in MAPPED:
            return [self.arguments(step)]
        partitions = self.index_partitions() if step == "build-index" else self.catalog_partitions()
        return [self.arguments(step, number) for number in range(len(partitions))]

    def in_process(self, step: str, but: list[str] | None = None) -> None:
        """Run a step's commands (but one) through `pss step` in this process."""
        for arguments in self.commands(step):
            if arguments != but:
                assert main(["step", *arguments]) == 0, arguments


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, config_path: Path, catalog: Path) -> StepRun:
    """The uninterrupted run: each step its own process, a mapped step's partitions two at a time (the local executor)."""
    run = StepRun(tmp_path_factory.mktemp("reference"), "reference", config_path, catalog)
    for step in STEPS:
        run_commands([pss_command(arguments) for arguments in run.commands(step)], max_parallel=2)
    return run


# --- the processes ----------------------------------------------------------------------------------

# What the fork server imports once, so a step process starts in milliseconds; this module holds the processes' body.
PRELOAD = [
    "pss_ops.cli",
    "pss_ops.orchestration.run",
    *(f"pss_ops.steps.{name}" for name in ("plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report")),
    __name__,
]


@dataclass(frozen=True)
class KillPoint:
    """Where SIGKILL lands: just before the nth os.rename onto a path containing needle, or at the nth SQL statement with it."""

    event: str  # "os.rename" or "sql"
    needle: str
    nth: int = 1


def _stop_at(point: KillPoint) -> None:
    """From now on, this process stops itself (SIGSTOP) when it reaches the kill point."""
    seen = 0

    def check(subject: str) -> None:
        nonlocal seen
        if point.needle in subject:
            seen += 1
            if seen == point.nth:
                os.kill(os.getpid(), signal.SIGSTOP)

    if point.event == "sql":
        # Every SQLite connection reports each statement it runs (SQLAlchemy connects through sqlite3.dbapi2).
        real = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            connection = real(*args, **kwargs)
            connection.set_trace_callback(check)
            return connection

        sqlite3.connect = sqlite3.dbapi2.connect = connect  # type: ignore[assignment]
        # The SQLite publish writes through ADBC (its own SQLite library): its statements, and each bulk ingest once
        # its rows are in the open transaction, reported as the INSERT the driver runs.
        real_execute, real_ingest = adbc_dbapi.Cursor.execute, adbc_dbapi.Cursor.adbc_ingest

        def execute(self: adbc_dbapi.Cursor, operation: Any, *args: Any, **kwargs: Any) -> Any:
            check(str(operation))
            return real_execute(self, operation, *args, **kwargs)

        def ingest(self: adbc_dbapi.Cursor, table_name: str, *args: Any, **kwargs: Any) -> int:
            inserted = real_ingest(self, table_name, *args, **kwargs)
            check(f"INSERT INTO {table_name}")
            return inserted

        adbc_dbapi.Cursor.execute = execute  # type: ignore[method-assign]
        adbc_dbapi.Cursor.adbc_ingest = ingest  # type: ignore[method-assign]
    else:
        sys.addaudithook(lambda event, args: check(os.fsdecode(args[1])) if event == point.event else None)


def _pss_process(arguments: list[str], logs: str, point: KillPoint | None) -> None:
    """The body of a step process: its output to files, stopping at the kill point if one is given, then `pss ARGUMENTS`."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(os.path.join(logs, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    # The server's environment is the one it started with; every command here names its warehouse and partition.
    for name in (WAREHOUSE_ENV, ARRAY_INDEX_ENV):
        os.environ.pop(name, None)
    if point is not None:
        _stop_at(point)
    sys.exit(main(arguments))


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.ForkServerContext:
    """Starts step processes, each forked from a server that imported pss once."""
    # The preload takes effect if this is the session's first forkserver process; otherwise it only costs the imports.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def _stderr(logs: Path) -> str:
    return (logs / "stderr").read_text(encoding="utf-8", errors="replace")[-4000:]


def kill_at(processes: multiprocessing.context.ForkServerContext, point: KillPoint, arguments: list[str], logs: Path) -> None:
    """Run `pss ARGUMENTS` as a process of its own, SIGKILL it where it stopped at the kill point; fail if it never got there."""
    logs.mkdir(parents=True, exist_ok=True)
    process = processes.Process(target=_pss_process, args=(arguments, str(logs), point))
    process.start()
    assert process.pid is not None
    # The stop is a state the process stays in until killed, so polling for it times nothing.
    while _state(process.pid) != "T":
        if multiprocessing.connection.wait([process.sentinel], timeout=0.01):
            process.join()
            pytest.fail(f"pss {' '.join(arguments)} exited {process.exitcode} before {point}:\n{_stderr(logs)}")
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL


def rerun(processes: multiprocessing.context.ForkServerContext, arguments: list[str], logs: Path) -> None:
    """Run `pss ARGUMENTS` to completion as a process of its own, as a retried task does."""
    logs.mkdir(parents=True, exist_ok=True)
    process = processes.Process(target=_pss_process, args=(arguments, str(logs), None))
    process.start()
    process.join()
    assert process.exitcode == 0, f"pss {' '.join(arguments)} exited {process.exitcode}:\n{_stderr(logs)}"


# --- what is visible -------------------------------------------------------------------------------


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def visible_files(root: Path) -> list[Path]:
    """Files a reader lists: none whose name, or a folder's on the way, starts with a dot."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root))


def temporaries(root: Path) -> list[str]:
    """Leftovers of an interrupted write: .tmp files and .scratch-* folders."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".scratch-"))


def _without_run_id(table: pa.Table) -> pa.Table:
    return table.drop_columns(["run_id"]) if "run_id" in table.column_names else table


def assert_nothing_partial(out: Path, run_uri: str, reference: StepRun) -> None:
    """Every visible file reads whole, and each data file of the run holds what the uninterrupted run's does."""
    for path in visible_files(out):
        inside = path.is_relative_to(run_uri)
        # A run's outputs/ folder (pss run's, for OUT/current) holds links to its other files: those are compared.
        twin = Path(reference.run_uri, path.relative_to(run_uri)) if inside and path.parent.name != "outputs" else None
        if path.suffix == ".parquet":
            table = _without_run_id(pq.read_table(path))
            if twin is not None:
                assert table.equals(_without_run_id(pq.read_table(twin))), f"{path} differs from the uninterrupted run's"
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays, np.load(twin or path, allow_pickle=False) as expected:
                assert arrays.files == expected.files, path
                for name in arrays.files:
                    np.testing.assert_array_equal(arrays[name], expected[name], err_msg=str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".faiss":
            assert faiss.read_index(str(path)).ntotal > 0, path
        elif path.suffix == ".csv":
            pd.read_csv(path)


def warehouse_table(db: Path, table: str, *, with_run_id: bool = False) -> pd.DataFrame | None:
    """A warehouse table in key order (None when the database or table doesn't exist)."""
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
            return None
        frame = pd.read_sql_query(f"SELECT * FROM {table}", conn)
    if not with_run_id:
        frame = frame.drop(columns="run_id")
    return frame.sort_values(TABLE_KEYS[table]).reset_index(drop=True)


def warehouse_run_ids(db: Path) -> set[str]:
    """The run ids of every row of both warehouse tables."""
    ids: set[str] = set()
    for table in TABLE_KEYS:
        rows = warehouse_table(db, table, with_run_id=True)
        ids |= set() if rows is None else set(rows["run_id"])
    return ids


def assert_warehouse(db: Path, expected: Path, run_id: str) -> None:
    """Both tables hold what the expected warehouse holds, every row published by run_id: one whole publish, no mix."""
    for table in TABLE_KEYS:
        rows = warehouse_table(db, table, with_run_id=True)
        assert rows is not None, f"no {table} table in {db}"
        assert set(rows["run_id"]) <= {run_id}, f"{table} holds rows of {sorted(set(rows['run_id']))}, expected {run_id} only"
        pd.testing.assert_frame_equal(rows.drop(columns="run_id"), warehouse_table(expected, table), check_exact=True)


@dataclass(frozen=True)
class Published:
    """Where a run's final outputs are."""

    similar_items: Path
    duplicate_groups: Path
    rejects: Path
    summary: Path
    warehouse: Path

    @classmethod
    def of_run(cls, run: StepRun) -> Published:
        uri = run.run_uri
        return cls(
            Path(layout.similar_items(uri)),
            Path(layout.duplicate_groups(uri)),
            Path(layout.rejects(uri)),
            Path(layout.run_summary(uri)),
            run.warehouse,
        )

    @classmethod
    def of_out(cls, out: Path) -> Published:
        """The outputs `pss run` shows at the top of its out folder."""
        return cls(
            out / "similar_items.parquet",
            out / "duplicate_groups.parquet",
            out / "rejects.csv",
            out / "run_summary.json",
            out / "warehouse.sqlite",
        )

    def rows(self, table: str) -> pd.DataFrame:
        path = self.similar_items if table == "similar_items" else self.duplicate_groups
        return pq.read_table(path).to_pandas().drop(columns="run_id").sort_values(TABLE_KEYS[table]).reset_index(drop=True)

    def summary_counts(self) -> dict[str, Any]:
        summary = json.loads(self.summary.read_text(encoding="utf-8"))
        return {"counts": summary["counts"], "rejects": {k: v for k, v in summary["rejects"].items() if k != "file"}}


def assert_identical(got: Published, expected: Published, run_id: str) -> None:
    """The final outputs equal the uninterrupted run's, apart from run ids; the warehouse holds this run's rows only."""
    for table in TABLE_KEYS:
        pd.testing.assert_frame_equal(got.rows(table), expected.rows(table), check_exact=True)
    assert len(got.rows("similar_items")) > 0
    assert_warehouse(got.warehouse, expected.warehouse, run_id)
    assert got.rejects.read_bytes() == expected.rejects.read_bytes()
    assert len(pd.read_csv(got.rejects)) == 3
    assert got.summary_counts() == expected.summary_counts()


# --- one step killed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A step's process to kill, where, and what must hold once it is dead."""

    name: str
    step: str
    kill_point: Callable[[StepRun], KillPoint]
    # The manifest the killed process must not have written.
    unfinished: Callable[[StepRun], str]
    # A later step that must then refuse to start (manifest not found).
    downstream: Callable[[StepRun], list[str]] | None
    # Whether the warehouse holds this run's rows by the kill (else still the earlier publish's).
    committed: bool = False


def _last(names: list[str]) -> str:
    return names[-1]


CASES = [
    # After the first catalog partition is visible, before the second is.
    Case(
        "plan",
        "plan",
        lambda r: KillPoint("os.rename", layout.catalog_partition(r.run_uri, "part-00001")),
        lambda r: layout.plan_manifest(r.run_uri),
        lambda r: r.arguments("embed", 0),
    ),
    # The last partition's vectors visible, its lexical term frequencies written but not yet renamed.
    Case(
        "embed",
        "embed",
        lambda r: KillPoint("os.rename", layout.retriever_input(r.run_uri, _last(r.catalog_partitions()), "lexical")),
        lambda r: layout.embed_manifest(r.run_uri, _last(r.catalog_partitions())),
        lambda r: r.arguments("plan-index"),
    ),
    # One scope's IDF visible, the other's not yet.
    Case(
        "plan-index",
        "plan-index",
        lambda r: KillPoint("os.rename", ".lexical.idf.npz", 2),
        lambda r: layout.index_plan_manifest(r.run_uri),
        lambda r: r.arguments("build-index", 0),
    ),
    # The last index partition's ids visible, its HNSW index serialised but not yet renamed.
    Case(
        "build-index",
        "build-index",
        lambda r: KillPoint("os.rename", layout.index_file(r.run_uri, _last(r.index_partitions()))),
        lambda r: layout.index_manifest(r.run_uri, _last(r.index_partitions())),
        lambda r: r.arguments("search", len(r.catalog_partitions()) - 1),
    ),
    # The last partition's query done (its manifest too), its post-filtered rows written but not yet renamed.
    Case(
        "search",
        "search",
        lambda r: KillPoint("os.rename", layout.filtered(r.run_uri, _last(r.catalog_partitions()))),
        lambda r: layout.filter_manifest(r.run_uri, _last(r.catalog_partitions())),
        lambda r: r.arguments("publish"),
    ),
    # Inside the warehouse transaction: the slice deleted, the first rows being inserted.
    Case(
        "publish",
        "publish",
        lambda r: KillPoint("sql", "INSERT INTO similar_items"),
        lambda r: layout.publish_manifest(r.run_uri),
        lambda r: r.arguments("report"),
    ),
    # After the commit: the warehouse holds this run's rows, the manifest saying so is written but not yet renamed.
    Case(
        "publish-after-commit",
        "publish",
        lambda r: KillPoint("os.rename", layout.publish_manifest(r.run_uri)),
        lambda r: layout.publish_manifest(r.run_uri),
        lambda r: r.arguments("report"),
        committed=True,
    ),
    Case(
        "report",
        "report",
        lambda r: KillPoint("os.rename", layout.run_summary(r.run_uri)),
        lambda r: layout.run_summary(r.run_uri),
        None,
        committed=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_step_killed_mid_work_shows_nothing_partial_and_reruns_to_the_same_output(
    case: Case,
    reference: StepRun,
    processes: multiprocessing.context.ForkServerContext,
    config_path: Path,
    catalog: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = StepRun(tmp_path / "out", f"killed-{case.name}", config_path, catalog)
    # The warehouse holds an earlier publish of the same slice (the reference's): until a commit, a kill must leave it.
    run.out.mkdir()
    shutil.copy(reference.warehouse, run.warehouse)
    position = STEPS.index(case.step)
    for step in STEPS[:position]:
        run.in_process(step)
    victim = run.commands(case.step)[-1]
    run.in_process(case.step, but=victim)

    kill_at(processes, case.kill_point(run), ["step", *victim], tmp_path / "killed")

    # It died mid-work: its manifest unwritten, its write in progress (a temporary left where the step writes).
    assert not Path(case.unfinished(run)).exists()
    if case.kill_point(run).event == "os.rename":
        assert temporaries(Path(run.run_uri)), "the kill landed outside a write"
    assert_nothing_partial(run.out, run.run_uri, reference)
    assert_warehouse(run.warehouse, reference.warehouse, run.run_id if case.committed else reference.run_id)
    if case.downstream is not None:
        capsys.readouterr()
        assert main(["step", *case.downstream(run)]) == 2
        assert "manifest not found" in capsys.readouterr().err

    rerun(processes, ["step", *victim], tmp_path / "rerun")
    for step in STEPS[position + 1 :]:
        run.in_process(step)

    assert_identical(Published.of_run(run), Published.of_run(reference), run.run_id)
    # Checked last, so a failure here means only that: a temporary of the killed attempt was never cleaned up.
    assert temporaries(run.out) == []


# --- `pss run` killed -------------------------------------------------------------------------------


def _run_arguments(config_path: Path, catalog: Path, out: Path, run_id: str) -> list[str]:
    """`pss run` on the catalog into out, on the reference's snapshot date."""
    arguments = ["run", "--config", str(config_path), "--catalog", str(catalog), "--out", str(out)]
    return [*arguments, "--snapshot-date", SNAPSHOT.isoformat(), "--run-id", run_id]


@pytest.fixture(scope="module")
def previous_out(config_path: Path, catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An out folder after one finished `pss run` (run id "previous"): what a later run of the same day replaces."""
    out = tmp_path_factory.mktemp("previous") / "out"
    assert main(_run_arguments(config_path, catalog, out, "previous")) == 0
    return out


@dataclass(frozen=True)
class RunCase:
    """Where a `pss run` is killed, and what must hold once it is dead."""

    kill_point: Callable[[Path, StepRun], KillPoint]
    # A manifest the killed run must not have written.
    unfinished: Callable[[Path, StepRun], str] | None
    # The run whose outputs a reader then sees, in the warehouse and at the top of the out folder.
    shows: str
    # Killed between the commit and the switch of OUT/current: OUT shows the previous run until the next `pss run`
    # into it finishes the switch (the first thing it does), which the test does here on its own.
    switch_left: bool = False


KILLED_RUN = "killed-run"
RUN_CASES = {
    # Mid-way: the last index partition's HNSW index serialised but not yet renamed (partition names as in the reference).
    "build-index": RunCase(
        lambda out, ref: KillPoint("os.rename", layout.index_file(str(out / "runs" / KILLED_RUN), _last(ref.index_partitions()))),
        lambda out, ref: layout.index_manifest(str(out / "runs" / KILLED_RUN), _last(ref.index_partitions())),
        "previous",
    ),
    # Inside the warehouse transaction: the slice deleted, the first rows being inserted.
    "publish": RunCase(
        lambda out, ref: KillPoint("sql", "INSERT INTO similar_items"),
        lambda out, ref: layout.publish_manifest(str(out / "runs" / KILLED_RUN)),
        "previous",
    ),
    # After the commit, just before OUT/current is switched to this run: the one rename left.
    "after-commit": RunCase(
        lambda out, ref: KillPoint("os.rename", str(out / "current")),
        None,
        KILLED_RUN,
        switch_left=True,
    ),
}


def shown_run_ids(out: Path) -> set[str]:
    """The runs whose outputs the top of a `pss run` out folder shows: the summary's, and those of the rows' run_id."""
    shown = {json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["run_id"]}
    for name in ("similar_items.parquet", "duplicate_groups.parquet"):
        shown |= set(pq.read_table(out / name, columns=["run_id"]).column("run_id").to_pylist())
    return shown


@pytest.mark.parametrize("at", list(RUN_CASES))
def test_pss_run_killed_mid_way_shows_one_run_and_reruns_with_its_run_id_to_the_same_output(
    at: str,
    reference: StepRun,
    previous_out: Path,
    processes: multiprocessing.context.ForkServerContext,
    config_path: Path,
    catalog: Path,
    tmp_path: Path,
) -> None:
    case, out = RUN_CASES[at], tmp_path / "out"
    shutil.copytree(previous_out, out, symlinks=True)  # OUT's links stay links, as cp -a keeps them
    arguments = _run_arguments(config_path, catalog, out, KILLED_RUN)

    kill_at(processes, case.kill_point(out, reference), arguments, tmp_path / "killed")

    if case.unfinished is not None:
        assert not Path(case.unfinished(out, reference)).exists()
    assert_nothing_partial(out, str(out / "runs" / KILLED_RUN), reference)
    if case.switch_left:
        assert (warehouse_run_ids(out / "warehouse.sqlite"), shown_run_ids(out)) == ({KILLED_RUN}, {"previous"})
        assert finish_interrupted_switch(str(out), f"sqlite:///{out / 'warehouse.sqlite'}") == KILLED_RUN
    # One run is visible, the same in the warehouse and at the top of the out folder.
    visible = {"warehouse": warehouse_run_ids(out / "warehouse.sqlite"), "top-level files": shown_run_ids(out)}
    assert visible == {"warehouse": {case.shows}, "top-level files": {case.shows}}

    rerun(processes, arguments, tmp_path / "rerun")

    assert_identical(Published.of_out(out), Published.of_run(reference), KILLED_RUN)
    assert shown_run_ids(out) == {KILLED_RUN}
    assert temporaries(out) == []
