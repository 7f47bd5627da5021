"""Operators that run one `pss step` over a chunk of partitions: locally, or as an AWS Batch array job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from pss_airflow.hooks.pss_aws import PssAwsHook
from pss_airflow.links import RunReportLink, RunResultsLink

# Consumer DAGs schedule on this; each event names the (application, date, category) partitions published.
SIMILAR_ITEMS_ASSET = Asset(name="similar_items", uri="pss://warehouse/similar_items", group="pss")

# A mapped task's name in the grid and graph (instead of `embed [0]`): the partitions its chunk covers.
PARTITIONS_MAP_INDEX_TEMPLATE = "{{ task.partition_range }}"


def _partitions(step: str, chunk: dict[str, int] | None) -> tuple[int | None, int]:
    from pss_ops.orchestration.fanout import PARTITIONED_STEPS

    if step not in PARTITIONED_STEPS:
        return None, 1
    if not chunk:
        raise ValueError(f"step {step!r} runs per partition and needs a chunk {{offset, size}}")
    return int(chunk["offset"]), int(chunk["size"])


def partition_range(chunk: dict[str, int] | None) -> str:
    """'partitions 0–3' for chunk {offset: 0, size: 4}; 'partition 4' for one; '' without a chunk."""
    if not chunk:
        return ""
    first, size = int(chunk["offset"]), int(chunk["size"])
    return f"partition {first}" if size == 1 else f"partitions {first}–{first + size - 1}"


def input_error_failure(message: str) -> AirflowFailException:
    """A worker said its input is wrong (exit 2): fail the task now, since retries would fail alike."""
    return AirflowFailException(f"{message}\n(input error, exit status 2: not retried; fix the input and trigger again)")


class _PssStep:
    """What both executors share: the publish step's warehouse URL and asset event, the report step's summary."""

    step: str
    run_uri: str
    chunk: dict[str, int] | None
    aws_conn_id: str | None
    warehouse_conn_id: str | None
    default_warehouse_url: str | None
    environment: dict[str, str]
    log: Any

    @property
    def partition_range(self) -> str:
        """The partitions this task covers, for map_index_template."""
        return partition_range(self.chunk)

    def _step_environment(self) -> dict[str, str]:
        env = {k: v for k, v in self.environment.items() if v}
        if self.step == "publish":
            from pss_airflow.hooks.warehouse import warehouse_url

            # Read at run time, never at parse time: the URL may carry a password.
            url = (self.warehouse_conn_id and warehouse_url(self.warehouse_conn_id)) or self.default_warehouse_url
            if url:
                env["PSS_WAREHOUSE_URL"] = url
        return env

    def _configure_storage(self) -> None:
        from pss_ops import storage

        if storage.is_s3(self.run_uri):
            PssAwsHook(aws_conn_id=self.aws_conn_id).configure_storage()

    def _after_success(self, context: Context) -> None:
        if self.step == "publish":
            self._emit_similar_items_event(context)
        elif self.step == "report":
            self._log_run_summary()

    def _emit_similar_items_event(self, context: Context) -> None:
        from pss_ops import layout
        from pss_ops.manifests import PublishResult, RunContext
        from pss_ops.reporting import page_uri

        self._configure_storage()
        run = RunContext.read(layout.context(self.run_uri))
        published = PublishResult.read(layout.publish_manifest(self.run_uri))
        event = context["outlet_events"][SIMILAR_ITEMS_ASSET]
        event.extra = {
            "application": run.application,
            "snapshot_date": run.snapshot_date.isoformat(),
            "categories": list(published.categories),
            "rows": published.rows,
            "rows_replaced": published.rows_replaced,
            # Redacted by the publish step: no password reaches the metadata DB.
            "warehouse": published.warehouse,
            "table": published.table,
            "run_uri": run.run_uri,
            "report": page_uri(run.run_uri),
            "parquet": published.parquet_uri,
        }
        event.add_partitions([f"{run.application}/{run.snapshot_date.isoformat()}/{c}"[:250] for c in published.categories])
        self.log.info(
            "published %d rows of %s %s (%d categories) to %s, table %s",
            published.rows,
            run.application,
            run.snapshot_date,
            len(published.categories),
            published.warehouse,
            published.table,
        )

    def _log_run_summary(self) -> None:
        """What `pss summary` prints (counts, recall, seconds, outputs, warehouse, report page) in the report task's log."""
        import contextlib
        import io

        from pss_ops import layout, storage
        from pss_ops.cli import _print_summary

        self._configure_storage()
        summary_uri = layout.run_summary(self.run_uri)
        summary = storage.read_json(summary_uri)
        printed = io.StringIO()
        # The CLI's own formatting, so the task log and `pss summary` read alike; it prints, hence the redirect.
        with contextlib.redirect_stdout(printed):
            _print_summary(summary, f"{summary['publish']['parquet_uri']}; summary {summary_uri}")
        for line in printed.getvalue().splitlines():
            self.log.info("%s", line)


