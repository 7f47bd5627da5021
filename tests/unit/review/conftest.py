"""Runs for the review page's tests: the subset with markup injected into a title and a brand, run for real."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pss_ops import layout, storage
from pss_ops.config import AppConfig
from tests.conftest import SNAPSHOT, Run, Subset, with_cache

INJECT = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="session")
def injected(
    tmp_path_factory: pytest.TempPathFactory, ag_subset: Subset, ag_run: Run, small_config: AppConfig, shared_cache_path: Path
) -> Path:
    """pss run's OUT over the subset whose first item's title and second item's brand hold INJECT (no matcher)."""
    from pss_ops.orchestration.run import run_pipeline

    root = tmp_path_factory.mktemp("review_injected")
    frame = ag_subset.frame.copy()
    frame.loc[0, "title"] = f"{INJECT} {frame.loc[0, 'title']}"
    frame.loc[1, "brand"] = INJECT
    frame.to_csv(root / "catalog.csv", index=False)
    # A copy of the filled shared cache: only the changed title is embedded, and the shared cache stays as it was.
    cache = root / "cache" / "embeddings.sqlite"
    cache.parent.mkdir()
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{shared_cache_path}{suffix}").exists():
            shutil.copy(f"{shared_cache_path}{suffix}", f"{cache}{suffix}")
    out = root / "out"
    run_pipeline(
        with_cache(small_config, cache),
        catalog_uri=str(root / "catalog.csv"),
        out_dir=str(out),
        snapshot_date=SNAPSHOT,
        progress=lambda _: None,
    )
    return out


@pytest.fixture(scope="session")
def with_probabilities(injected: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the injected run's run directory whose published pairs carry a match_probability (from the score)."""
    run_dir = Path(storage.read_json(str(injected / "run_summary.json"))["run_uri"])
    copy = tmp_path_factory.mktemp("review_probabilities") / run_dir.name
    shutil.copytree(run_dir, copy)  # the plan manifest still names the original partitions, which exist
    table = storage.read_parquet(layout.similar_items(str(copy)))
    score = table.column("score").to_numpy()
    probability = np.clip((score - score.min()) / (score.max() - score.min()), 0.0, 1.0)
    index = table.schema.get_field_index("match_probability")
    table = table.set_column(index, "match_probability", pa.array(probability, pa.float64()))
    storage.write_parquet(layout.similar_items(str(copy)), table)
    return copy
