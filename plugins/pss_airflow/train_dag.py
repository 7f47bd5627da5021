"""Training DAGs: one manually triggered `pss step train` DAG per application config; promotion stays a manual config edit."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from pss_airflow.dag_factory import _executor, catalog_config_paths
from pss_airflow.operators.pss_step import PssBatchStepOperator, PssLocalStepOperator
from pss_airflow.settings import PssSettings
from pss_ops import storage
from pss_ops.config import BatchStepResources, load_config
from pss_ops.learning.pairs import PAIR_SOURCE_PATTERN
from pss_ops.learning.settings import DEFAULT_HOLDOUT_FRACTION
from pss_ops.orchestration.training import comparison_text, default_registry_uri, resolve_runs_root, training_report_uri
from pss_ops.orchestration.training import prepare_training as prepare_training_run

log = logging.getLogger(__name__)

DOC_MD = """
### Train an embedding model: `{application}`

Trains a SiameseNet on this application's compound embedding from labelled pairs, compares it with the
compound embedding on held-out pairs and saves it in the model registry. **It never promotes the model**:
the `report` task logs the comparison and the one-line config change that would promote it
(`embedding_model:` in `{config_path}`), which is a reviewed, manual edit.

prepare_training → train (`pss step train`) → report

* **pairs**: `"<pairs.csv>:<task>"` entries (CSV columns `id_a,id_b[,label]`), one per task; at least one.
  Relative local paths are relative to the config file's directory.
* **registry_uri**: where the model is saved (default `<runs root>/models`).
* **holdout**: fraction of each task's query items held out for the comparison.
* **training_config**: a YAML of `TrainingConfig` fields, relative to the config file's directory: for the example
  configs, `training/siamese.yaml` is the recipe BENCHMARKS.md measures. Empty: the library defaults (the paper's 4 × 256).
  It is validated before training and frozen into the run directory.
* **seed**, **epochs**: override the training YAML's; empty: the YAML's, else the library default (seed 0). The one
  seed drives the held-out split, negative mining and training.

Runs go under `<runs root>/{application}/training/<run id>`. Executor: `{executor}`. Config: `{config_path}`.
"""


def train_task(
    step: str,
    run: Any,
    settings: PssSettings,
    executor: str,
    application: str,
    resources: BatchStepResources | None,
    uses_aws: bool,
) -> Any:
    """The one `pss step <step>` task of a training DAG over the prepared run: a Batch job, or a local worker."""
    common: dict[str, Any] = {
        "task_id": "train",
        "step": step,
        "run_uri": run["run_uri"],
        "extra_arguments": run["train_arguments"],
        "aws_conn_id": settings.aws_conn_id,
    }
    if executor == "batch":
        assert resources is not None
        return PssBatchStepOperator(
            **common,
            application=application,
            batch_resources=resources.model_dump(),
            deferrable=True,
            poll_interval=30,
        )
    return PssLocalStepOperator(**common, max_parallel=1, use_aws=uses_aws)


def build_training_dags(settings: PssSettings | None = None) -> list[DAG]:
    """A training DAG for every config in the config directory that names a catalog."""
    settings = settings or PssSettings.from_env()
    return [build_training_dag(path, settings) for path in catalog_config_paths(settings)]


def build_training_dag(config_path: str | Path, settings: PssSettings | None = None) -> DAG:
    """The manually triggered training DAG of one application config."""
    settings = settings or PssSettings.from_env()
    config_path = str(Path(config_path).resolve())
    config_dir = Path(config_path).parent
    config = load_config(config_path)
    runs_root = resolve_runs_root(config, config_path, settings.runs_uri)
    executor = _executor(settings, config.batch is not None, runs_root)
    catalog_uri = storage.resolve(config.catalog_uri, config_dir) if config.catalog_uri else None
    default_registry = default_registry_uri(runs_root) if runs_root else None
    uses_aws = any(u and u.startswith("s3://") for u in (runs_root, catalog_uri))
    resources = config.batch.resources("train") if config.batch else None
    # A GPU queue for `train` (batch.steps.train.gpus) means the trainer should use it.
    device = "cuda" if executor == "batch" and resources and resources.gpus else None

    def configure_s3(*uris: str) -> None:
        if uses_aws or any(u.startswith("s3://") for u in uris):
            from pss_airflow.hooks.pss_aws import PssAwsHook

            PssAwsHook(aws_conn_id=settings.aws_conn_id).configure_storage()

    with DAG(
        dag_id=f"pss_train_{config.application}",
        description=f"Train an embedding model for {config.application} (manual trigger; never promotes)",
        doc_md=DOC_MD.format(application=config.application, executor=executor, config_path=config_path),
        schedule=None,
        start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["pss", "training", config.application, executor],
        default_args={"owner": "pss", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
        params={
            "pairs": Param(
                [],
                type="array",
                minItems=1,
                items={"type": "string", "pattern": PAIR_SOURCE_PATTERN},
                title="Labelled pairs",
                description="'<pairs.csv>:<task>' entries (CSV id_a,id_b[,label]); relative paths are relative to the config file.",
            ),
            "registry_uri": Param(
                default_registry,
                type="string",
                minLength=1,
                description="Model registry the trained model is saved in (local path or s3://).",
            ),
            "holdout": Param(
                DEFAULT_HOLDOUT_FRACTION,
                type="number",
                exclusiveMinimum=0,
                maximum=0.9,
                description="Fraction of query items held out for evaluation.",
            ),
            "seed": Param(
                None,
                type=["null", "integer"],
                minimum=0,
                description="Seed of the split, negative mining and training; empty: the training config's, else 0.",
            ),
            "training_config": Param(
                None,
                type=["null", "string"],
                title="Training config",
                description="YAML of TrainingConfig fields, relative to the config file (for the example configs: "
                "training/siamese.yaml, the benchmarked recipe). Empty: library defaults (the paper's 4 x 256).",
            ),
            "epochs": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Maximum training epochs (early stopping may end sooner); empty: the training config's.",
            ),
        },
    ) as dag:

        @task(multiple_outputs=True)
        def prepare_training(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
            """Freeze the config and the training settings into the run directory; build `pss step train`'s arguments."""
            params = params or {}
            configure_s3(*(str(params.get(name) or "") for name in ("registry_uri", "training_config")), *(params.get("pairs") or []))
            return prepare_training_run(
                config_path,
                pairs=params.get("pairs") or [],
                run_id=str(run_id),
                runs_root=runs_root,
                registry_uri=params.get("registry_uri"),
                holdout=float(params.get("holdout", DEFAULT_HOLDOUT_FRACTION)),
                seed=params.get("seed"),
                epochs=params.get("epochs"),
                training_config=params.get("training_config"),
                device=device,
            ).as_dict()

        @task
        def report(run_uri: str, registry_uri: str) -> str:
            """Log the held-out comparison of the run's training report and return the model id; configs are left alone."""
            configure_s3(run_uri, registry_uri)
            result = storage.read_json(training_report_uri(run_uri))
            for line in comparison_text(result, config_path).splitlines():
                log.info("%s", line)
            return str(result["model_id"])

        run: Any = prepare_training()
        train = train_task("train", run, settings, executor, config.application, resources, uses_aws)
        train >> report(run["run_uri"], run["registry_uri"])
    return dag
