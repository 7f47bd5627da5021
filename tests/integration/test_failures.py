"""How `pss run` fails: before any compute when it can, with one `pss: error:` line, and with the warehouse written last.

The run's failures are injected where a real one would land (a full disk while the top-level outputs are staged, a
warehouse refusing the commit), after a first good run into the same folder, and each test checks that the warehouse
and the top-level files still agree on that first run.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pss_ops import storage
from pss_ops.cli import WAREHOUSE_ENV, main
from pss_ops.config import AppConfig
from pss_ops.warehouse import publish as warehouse_publish
from tests.conftest import Run, Subset, write_config

ROW_KEY = ["category", "query_item_id", "rank"]


@pytest.fixture(autouse=True)
def _no_ambient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv("PSS_DEBUG", raising=False)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, warm_config: AppConfig) -> Path:
    return write_config(warm_config, tmp_path_factory.mktemp("config") / "near_identical_small.yaml")


@pytest.fixture
def first_run(ag_run: Run, tmp_path: Path) -> Path:
    """An out folder holding a finished run (ag_run's outputs and warehouse), as a user's OUT would after a good run."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("warehouse.sqlite", "similar_items.parquet", "duplicate_groups.parquet", "rejects.csv", "run_summary.json"):
        shutil.copy(ag_run.out_dir / name, out / name)
    return out


def pss(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    """Run the CLI; its exit status and stderr lines."""
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err.splitlines()


def error_lines(err: list[str]) -> list[str]:
    return [line for line in err if line.startswith("pss: error:")]


def warehouse_rows(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        frame = pd.read_sql_query("SELECT * FROM similar_items", conn)
    return frame.sort_values(ROW_KEY).reset_index(drop=True)


def state(out: Path) -> tuple[pd.DataFrame, bytes, bytes, str]:
    """What readers see: the warehouse rows, the top-level Parquet and rejects bytes, and the summary's run id."""
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    return (
        warehouse_rows(out / "warehouse.sqlite"),
        (out / "similar_items.parquet").read_bytes(),
        (out / "rejects.csv").read_bytes(),
        summary["run_id"],
    )


def assert_same_state(out: Path, before: tuple[pd.DataFrame, bytes, bytes, str]) -> None:
    after = state(out)
    pd.testing.assert_frame_equal(after[0], before[0])
    assert after[1:] == before[1:]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "a staged top-level file was left behind"


def test_a_full_disk_while_the_outputs_are_staged_leaves_the_warehouse_and_the_outputs_on_the_previous_run(
    first_run: Path, ag_subset: Subset, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(first_run)
    real_write_json = storage.write_json

    def disk_fills_at_the_summary(uri: str, payload: object) -> None:
        if Path(uri).parent.name == "outputs":  # the run's top-level summary, written inside the warehouse transaction
            raise OSError(errno.ENOSPC, "No space left on device", uri)
        real_write_json(uri, payload)

    monkeypatch.setattr(storage, "write_json", disk_fills_at_the_summary)
    code, err = pss(capsys, "run", "--config", str(config_file), "--catalog", str(ag_subset.catalog), "--out", str(first_run), "--k", "3")
    assert code == 1
    (line,) = error_lines(err)
    assert line.startswith("pss: error: No space left on device: ") and str(first_run) in line
    assert not [x for x in err if x.startswith("Traceback")]
    assert_same_state(first_run, before)
    assert before[0]["rank"].max() > 3  # the failed run (k=3) would have changed the rows


def test_a_warehouse_that_refuses_the_commit_leaves_the_top_level_outputs_on_the_previous_run(
    first_run: Path, ag_subset: Subset, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(first_run)
    real_replace = warehouse_publish._replace_slice

    def refused(conn: sa.Connection, table: str, *args: object, **kwargs: object) -> tuple[int, int]:
        if table == warehouse_publish.GROUPS_TABLE_NAME:
            raise sa.exc.OperationalError("INSERT INTO duplicate_groups", {}, sqlite3.OperationalError("database or disk is full"))
        return real_replace(conn, table, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(warehouse_publish, "_replace_slice", refused)
    code, err = pss(capsys, "run", "--config", str(config_file), "--catalog", str(ag_subset.catalog), "--out", str(first_run), "--k", "3")
    assert code == 1
    (line,) = error_lines(err)
    assert line == f"pss: error: warehouse sqlite:///{first_run / 'warehouse.sqlite'}: publishing failed: database or disk is full"
    assert_same_state(first_run, before)


def test_out_pointing_at_a_file_fails_before_any_compute(
    ag_subset: Subset, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "results.txt"
    not_a_folder.write_text("keep me\n")
    code, err = pss(capsys, "run", "--config", str(config_file), "--catalog", str(ag_subset.catalog), "--out", str(not_a_folder))
    assert code == 2
    assert error_lines(err) == [f"pss: error: output folder {not_a_folder} is a file, not a folder"]
    assert not_a_folder.read_text() == "keep me\n"
    assert not [line for line in err if line.startswith("[")], "a step ran"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # A port that is not a number: SQLAlchemy can't parse it. The password never reaches the message.
        ("postgresql+psycopg://reader:s3cret@db.example.com:port/warehouse", "malformed warehouse URL postgresql+psycopg://reader:***@"),
        ("postgresql+psycopg2://reader:s3cret@127.0.0.1/test", "must use the psycopg driver"),
        ("mysql://reader:s3cret@127.0.0.1/test", "unsupported warehouse mysql://reader:***@127.0.0.1/test"),
        # Nothing listens on port 9: refused at once, before the catalog is read.
        ("postgresql+psycopg://reader:s3cret@127.0.0.1:9/test", "warehouse postgresql+psycopg://reader:***@127.0.0.1:9/test: connecting"),
    ],
)
def test_a_bad_or_unreachable_warehouse_fails_before_any_compute(
    url: str, expected: str, ag_subset: Subset, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, err = pss(
        capsys, "run", "--config", str(config_file), "--catalog", str(ag_subset.catalog), "--out", str(out), "--warehouse-url", url
    )
    assert code == (1 if "connecting" in expected else 2)  # the machine's fault, or the URL's
    (line,) = error_lines(err)
    assert expected in line and "s3cret" not in line
    assert not (out / "runs").exists(), "the run started before the warehouse was checked"


def test_a_sqlite_warehouse_in_a_missing_folder_fails_before_any_compute(
    ag_subset: Subset, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'warehouse.sqlite'}"
    code, err = pss(
        capsys,
        "run",
        "--config",
        str(config_file),
        "--catalog",
        str(ag_subset.catalog),
        "--out",
        str(tmp_path / "out"),
        "--warehouse-url",
        url,
    )
    assert (code, error_lines(err)) == (2, [f"pss: error: warehouse {url}: folder {tmp_path / 'no-such-folder'} does not exist"])


def test_debug_adds_the_traceback_and_nothing_else_changes(
    ag_subset: Subset, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--config", str(config_file), "--catalog", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")]
    code, err = pss(capsys, *argv)
    code_debug, err_debug = pss(capsys, *argv, "--debug")
    assert code == code_debug == 2
    assert error_lines(err) == error_lines(err_debug) and len(error_lines(err)) == 1
    assert "missing.csv" in error_lines(err)[0]
    assert not [line for line in err if line.startswith("Traceback")]
    assert [line for line in err_debug if line.startswith("Traceback")]


def test_a_category_whose_name_has_a_comma_is_selected_by_category_or_a_json_list(
    ag_run: Run, ag_subset: Subset, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = ag_subset.frame.copy()
    frame["category"] = frame["category"].map({"group_a": "Home, Garden", "group_b": "toys"})
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)
    in_home = set(frame.loc[frame["category"] == "Home, Garden", "item_id"])
    for selection in (["--category", "Home, Garden"], ["--categories", '["Home, Garden"]']):
        out = tmp_path / f"out-{selection[0].strip('-')}"
        code, _ = pss(capsys, "run", "--config", str(config_file), "--catalog", str(catalog), "--out", str(out), *selection)
        assert code == 0
        published = pd.read_parquet(out / "similar_items.parquet")
        assert set(published["category"]) == {"Home, Garden"}
        assert set(published["query_item_id"]) <= in_home and len(set(published["query_item_id"])) > 0.9 * len(in_home)
    # The comma-separated form still splits: these two names don't exist.
    code, err = pss(
        capsys,
        "run",
        "--config",
        str(config_file),
        "--catalog",
        str(catalog),
        "--out",
        str(tmp_path / "split"),
        "--categories",
        "Home, Garden",
    )
    assert code == 2 and "Home" in error_lines(err)[0] and "Garden" in error_lines(err)[0]
