"""What an orchestrator needs before `pss step plan`: the run's URI, its frozen config and the plan arguments."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pss_ops import storage
from pss_ops.config import AppConfig, dump_config, load_config, with_k

# How many of a catalog's categories an error message lists before "...".
CATEGORIES_SHOWN = 20


@dataclass(frozen=True)
class RunRequest:
    """One orchestrated run, as plain data an Airflow task can pass on through XCom."""

    application: str
    snapshot_date: str
    run_id: str
    run_uri: str
    config_uri: str
    catalog_uri: str
    cache_uri: str
    warehouse_url: str | None
    categories: list[str]
    plan_arguments: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_directory(config_path: str) -> Path:
    """Where a config's relative paths start: its directory (for an s3:// config, the working directory)."""
    return Path.cwd() if storage.is_s3(config_path) else Path(config_path).resolve().parent


def freeze_config(run_uri: str, config: AppConfig) -> str:
    """Write the config a run uses into its directory, so later edits to the file cannot change the run; returns its URI."""
    config_uri = storage.join(run_uri, "config.yaml")
    storage.write_text(config_uri, dump_config(config))
    return config_uri


def safe_run_id(run_id: str) -> str:
    """An orchestrator's run id made safe for paths and S3 keys ('scheduled__2026-11-20T00:00:00+00:00')."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id)


# A run id names a folder under runs/: one path segment, never "." or "..", never hidden.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9_.=-]{0,199}")


def check_run_id(run_id: str) -> str:
    """A run id given by hand, refused unless it is one safe folder name (so --run-id ../x can't write elsewhere)."""
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r}: use up to 200 letters, digits and _ . = - (no leading dot); it names the run's folder")
    return run_id


def catalog_categories(catalog_uri: str, default_category: str) -> list[str]:
    """The categories a catalog's rows fall in (a blank or missing category is the default one), sorted.

    Streams the category column only, so a run can refuse an unknown category before any compute.
    """
    import pyarrow.compute as pc

    from pss_ops.catalog.cells import as_text
    from pss_ops.catalog.source import open_catalog
    from pss_ops.catalog.vectors import blank_mask

    source = open_catalog(catalog_uri)
    if "category" not in source.columns:
        return [default_category]
    found: set[str] = set()
    for batch in source.batches(["category"]):
        column = batch.column("category")
        found.update(pc.unique(pc.fill_null(as_text(column, blank_mask(column)), default_category)).to_pylist())
    return sorted(found)


def check_categories(wanted: list[str], catalog_uri: str, default_category: str) -> None:
    """Refuse requested categories the catalog has no row in, naming the ones it has (ValueError: wrong input)."""
    if not wanted:
        return
    present = catalog_categories(catalog_uri, default_category)
    unknown = [c for c in wanted if c not in present]
    if unknown:
        shown = ", ".join(present[:CATEGORIES_SHOWN]) + (", ..." if len(present) > CATEGORIES_SHOWN else "")
        raise ValueError(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(repr(c) for c in unknown)}: "
            f"catalog {catalog_uri} has {len(present)} categor{'y' if len(present) == 1 else 'ies'}: {shown}"
        )


def prepare_run(
    config_path: str,
    *,
    run_id: str,
    snapshot_date: dt.date,
    runs_uri: str | None = None,
    cache_uri: str | None = None,
    categories: list[str] | None = None,
    full_refresh: bool = False,
    k: int | None = None,
) -> RunRequest:
    """Check the request (categories against the catalog), freeze the config into the run directory, build plan's arguments."""
    config = with_k(load_config(config_path), k)
    base = config_directory(config_path)
    if not config.catalog_uri:
        raise ValueError(f"config {config_path} sets no catalog_uri; the scheduled refresh needs one")
    catalog_uri = storage.resolve(config.catalog_uri, base)
    root = runs_uri or (config.runs_uri and storage.resolve(config.runs_uri, base))
    if not root:
        raise ValueError("no runs location: set PSS_RUNS_URI or runs_uri in the config")
    root = storage.absolute(root)
    cache = cache_uri or config.cache.uri
    if not cache:
        if storage.is_s3(root):
            raise ValueError("runs on S3 need a shared embedding cache: set PSS_CACHE_URI=dynamodb://TABLE or cache.uri")
        cache = storage.join(root, "cache", "embeddings.sqlite")
    warehouse = None if storage.is_s3(root) else f"sqlite:///{storage.join(root, 'warehouse.sqlite')}"
    wanted = sorted(dict.fromkeys(c.strip() for c in categories or [] if c.strip()))
    # Before anything is written: a wrong name is refused here, not after plan has read and validated the catalog.
    check_categories(wanted, catalog_uri, config.catalog.default_category)
    run_id = safe_run_id(run_id)
    day = snapshot_date.isoformat()
    run_uri = storage.join(root, config.application, day, run_id)
    config_uri = freeze_config(run_uri, config)
    arguments = ["--config", config_uri, "--catalog", catalog_uri, "--snapshot-date", day, "--run-id", run_id, "--cache-uri", cache]
    for name in wanted:
        # One --category each: a name may hold a comma.
        arguments += ["--category", name]
    if full_refresh:
        arguments.append("--full-refresh")
    return RunRequest(
        application=config.application,
        snapshot_date=day,
        run_id=run_id,
        run_uri=run_uri,
        config_uri=config_uri,
        catalog_uri=catalog_uri,
        cache_uri=cache,
        warehouse_url=warehouse,
        categories=wanted,
        plan_arguments=arguments,
    )
