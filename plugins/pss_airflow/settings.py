"""Deployment settings, read from the environment when a DAG is built (never at import time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Executor = Literal["local", "batch"]


@dataclass(frozen=True)
class PssSettings:
    """Where configs, runs and the cache live, and how steps are executed."""

    config_dir: str
    runs_uri: str | None
    cache_uri: str | None
    executor: Executor | None
    local_parallelism: int
    local_chunk_size: int
    aws_conn_id: str
    warehouse_conn_id: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PssSettings:
        """PSS_* environment variables, with laptop-friendly defaults."""
        env = os.environ if environ is None else environ
        executor = env.get("PSS_EXECUTOR") or None
        if executor not in (None, "local", "batch"):
            raise ValueError(f"PSS_EXECUTOR must be 'local' or 'batch', got {executor!r}")
        repo = Path(__file__).resolve().parents[2]
        return cls(
            config_dir=env.get("PSS_CONFIG_DIR", str(repo / "examples")),
            runs_uri=env.get("PSS_RUNS_URI") or None,
            cache_uri=env.get("PSS_CACHE_URI") or None,
            executor=executor,  # type: ignore[arg-type]
            local_parallelism=int(env.get("PSS_LOCAL_PARALLELISM", "2")),
            local_chunk_size=int(env.get("PSS_LOCAL_CHUNK_SIZE", "4")),
            aws_conn_id=env.get("PSS_AWS_CONN_ID", "aws_default"),
            warehouse_conn_id=env.get("PSS_WAREHOUSE_CONN_ID", "pss_warehouse"),
        )
