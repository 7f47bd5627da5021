"""OUT's top-level files switch runs with one rename, and a run killed between its commit and that rename is finished."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa

from pss_ops import storage
from pss_ops.orchestration.outputs import CURRENT, OUTPUT_NAMES, finish_interrupted_switch, link_output_names, stage_outputs
from pss_ops.warehouse.publish import publish_similar_items
from pss_ops.warehouse.schema import arrow_schema

DAY = dt.date(2024, 5, 1)


def a_run(out: Path, run_id: str, rows: int) -> tuple[str, dict[str, str], dict[str, object]]:
    """A run folder with its four files, and the summary pss run would write for it."""
    run = out / "runs" / run_id
    (run / "publish").mkdir(parents=True)
    columns = {
        "application": ["near_identical"] * rows,
        "snapshot_date": [DAY] * rows,
        "category": ["headphones"] * rows,
        "query_item_id": [f"B0863TXGM{i}" for i in range(rows)],
        "candidate_item_id": ["B0756CYWWD"] * rows,
        "rank": [1] * rows,
        "score": [0.9] * rows,
        "run_id": [run_id] * rows,
    }
    shape = arrow_schema()  # found_by, retriever_scores and match_probability NULL, as without a matcher
    table = pa.table({name: pa.array(columns.get(name, [None] * rows), shape.field(name).type) for name in shape.names})
    storage.write_parquet(str(run / "publish" / "similar_items.parquet"), table)
    storage.write_parquet(str(run / "publish" / "duplicate_groups.parquet"), pa.table({"group_id": pa.array([], pa.string())}))
    (run / "rejects.csv").write_text("row,item_id,reason,record\n", encoding="utf-8")
    (run / "report.html").write_text(f"<!DOCTYPE html><title>{run_id}</title>\n", encoding="utf-8")
    sources = {
        "similar_items.parquet": str(run / "publish" / "similar_items.parquet"),
        "duplicate_groups.parquet": str(run / "publish" / "duplicate_groups.parquet"),
        "rejects.csv": str(run / "rejects.csv"),
        "report.html": str(run / "report.html"),
    }
    url = f"sqlite:///{out / 'warehouse.sqlite'}"
    summary = {
        "application": "near_identical",
        "snapshot_date": DAY.isoformat(),
        "run_id": run_id,
        "counts": {"rows_published": rows},
        "publish": {"warehouse": url, "categories": ["headphones"]},
    }
    return str(run), sources, summary


def published(out: Path, sources: dict[str, str]) -> None:
    publish_similar_items(
        f"sqlite:///{out / 'warehouse.sqlite'}",
        application="near_identical",
        snapshot_date=DAY,
        categories=["headphones"],
        batches=[storage.read_parquet(sources["similar_items.parquet"])],
    )


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(child.stdout)


def killed_before_the_switch(out: Path, run_uri: str) -> Path:
    """What a run killed right before renaming OUT/current leaves: its staged link, named after a writer that is gone."""
    link = out / f".{CURRENT}.{storage._writer()}.{dead_pid()}.{secrets.token_hex(4)}.tmp"
    os.symlink(os.path.relpath(Path(run_uri, "outputs"), out), link)
    return link


def shown_run(out: Path) -> str:
    return json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["run_id"]


def test_every_top_level_file_follows_current_and_switches_with_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for run_id in ("first", "second"):
        run_uri, sources, summary = a_run(out, run_id, 2)
        with ExitStack() as stack:
            stage_outputs(stack, str(out), run_uri, sources, summary)
            if run_id == "second":
                assert shown_run(out) == "first"  # staged, not yet shown
        link_output_names(str(out))
        assert shown_run(out) == run_id
        assert set(storage.read_parquet(str(out / "similar_items.parquet")).column("run_id").to_pylist()) == {run_id}
        assert all(os.readlink(out / name) == f"{CURRENT}/{name}" for name in OUTPUT_NAMES)
    assert (out / "runs" / "second" / "outputs" / "similar_items.parquet").stat().st_nlink == 2  # a link, not a copy


def test_a_failure_before_the_commit_leaves_the_previous_run_shown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_uri, sources, summary = a_run(out, "first", 2)
    with ExitStack() as stack:
        stage_outputs(stack, str(out), run_uri, sources, summary)
    link_output_names(str(out))
    run_uri, sources, summary = a_run(out, "second", 3)
    try:
        with ExitStack() as stack:
            stage_outputs(stack, str(out), run_uri, sources, summary)
            raise RuntimeError("the warehouse refused the commit")
    except RuntimeError:
        pass
    assert shown_run(out) == "first"
    assert not list(out.glob(".*.tmp"))


def test_a_run_killed_after_its_commit_is_shown_by_the_next_run_and_one_killed_before_is_not(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_uri, sources, summary = a_run(out, "first", 2)
    published(out, sources)
    with ExitStack() as stack:
        stage_outputs(stack, str(out), run_uri, sources, summary)
    link_output_names(str(out))
    url = f"sqlite:///{out / 'warehouse.sqlite'}"

    # Killed before its commit: the warehouse holds "first"; the staged link stays unswitched.
    run_uri, sources, summary = a_run(out, "uncommitted", 3)
    storage.write_json(str(Path(run_uri, "outputs", "run_summary.json")), summary)
    uncommitted = killed_before_the_switch(out, run_uri)
    assert finish_interrupted_switch(str(out), url) is None
    assert shown_run(out) == "first" and uncommitted.is_symlink()

    # Killed after its commit: the warehouse holds "committed", so the next run shows it before doing anything else.
    run_uri, sources, summary = a_run(out, "committed", 4)
    for name, source in sources.items():
        Path(run_uri, "outputs").mkdir(exist_ok=True)
        os.link(source, Path(run_uri, "outputs", name))
    storage.write_json(str(Path(run_uri, "outputs", "run_summary.json")), summary)
    published(out, sources)
    killed_before_the_switch(out, run_uri)
    assert shown_run(out) == "first"
    assert finish_interrupted_switch(str(out), url) == "committed"
    assert shown_run(out) == "committed"
    assert storage.read_parquet(str(out / "similar_items.parquet")).num_rows == 4
    # Asked about another warehouse, it can't tell whether that commit happened, and switches nothing.
    assert finish_interrupted_switch(str(out), f"sqlite:///{tmp_path / 'other.sqlite'}") is None
