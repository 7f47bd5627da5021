"""Proves the AWS Batch contract on moto, which never runs containers: runs each submitted job's command itself.

For every job the operator submits, the harness runs `pss step <command>` once per array index with
AWS_BATCH_JOB_ARRAY_INDEX set (as Batch does for array children), in the environment the container
would get: the job's overrides plus credentials and endpoint for the moto S3/DynamoDB. If any child
fails, moto is told to fail the job (MOTO_SIMPLE_BATCH_FAIL_AFTER=0), so Airflow sees a FAILED job.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from pss_ops.orchestration.local import pss_command


@dataclass
class SubmittedJob:
    """One submit_job call and what its children did."""

    step: str
    command: list[str]
    array_size: int | None
    environment: dict[str, str]
    resources: dict[str, str]
    job_queue: str
    job_definition: str
    exit_codes: list[int] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return all(code == 0 for code in self.exit_codes)


@dataclass
class BatchHarness:
    """Installed over BatchOperator.submit_job; `before_step` hooks let a test break a step for real."""

    aws_environment: Mapping[str, str]
    jobs: list[SubmittedJob] = field(default_factory=list)
    before_step: dict[str, Callable[[SubmittedJob], None]] = field(default_factory=dict)

    def run_children(self, job: SubmittedJob) -> None:
        for index in range(job.array_size or 1):
            env = {**os.environ, **self.aws_environment, **job.environment}
            if job.array_size:
                env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
            done = subprocess.run(pss_command(job.command), env=env, capture_output=True, text=True, check=False)
            job.exit_codes.append(done.returncode)
            job.stderr.append(done.stderr[-3000:])

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow.providers.amazon.aws.operators.batch import BatchOperator

        original = BatchOperator.submit_job
        harness = self

        def submit_job(operator: Any, context: Any) -> Any:
            overrides = operator.container_overrides or {}
            job = SubmittedJob(
                step=overrides["command"][0],
                command=list(overrides["command"]),
                array_size=(operator.array_properties or {}).get("size"),
                environment={e["name"]: e["value"] for e in overrides.get("environment", [])},
                resources={r["type"]: r["value"] for r in overrides.get("resourceRequirements", [])},
                job_queue=operator.job_queue,
                job_definition=operator.job_definition,
            )
            harness.jobs.append(job)
            if job.step in harness.before_step:
                harness.before_step[job.step](job)
            harness.run_children(job)
            if job.succeeded:
                return original(operator, context)
            os.environ["MOTO_SIMPLE_BATCH_FAIL_AFTER"] = "0"
            try:
                return original(operator, context)
            finally:
                del os.environ["MOTO_SIMPLE_BATCH_FAIL_AFTER"]

        monkeypatch.setattr(BatchOperator, "submit_job", submit_job)
