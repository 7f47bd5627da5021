"""`pss run`: every step in-process, in order, over every partition."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pss_ops import layout, reporting, storage
from pss_ops.catalog.source import open_catalog
from pss_ops.config import AppConfig
from pss_ops.features.cache.backends import open_cache
from pss_ops.features.text.encode import release_text_models
from pss_ops.manifests import CatalogPlan, PublishResult, QueriedPartition, RunContext
from pss_ops.orchestration.outputs import finish_interrupted_switch, link_output_names, stage_outputs
from pss_ops.steps.build_index import build_index
from pss_ops.steps.embed import embed_partition
from pss_ops.steps.plan import make_context, plan
from pss_ops.steps.plan_index import plan_index
from pss_ops.steps.post_filter import post_filter_partition
from pss_ops.steps.publish import publish
from pss_ops.steps.query import query_partition
from pss_ops.steps.report import report
from pss_ops.warehouse.connection import default_warehouse_url
from pss_ops.warehouse.publish import check_warehouse

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class OutputError(ValueError):
    """The output folder can't be used: it is a file, or it can't be written."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def new_run_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique run id."""
    now = now or dt.datetime.now(dt.UTC)
    return f"run-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def default_cache_uri(config: AppConfig, out_dir: str) -> str:
    """The cache the config names, else a SQLite file shared by every run in out_dir."""
    return config.cache.uri or storage.join(storage.absolute(out_dir), "cache", "embeddings.sqlite")


class _Stages:
    """Runs the steps of one run in order, timing each and reporting per-item progress.

    In a terminal each step with partitions is a progress bar; elsewhere (a log file, CI, a test) a line per partition.
    """

    def __init__(self, progress: Progress, *, bars: bool = False) -> None:
        self.progress = progress
        self.bars = bars
        self.wall: dict[str, float] = {}

    def __call__(self, name: str, items: list[Any], work: Callable[[Any], Any]) -> list[Any]:
        started = time.perf_counter()
        results = []
        if self.bars and len(items) > 1:
            with tqdm(total=len(items), desc=f"{name:<12}", unit="partition", file=sys.stderr, dynamic_ncols=True) as bar:
                for item in items:
                    bar.set_postfix_str(getattr(item, "name", ""), refresh=False)
                    results.append(work(item))
                    bar.update(1)
        else:
            for number, item in enumerate(items, start=1):
                results.append(work(item))
                if not self.bars:  # in a terminal a one-item step says nothing; its own lines (plan's counts) do
                    self.progress(f"[{name}] {number}/{len(items)} {getattr(item, 'name', '')}".rstrip())
        self.wall[name] = round(time.perf_counter() - started, 3)
        return results


@dataclass
class SearchedRun:
    """A run through the query step: its context, catalog plan and query outputs."""

    ctx: RunContext
    catalog_plan: CatalogPlan
    queried: list[QueriedPartition]
    stage: _Stages


def search_run(
    config: AppConfig,
    *,
    catalog_uri: str,
    out_dir: str,
    categories: tuple[str, ...] | None = None,
    snapshot_date: dt.date | None = None,
    run_id: str | None = None,
    full_refresh: bool = False,
    progress: Progress = _stderr,
    after_plan: Callable[[RunContext, CatalogPlan], None] | None = None,
) -> SearchedRun:
    """plan → embed → plan_index → build_index → query; after_plan may refuse the plan before any compute."""
    out_dir = storage.absolute(out_dir)
    run_id = run_id or new_run_id()
    ctx: RunContext = make_context(
        config,
        catalog_uri=catalog_uri,
        run_uri=storage.join(out_dir, "runs", run_id),
        snapshot_date=snapshot_date or dt.date.today(),
        run_id=run_id,
        cache_uri=default_cache_uri(config, out_dir),
        categories=categories,
        full_refresh=full_refresh,
    )
    stage = _Stages(progress, bars=progress is _stderr and sys.stderr.isatty())
    progress(f"run {run_id}: application {config.application}, model {ctx.model_id}, run dir {ctx.run_uri}")
    catalog_plan = stage("plan", [None], lambda _: plan(ctx))[0]
    progress(
        f"[plan] {catalog_plan.rows_accepted} of {catalog_plan.rows_read} rows accepted, "
        f"{catalog_plan.rows_rejected} rejected, {len(catalog_plan.partitions)} partitions"
    )
    if after_plan is not None:
        after_plan(ctx, catalog_plan)
    cache = open_cache(ctx.cache_uri)
    try:
        embedded = stage("embed", list(catalog_plan.partitions), lambda p: embed_partition(ctx, p, cache))
    finally:
        cache.close()
    # The rest of the run is search: the text model's memory goes back before the indexes are built.
    release_text_models()
    gc.collect()
    index_plan = stage("plan_index", [None], lambda _: plan_index(ctx, catalog_plan))[0]
    stage("build_index", list(index_plan.partitions), lambda p: build_index(ctx, p))
    queried = stage("query", embedded, lambda p: query_partition(ctx, p, index_plan))
    return SearchedRun(ctx, catalog_plan, queried, stage)


