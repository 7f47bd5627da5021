"""Airflow helpers: the real DAG file parsed with PSS settings for a test config (metadata DB fixture: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pss_ops.config import AppConfig
from tests.conftest import ROOT, write_config

SETTINGS_ENV = {
    "executor": "PSS_EXECUTOR",
    "runs_uri": "PSS_RUNS_URI",
    "cache_uri": "PSS_CACHE_URI",
    "local_parallelism": "PSS_LOCAL_PARALLELISM",
    "local_chunk_size": "PSS_LOCAL_CHUNK_SIZE",
}


def load_dag(config: AppConfig, directory: Path, monkeypatch: pytest.MonkeyPatch, dag_id: str | None = None, **settings: Any) -> Any:
    """Parse dags/ with PSS_CONFIG_DIR holding only this config, as the dag-processor (and dag.test) will; default: its similarity DAG."""
    from airflow.dag_processing.dagbag import DagBag

    config_dir = directory / "configs"
    config_dir.mkdir(exist_ok=True)
    write_config(config, config_dir / f"{config.application}.yaml")
    monkeypatch.setenv("PSS_CONFIG_DIR", str(config_dir))
    for name, variable in SETTINGS_ENV.items():
        if name in settings:
            monkeypatch.setenv(variable, str(settings[name]))
        else:
            monkeypatch.delenv(variable, raising=False)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id or f"pss_{config.application}"]
