"""`pss run`'s top-level outputs: OUT/<name> leads, through OUT/current, to the files of the latest published run.

The top-level files can't be replaced together, but one symlink can. Each run gathers its outputs in runs/<run_id>/outputs/
(hard links to the run's own files, so nothing is copied) while the warehouse transaction holds its rows; once the
warehouse commits, OUT/current is switched to that folder with one rename. A kill at any moment leaves every
top-level file on the previous run or every one on this run, as the warehouse is. On S3, which has no links, the
objects are copied beside their targets before the commit and moved into place one after another after it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pss_ops import storage

log = logging.getLogger(__name__)

# What OUT shows of the latest run; run_summary.json says which run that is.
OUTPUT_NAMES = ("similar_items.parquet", "duplicate_groups.parquet", "rejects.csv", "run_summary.json", "report.html")
CURRENT = "current"
RUN_OUTPUTS = "outputs"


def _link_or_copy(source: str, target: Path) -> None:
    target.unlink(missing_ok=True)  # a re-run of the same run id gathers its outputs again
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links: the bytes, atomically
        storage.copy(source, str(target))


def stage_outputs(stack: ExitStack, out_dir: str, run_uri: str, sources: dict[str, str], summary: dict[str, Any]) -> None:
    """Make the run's top-level outputs ready to appear when stack closes cleanly (after the commit); an error discards them.

    sources maps each output name but run_summary.json to the run's file; the summary is written from the dict.
    """
    if storage.is_s3(out_dir):
        for name, source in sources.items():
            storage.copy(source, stack.enter_context(storage.writing_file(storage.join(out_dir, name))))
        storage.write_json(stack.enter_context(storage.writing_file(storage.join(out_dir, "run_summary.json"))), summary)
        return
    folder = Path(run_uri, RUN_OUTPUTS)
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        _link_or_copy(source, folder / name)
    storage.write_json(str(folder / "run_summary.json"), summary)
    current = Path(out_dir, CURRENT)
    if current.is_dir() and not current.is_symlink():
        # A copy of OUT that followed the link (cp -r, shutil.copytree) made current a folder, which a rename can't
        # replace; the files it holds are a copy of an earlier run's, and they go.
        shutil.rmtree(current)
    # Relative, so the out folder can be moved or mounted elsewhere whole.
    stack.enter_context(storage.staged_symlink(str(current), os.path.relpath(folder, out_dir)))


def regather(run_uri: str, run_id: str, name: str, source: str, *, out_dir: str | None = None) -> None:
    """Gather one of a run's outputs again after its file was rewritten (report.html, redrawn by pss evaluate).

    A hard link keeps the bytes it was made with once its file is replaced, so the run's outputs/<name> is linked anew,
    in one rename; OUT/<name> leads there while OUT shows the run. On S3 OUT holds copies: out_dir's copy is replaced
    when OUT still shows this run. A run whose outputs were never gathered (pss step, Airflow) has nothing to redo.
    """
    if storage.is_s3(run_uri):
        shown = storage.join(out_dir, "run_summary.json") if out_dir else ""
        if out_dir and storage.exists(shown) and storage.read_json(shown).get("run_id") == run_id:
            storage.copy(source, storage.join(out_dir, name))
        return
    target = Path(run_uri, RUN_OUTPUTS, name)
    if not target.exists():
        return
    with storage.writing_file(str(target)) as staged:
        os.unlink(staged)  # the name _staged reserved becomes the new link
        try:
            os.link(source, staged)
        except OSError:  # a filesystem without hard links: the bytes
            shutil.copyfile(source, staged)


def link_output_names(out_dir: str) -> None:
    """OUT/<name> as a link to current/<name>, made once (or over a regular file an earlier version wrote)."""
    if storage.is_s3(out_dir):
        return
    for name in OUTPUT_NAMES:
        path, target = Path(out_dir, name), os.path.join(CURRENT, name)
        if path.is_symlink() and os.readlink(path) == target:
            continue
        if not Path(out_dir, target).exists():
            continue  # a run gathered by an earlier version, without this file: linked once a run has it

        with storage.staged_symlink(str(path), target):
            pass
        log.info("%s now leads to the latest run's file through %s", path, CURRENT)


def finish_interrupted_switch(out_dir: str, warehouse_url: str) -> str | None:
    """Finish the switch of a run killed between its warehouse commit and the rename of OUT/current; its run id, if any.

    Such a run left its staged link beside OUT/current. If the warehouse holds that run, the link is renamed into
    place, so OUT agrees with the warehouse again; if not, the publish never committed, and the link is left to the
    sweep of dead writers' temporaries. Run before anything else writes into OUT: that sweep would remove it.
    """
    from pss_ops.warehouse.connection import redact_url
    from pss_ops.warehouse.publish import holds_run

    if storage.is_s3(out_dir) or not Path(out_dir).is_dir():
        return None
    staged = [p for p in Path(out_dir).glob(f".{CURRENT}.*.tmp") if p.is_symlink() and storage.left_by_dead_writer(p.name)]
    for link in sorted(staged, key=lambda p: p.lstat().st_mtime, reverse=True):
        try:
            summary = json.loads((link / "run_summary.json").read_text(encoding="utf-8"))
            publish, counts = summary["publish"], summary["counts"]
        except (OSError, ValueError, KeyError):
            continue
        if publish["warehouse"] != redact_url(warehouse_url):
            continue  # published elsewhere: this run can't tell whether that commit happened
        committed = holds_run(
            warehouse_url,
            application=summary["application"],
            snapshot_date=dt.date.fromisoformat(summary["snapshot_date"]),
            categories=publish["categories"],
            run_id=summary["run_id"],
            rows=counts["rows_published"],
        )
        if committed:
            os.replace(link, Path(out_dir, CURRENT))
            link_output_names(out_dir)
            log.warning("run %s was stopped after its warehouse commit; %s now shows it, as the warehouse does", summary["run_id"], out_dir)
            return str(summary["run_id"])
    return None
