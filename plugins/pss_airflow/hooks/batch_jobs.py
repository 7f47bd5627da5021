"""What a failed AWS Batch job's containers exited with: a plain job's own, or each failed child's of an array job."""

from __future__ import annotations

from typing import Any


def _exit_code(job: dict[str, Any]) -> int | None:
    """A job (or job summary) container's exit code, from the job or, failing that, its last attempt."""
    code = (job.get("container") or {}).get("exitCode")
    if code is None and job.get("attempts"):
        code = (job["attempts"][-1].get("container") or {}).get("exitCode")
    return int(code) if code is not None else None


def failed_exit_codes(client: Any, job_id: str) -> list[int | None]:
    """Exit codes of the job's failed containers (a boto3 Batch client); None for one that recorded none (host lost)."""
    (job,) = client.describe_jobs(jobs=[job_id])["jobs"]
    if not (job.get("arrayProperties") or {}).get("size"):
        return [_exit_code(job)]
    # An array parent has no container of its own: its failed children say why.
    return [
        _exit_code(child)
        for page in client.get_paginator("list_jobs").paginate(arrayJobId=job_id, jobStatus="FAILED")
        for child in page["jobSummaryList"]
    ]
