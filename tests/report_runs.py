"""Helpers of the report page's tests: where a pss run's run folder is, and copies of runs to change freely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pss_ops import layout, storage
from pss_ops.manifests import CatalogPlan
from tests.conftest import Run


def run_folder(run: Run) -> Path:
    """The run folder of a pss run."""
    return Path(run.summary["run_uri"])


def out_run_folder(out: Path) -> Path:
    """The run folder OUT shows (through OUT/current)."""
    return Path(json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["run_uri"])


def copy_out(out: Path, target: Path) -> Path:
    """A copy of a pss run's OUT (links kept as links; OUT/current's hard links become files), to change freely."""
    shutil.copytree(out, target, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    return target


def copy_run(run_uri: Path, target: Path) -> Path:
    """A copy of a run folder to change freely (its manifests still point at the original's partition files)."""
    shutil.copytree(run_uri, target)
    return target


def rewrite_titles(run_uri: Path, titles: dict[str, str]) -> None:
    """Give items new titles in the run's catalog partitions (the titles the report page shows)."""
    for partition in CatalogPlan.read(layout.plan_manifest(str(run_uri))).partitions:
        uri = layout.catalog_partition(str(run_uri), partition.name)
        frame = storage.read_parquet(uri).to_pandas()
        frame["title"] = [titles.get(item, title) for item, title in zip(frame["item_id"], frame["title"])]
        frame.to_parquet(uri, index=False)
