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
from pss_ops.config import AppConfig, load_config

log = logging.getLogger(__name__)

# "<uri>:<task>": the task name is what follows the last colon and holds no '/', so s3://... needs an explicit task.
PAIR_PATTERN = r"^.+:[^:/\s]+$"

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
* **seed**, **epochs**: override the training YAML's (epochs empty: the YAML's, else the library default).

Runs go under `<runs root>/{application}/training/<run id>`. Executor: `{executor}`. Config: `{config_path}`.
"""


def _runs_root(settings: PssSettings, config: AppConfig, config_dir: Path) -> str | None:
    """PSS_RUNS_URI (relative to the working directory), else the config's runs_uri (relative to the config)."""
    if settings.runs_uri:
        return storage.resolve(settings.runs_uri, Path.cwd())
    return storage.resolve(config.runs_uri, config_dir) if config.runs_uri else None


def pair_argument(value: str, base: Path) -> str:
    """A validated '<uri>:<task>' pair source with a relative local uri resolved against base."""
    uri, sep, name = value.strip().rpartition(":")
    if not sep or not uri or not name or "/" in name or name != name.strip():
        raise ValueError(f"pairs entry {value!r} must be '<pairs.csv>:<task>', e.g. 'matches.csv:labelled'")
    return f"{storage.resolve(uri, base)}:{name}"


def training_settings(params: dict[str, Any], base: Path) -> dict[str, Any]:
    """The TrainingConfig fields a run trains with: the training_config YAML's, then the epochs and seed params.

    Validated here, so a bad file or field fails in prepare_training, naming the file, before any Batch job starts.
    """
    from pydantic import ValidationError

    from pss_ops.learning.train import TrainingConfig

    source = params.get("training_config")
    settings: dict[str, Any] = {}
    if source:
        import yaml

        uri = storage.resolve(str(source), base)
        settings = yaml.safe_load(storage.read_text(uri)) or {}
        if not isinstance(settings, dict):
            raise ValueError(f"training config {uri} must be a YAML mapping of TrainingConfig fields")
    else:
        uri = "params"
    if params.get("epochs") is not None:
        settings["epochs"] = int(params["epochs"])
    settings["seed"] = int(params.get("seed") or 0)
    try:
        TrainingConfig.model_validate(settings)
    except ValidationError as error:
        raise ValueError(f"training config {uri}: {error}") from error
    return settings


def _metric_lines(compound: dict[str, Any], model: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for name in [*compound, *(k for k in model if k not in compound)]:
        before, after = compound.get(name), model.get(name)
        if type(before) is int and type(after) is int:
            lines.append(f"{indent}{name:<14} {before:>9d} → {after:>9d}")
        elif isinstance(before, int | float) and isinstance(after, int | float) and not isinstance(before, bool):
            lines.append(f"{indent}{name:<14} {before:>9.4f} → {after:>9.4f}  ({after - before:+.4f})")
        else:
            lines.append(f"{indent}{name:<14} {before!s:>9} → {after!s:>9}")
    return lines


def comparison_text(report: dict[str, Any], config_path: str) -> str:
    """The training report as a human-readable compound-vs-model comparison and the promotion hint."""
    holdout = report.get("holdout") or {}
    compound, model = holdout.get("compound") or {}, holdout.get("model") or {}
    lines = [f"model {report['model_id']} saved in {report.get('registry_uri')} (NOT promoted)", "held-out pairs: compound → model"]
    if any(isinstance(v, dict) for v in (*compound.values(), *model.values())):
        for name in [*compound, *(k for k in model if k not in compound)]:
            lines.append(f"  task {name}:")
            lines += _metric_lines(compound.get(name) or {}, model.get(name) or {}, "    ")
    else:
        lines += _metric_lines(compound, model, "  ")
    lines += [
        f"to promote it, edit {config_path} (a reviewed change; this DAG never does it):",
        "  embedding_model:",
        f"    registry_uri: {report.get('registry_uri')}",
        f"    model_id: {report['model_id']}",
    ]
    return "\n".join(lines)


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
    runs_root = _runs_root(settings, config, config_dir)
    executor = _executor(settings, config.batch is not None, runs_root)
    catalog_uri = storage.resolve(config.catalog_uri, config_dir) if config.catalog_uri else None
    default_registry = storage.join(runs_root, "models") if runs_root else None
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
                items={"type": "string", "pattern": PAIR_PATTERN},
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
                0.3, type="number", exclusiveMinimum=0, maximum=0.9, description="Fraction of query items held out for evaluation."
            ),
            "seed": Param(0, type="integer", minimum=0, description="Seed of the split, negative mining and training."),
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
            """Freeze the config and a training YAML into the run directory; build `pss step train`'s arguments."""
            import yaml

            from pss_ops import storage
            from pss_ops.config import dump_config
            from pss_ops.orchestration.request import safe_run_id

            params = params or {}
            pairs = [pair_argument(p, config_dir) for p in params.get("pairs") or []]
            if not pairs:
                raise ValueError("no training pairs: trigger with pairs = ['<pairs.csv>:<task>', ...] (CSV columns id_a,id_b[,label])")
            if not runs_root:
                raise ValueError("no runs location: set PSS_RUNS_URI or runs_uri in the config")
            if not catalog_uri:
                raise ValueError(f"config {config_path} sets no catalog_uri")
            registry = storage.resolve(params.get("registry_uri") or default_registry or "", config_dir)
            configure_s3(registry, *pairs, str(params.get("training_config") or ""))
            training = training_settings(params, config_dir)
            # Models are trained on the compound embedding, also when a model is already promoted.
            frozen = load_config(config_path).model_copy(update={"embedding_model": None})
            run_uri = storage.join(runs_root, config.application, "training", safe_run_id(str(run_id)))
            config_uri = storage.join(run_uri, "config.yaml")
            storage.write_text(config_uri, dump_config(frozen))
            if device:
                training["device"] = device
            training_uri = storage.join(run_uri, "training.yaml")
            storage.write_text(training_uri, yaml.safe_dump(training, sort_keys=False))
            arguments = ["--config", config_uri, "--catalog", catalog_uri]
            for pair in pairs:
                arguments += ["--pairs", pair]
            arguments += ["--registry", registry, "--holdout", str(float(params.get("holdout", 0.3)))]
            arguments += ["--seed", str(training["seed"]), "--training-config", training_uri]
            log.info("training run %s: pss step train %s", run_uri, " ".join(arguments))
            return {"run_uri": run_uri, "registry_uri": registry, "train_arguments": arguments}

        @task
        def report(run_uri: str, registry_uri: str) -> str:
            """Log the held-out comparison of RUN/train/report.json and return the model id; configs are left alone."""
            from pss_ops import storage

            configure_s3(run_uri, registry_uri)
            result = storage.read_json(storage.join(run_uri, "train", "report.json"))
            for line in comparison_text(result, config_path).splitlines():
                log.info("%s", line)
            return str(result["model_id"])

        run: Any = prepare_training()
        common: dict[str, Any] = {
            "task_id": "train",
            "step": "train",
            "run_uri": run["run_uri"],
            "extra_arguments": run["train_arguments"],
            "aws_conn_id": settings.aws_conn_id,
        }
        if executor == "batch":
            assert resources is not None
            train: Any = PssBatchStepOperator(
                **common,
                application=config.application,
                batch_resources=resources.model_dump(),
                deferrable=True,
                poll_interval=30,
            )
        else:
            train = PssLocalStepOperator(**common, max_parallel=1, use_aws=uses_aws)
        train >> report(run["run_uri"], run["registry_uri"])
    return dag