class PssLocalStepOperator(_PssStep, BaseOperator):
    """Run `pss step STEP` on this machine, one process per partition of the chunk, in parallel."""

    template_fields: Sequence[str] = ("run_uri", "chunk", "extra_arguments", "environment", "default_warehouse_url")
    operator_extra_links = (RunReportLink(), RunResultsLink())

    def __init__(
        self,
        *,
        step: str,
        run_uri: str,
        chunk: dict[str, int] | None = None,
        extra_arguments: Sequence[str] = (),
        max_parallel: int = 2,
        aws_conn_id: str | None = "aws_default",
        use_aws: bool = False,
        environment: dict[str, str] | None = None,
        warehouse_conn_id: str | None = None,
        default_warehouse_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.warehouse_conn_id = warehouse_conn_id
        self.default_warehouse_url = default_warehouse_url
        self.step = step
        self.run_uri = run_uri
        self.chunk = chunk
        self.extra_arguments = extra_arguments
        self.max_parallel = max_parallel
        self.aws_conn_id = aws_conn_id
        self.use_aws = use_aws
        self.environment = environment or {}

    def execute(self, context: Context) -> None:
        from pss_ops.orchestration.fanout import step_arguments
        from pss_ops.orchestration.local import StepFailedError, pss_command, run_commands

        offset, size = _partitions(self.step, self.chunk)
        if offset is None:
            commands = [pss_command([*step_arguments(self.step, self.run_uri), *self.extra_arguments])]
        else:
            commands = [pss_command(step_arguments(self.step, self.run_uri, offset=p)) for p in range(offset, offset + size)]
        env = self._step_environment()
        if self.use_aws:
            env.update(PssAwsHook(aws_conn_id=self.aws_conn_id).step_environment())
        self.log.info("pss step %s: %d command(s), up to %d at a time", self.step, len(commands), self.max_parallel)
        try:
            run_commands(commands, max_parallel=self.max_parallel, env=env)
        except StepFailedError as err:
            if err.input_error:
                raise input_error_failure(str(err)) from err
            raise
        self._after_success(context)


class PssBatchStepOperator(_PssStep, BatchOperator):
    """Submit `pss step STEP` as one AWS Batch job; a chunk of several partitions becomes an array job.

    Each array child reads AWS_BATCH_JOB_ARRAY_INDEX and adds it to --partition-offset.
    """

    template_fields: Sequence[str] = (
        *BatchOperator.template_fields,
        "run_uri",
        "chunk",
        "extra_arguments",
        "environment",
        "default_warehouse_url",
    )
    operator_extra_links = (*BatchOperator.operator_extra_links, RunReportLink(), RunResultsLink())

    def __init__(
        self,
        *,
        step: str,
        run_uri: str,
        application: str,
        batch_resources: dict[str, Any],
        chunk: dict[str, int] | None = None,
        extra_arguments: Sequence[str] = (),
        environment: dict[str, str] | None = None,
        warehouse_conn_id: str | None = None,
        default_warehouse_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            job_name=f"pss-{application}-{step}",
            job_queue=batch_resources["job_queue"],
            job_definition=batch_resources["job_definition"],
            **kwargs,
        )
        self.warehouse_conn_id = warehouse_conn_id
        self.default_warehouse_url = default_warehouse_url
        self.step = step
        self.run_uri = run_uri
        self.application = application
        self.batch_resources = batch_resources
        self.chunk = chunk
        self.extra_arguments = extra_arguments
        self.environment = environment or {}

    def _container_overrides(self, offset: int | None, array: bool) -> dict[str, Any]:
        from pss_ops.orchestration.fanout import step_arguments

        requirements = [
            {"type": "VCPU", "value": str(self.batch_resources.get("vcpus", 1))},
            {"type": "MEMORY", "value": str(self.batch_resources.get("memory_mib", 2048))},
        ]
        if self.batch_resources.get("gpus"):
            requirements.append({"type": "GPU", "value": str(self.batch_resources["gpus"])})
        return {
            # The image's entry point is `pss step`, so the command is the step's arguments.
            "command": [*step_arguments(self.step, self.run_uri, offset=offset, array=array), *self.extra_arguments],
            "environment": [{"name": k, "value": v} for k, v in sorted(self._step_environment().items())],
            "resourceRequirements": requirements,
        }

    def _failed_job(self, err: AirflowException) -> AirflowException:
        """The job's failure, as AirflowFailException when every failed container exited 2 (wrong input)."""
        from pss_airflow.hooks.batch_jobs import failed_exit_codes
        from pss_ops.orchestration.local import INPUT_ERROR_EXIT

        if not self.job_id or isinstance(err, AirflowFailException):
            return err
        codes = failed_exit_codes(self.hook.client, self.job_id)
        self.log.info("AWS Batch job (%s) failed; exit codes of its failed containers: %s", self.job_id, codes)
        if codes and all(code == INPUT_ERROR_EXIT for code in codes):
            return input_error_failure(f"pss: error: AWS Batch job {self.job_id} (pss step {self.step}) failed: {err}")
        return err

    def execute(self, context: Context) -> str | None:
        from pss_ops.orchestration.fanout import job_name

        offset, size = _partitions(self.step, self.chunk)
        # Batch arrays need at least 2 children; a single partition is a plain job.
        array = size > 1
        self.array_properties = {"size": size} if array else None
        self.container_overrides = self._container_overrides(offset, array)
        self.job_name = job_name(self.application, self.step, context["run_id"], offset)
        try:
            job_id = super().execute(context)
        except AirflowException as err:
            raise self._failed_job(err) from err
        # Finished only if it completed without deferring or the operator waited; else it was just submitted.
        if self.deferrable or self.wait_for_completion:
            self._after_success(context)
        return job_id

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        try:
            job_id = super().execute_complete(context, event)
        except AirflowException as err:
            raise self._failed_job(err) from err
        self._after_success(context)
        return job_id