def run_pipeline(
    config: AppConfig,
    *,
    catalog_uri: str,
    out_dir: str,
    categories: tuple[str, ...] | None = None,
    warehouse_url: str | None = None,
    snapshot_date: dt.date | None = None,
    run_id: str | None = None,
    full_refresh: bool = False,
    progress: Progress = _stderr,
) -> dict[str, Any]:
    """Run plan → embed → plan_index → build_index → query → post_filter → publish → report."""
    out_dir = storage.absolute(out_dir)
    warehouse_url = warehouse_url or default_warehouse_url(out_dir)
    # First, before anything writes into OUT (and sweeps what dead writers left): a run killed between its commit and
    # the switch of OUT/current left OUT behind the warehouse; finish that switch.
    finish_interrupted_switch(out_dir, warehouse_url)
    # What can be known without reading the catalog's rows fails here, before the run starts; plan checks the rows.
    check_outputs_writable(out_dir)
    check_warehouse(warehouse_url)
    open_catalog(catalog_uri)  # the file is there, readable (S3 credentials), in a known format, with its columns
    searched = search_run(
        config,
        catalog_uri=catalog_uri,
        out_dir=out_dir,
        categories=categories,
        snapshot_date=snapshot_date,
        run_id=run_id,
        full_refresh=full_refresh,
        progress=progress,
    )
    ctx, catalog_plan, stage = searched.ctx, searched.catalog_plan, searched.stage
    stage("post_filter", searched.queried, lambda q: post_filter_partition(ctx, q))
    summary: dict[str, Any] = {}
    publish_started = time.perf_counter()
    # The warehouse is written last. While its transaction holds the new rows, the report is written and the top-level
    # outputs are made ready beside OUT; a failure up to the commit leaves the previous state everywhere. After the
    # commit one rename switches OUT/current to this run (outputs.py).
    with ExitStack() as staged:

        def finish_before_commit(published: PublishResult) -> None:
            stage.wall["publish"] = round(time.perf_counter() - publish_started, 3)
            summary.update(stage("report", [None], lambda _: report(ctx, wall_seconds=stage.wall, published=published))[0])
            summary["wall_seconds"] = stage.wall
            sources = {
                "similar_items.parquet": layout.similar_items(ctx.run_uri),
                "duplicate_groups.parquet": layout.duplicate_groups(ctx.run_uri),
                "rejects.csv": catalog_plan.rejects_uri,
                "report.html": reporting.page_uri(ctx.run_uri),
            }
            stage_outputs(staged, out_dir, ctx.run_uri, sources, summary)

        publish(ctx, catalog_plan, warehouse_url, before_commit=finish_before_commit)
    link_output_names(out_dir)
    return summary


def check_outputs_writable(out_dir: str) -> None:
    """Fail before any compute when the output folder can't be created or written (a file, read-only, no credentials)."""
    if not storage.is_s3(out_dir) and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"output folder {out_dir} is a file, not a folder")
    try:
        if storage.is_s3(out_dir):
            probe = storage.join(out_dir, f".pss-write-check-{os.getpid()}")
            storage.write_text(probe, "")
            storage.delete(probe)
        else:
            # A scratch folder is named after this process, so a kill here leaves nothing the next write won't sweep.
            with storage.scratch_dir(out_dir):
                pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(f"output folder {out_dir} is not writable: {' '.join(reason.split())}") from err
