"""How a step is handed out: chunks of partitions and the `pss step` command each worker runs."""

from __future__ import annotations

import math
import re
from typing import Literal

from pss_ops import layout
from pss_ops.manifests import CatalogPlan, IndexPlan

MAX_MAPPED_TASKS = 1024  # Airflow's default max_map_length
MAX_ARRAY_SIZE = 10_000  # AWS Batch's array job limit

# Steps the orchestrators run once per partition of the named manifest; every other step runs once per run.
PARTITIONED_STEPS: dict[str, Literal["catalog", "index"]] = {"embed": "catalog", "build-index": "index", "search": "catalog"}


def partition_count(run_uri: str, kind: Literal["catalog", "index"]) -> int:
    """How many partitions the run's plan (catalog) or index plan (index) manifest holds."""
    if kind == "catalog":
        return len(CatalogPlan.read(layout.plan_manifest(run_uri)).partitions)
    return len(IndexPlan.read(layout.index_plan_manifest(run_uri)).partitions)


def chunk_partitions(count: int, chunk_size: int) -> list[dict[str, int]]:
    """Contiguous {offset, size} chunks covering 0..count-1; never more than Airflow maps."""
    if count == 0:
        return []
    size = max(chunk_size, math.ceil(count / MAX_MAPPED_TASKS))
    if size > MAX_ARRAY_SIZE:
        raise ValueError(f"{count} partitions do not fit {MAX_MAPPED_TASKS} array jobs of {MAX_ARRAY_SIZE}; use larger partitions")
    return [{"offset": start, "size": min(size, count - start)} for start in range(0, count, size)]


def step_arguments(step: str, run_uri: str, *, offset: int | None = None, array: bool = False) -> list[str]:
    """Arguments after `pss step`: an array child adds AWS_BATCH_JOB_ARRAY_INDEX to the offset."""
    arguments = [step, "--run-uri", run_uri]
    if offset is not None:
        arguments += ["--partition-offset" if array else "--partition", str(offset)]
    return arguments


def job_name(application: str, step: str, run_id: str, offset: int | None = None) -> str:
    """A valid Batch job name (letters, digits, - and _; at most 128 characters)."""
    raw = "-".join(str(part) for part in ("pss", application, step, run_id, offset) if part is not None)
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:128]
