"""Shared fixtures: a real Amazon–Google catalog subset, a small near-identical config and one cached pipeline run."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
import yaml

from pss_ops.config import AppConfig, load_config

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its settings when first imported, so the test instance is configured here, before
# any test module imports it: a throwaway AIRFLOW_HOME with a SQLite metadata DB, this repo's DAGs.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="pss-airflow-home-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ.pop("AIRFLOW_CONN_AWS_DEFAULT", None)
sys.path.insert(0, str(ROOT / "plugins"))
DATA = ROOT / "data" / "amazon_google"
EXAMPLE_CONFIG = ROOT / "examples" / "near_identical.yaml"
CATEGORIES = ("group_a", "group_b")
SNAPSHOT = dt.date(2024, 5, 1)
SEED = 20240501


@dataclass(frozen=True)
class Subset:
    """The subset catalog on disk, its frame, and the true pairs whose two items are both in it."""

    catalog: Path
    frame: pd.DataFrame
    matches_path: Path
    matches: pd.DataFrame


def _bucket(key: str) -> str:
    return CATEGORIES[hashlib.sha256(key.encode()).digest()[0] % 2]


def _categories_by_component(items: list[str], pairs: pd.DataFrame) -> dict[str, str]:
    """Both items of a true pair (and everything linked to them) share one category."""
    parent = {i: i for i in items}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs["id_a"], pairs["id_b"]):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {i: _bucket(find(i)) for i in items}


@pytest.fixture(scope="session")
def ag_subset(tmp_path_factory: pytest.TempPathFactory) -> Subset:
    """~250 true pairs (both items) plus ~250 random other rows of the real catalog, with a category column."""
    catalog = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    matches = pd.read_csv(DATA / "matches.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(SEED)
    picked = matches.iloc[np.sort(rng.choice(len(matches), size=250, replace=False))]
    pair_items = set(picked["id_a"]) | set(picked["id_b"])
    others = catalog.loc[~catalog["item_id"].isin(pair_items), "item_id"].to_numpy()
    extra = set(rng.choice(others, size=250, replace=False))
    keep = pair_items | extra
    frame = catalog[catalog["item_id"].isin(keep)].reset_index(drop=True)
    sub_matches = matches[matches["id_a"].isin(keep) & matches["id_b"].isin(keep)].reset_index(drop=True)
    by_component = _categories_by_component(frame["item_id"].tolist(), sub_matches)
    frame.insert(2, "category", [by_component[i] for i in frame["item_id"]])

    directory = tmp_path_factory.mktemp("ag_subset")
    frame.to_csv(directory / "catalog.csv", index=False)
    sub_matches.to_csv(directory / "matches.csv", index=False)
    return Subset(directory / "catalog.csv", frame, directory / "matches.csv", sub_matches)


@pytest.fixture(scope="session")
def small_config() -> AppConfig:
    """near_identical with small partitions, so every scope has several catalog and index partitions (HNSW, untuned:
    the tuner would hold a scope this small in one exact partition)."""
    config = load_config(EXAMPLE_CONFIG)
    return config.model_copy(
        update={
            "catalog": config.catalog.model_copy(update={"partition_size": 200}),
            "index": config.index.model_copy(update={"partition_size": 150, "tuning": None}),
            "quality": config.quality.model_copy(update={"recall_sample": 100}),
        }
    )


@pytest.fixture(scope="session")
def shared_cache_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedding cache every run of the session shares; ag_run fills it first."""
    return tmp_path_factory.mktemp("shared_cache") / "embeddings.sqlite"


def with_cache(config: AppConfig, cache_path: Path | str) -> AppConfig:
    """The config with its embedding cache pointed at cache_path."""
    return config.model_copy(update={"cache": config.cache.model_copy(update={"uri": str(cache_path)})})


def write_config(config: AppConfig, path: Path) -> Path:
    """Write a config as YAML, for the CLI."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


class Run(NamedTuple):
    """One finished pipeline run: unpacks as (summary, out_dir)."""

    summary: dict[str, Any]
    out_dir: Path


@pytest.fixture(scope="session")
def ag_run(tmp_path_factory: pytest.TempPathFactory, ag_subset: Subset, small_config: AppConfig, shared_cache_path: Path) -> Run:
    """The pipeline run once, cold, on the subset; its cache is shared by later runs."""
    from pss_ops.orchestration.run import run_pipeline

    assert not shared_cache_path.exists(), "ag_run must be the first run to use the shared cache"
    out_dir = tmp_path_factory.mktemp("ag_run")
    summary = run_pipeline(
        with_cache(small_config, shared_cache_path),
        catalog_uri=str(ag_subset.catalog),
        out_dir=str(out_dir),
        snapshot_date=SNAPSHOT,
        progress=lambda _: None,
    )
    return Run(summary, out_dir)


@pytest.fixture(scope="session")
def warm_config(ag_run: Run, small_config: AppConfig, shared_cache_path: Path) -> AppConfig:
    """small_config on the shared cache, after ag_run has filled it (do not change catalog content with it)."""
    return with_cache(small_config, shared_cache_path)


@pytest.fixture(scope="session")
def matched_run(ag_run: Run, ag_subset: Subset, warm_config: AppConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset run again with a matcher trained on half its items' pairs (labelled from the true matches), as make demo does.

    Shared by the pages that show match probabilities (the review page, the run report).
    """
    import subprocess

    from pss_ops.config import MatcherRef
    from pss_ops.matching.training import train_matcher
    from pss_ops.orchestration.run import run_pipeline

    root = tmp_path_factory.mktemp("review_matched")
    argv = [sys.executable, str(ROOT / "examples" / "labels_from_truth.py"), "--pairs", str(ag_run.out_dir / "similar_items.parquet")]
    subprocess.run([*argv, "--truth", str(ag_subset.matches_path), "--out-dir", str(root / "labels")], check=True, capture_output=True)
    report = train_matcher(
        warm_config,
        catalog_uri=str(ag_subset.catalog),
        pairs_uri=str(root / "labels" / "train_pairs.csv"),
        registry_uri=str(root / "registry"),
        progress=lambda _: None,
    )
    config = warm_config.model_copy(update={"matcher": MatcherRef(registry_uri=str(root / "registry"), model_id=report["matcher_id"])})
    run_pipeline(config, catalog_uri=str(ag_subset.catalog), out_dir=str(root / "out"), snapshot_date=SNAPSHOT, progress=lambda _: None)
    return root / "out"


@pytest.fixture
def private_cache(ag_run: Run, shared_cache_path: Path, tmp_path: Path) -> Path:
    """A copy of the filled shared cache that a test may change freely."""
    target = tmp_path / "cache" / "embeddings.sqlite"
    target.parent.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{shared_cache_path}{suffix}")
        if source.exists():
            shutil.copy(source, f"{target}{suffix}")
    return target


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh Airflow metadata DB (SQLite) in the session's AIRFLOW_HOME, set above."""
    from airflow.utils import db

    db.resetdb()
