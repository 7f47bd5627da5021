"""What an orchestrator needs before `pss step train`: the run's URI, its frozen settings and the step's arguments."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pss_ops import storage
from pss_ops.config import AppConfig, load_config
from pss_ops.learning.pairs import format_pair_source, parse_pair_source
from pss_ops.learning.settings import DEFAULT_HOLDOUT_FRACTION, dump_training_config, read_training_config
from pss_ops.orchestration.request import config_directory, freeze_config, safe_run_id

log = logging.getLogger(__name__)

# The model registry's folder under the runs root, when a run names no registry.
REGISTRY_DIR = "models"


@dataclass(frozen=True)
class TrainingRequest:
    """One orchestrated training run, as plain data an Airflow task can pass on through XCom."""

    application: str
    run_id: str
    run_uri: str
    config_uri: str
    training_uri: str
    catalog_uri: str
    registry_uri: str
    pairs: list[str]
    holdout: float
    seed: int
    train_arguments: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The request as a JSON-able dict."""
        return asdict(self)


def resolve_runs_root(config: AppConfig, config_path: str, runs_uri: str | None = None) -> str | None:
    """runs_uri (e.g. PSS_RUNS_URI; relative to the working directory), else the config's (relative to the config)."""
    if runs_uri:
        return storage.absolute(runs_uri)
    return storage.resolve(config.runs_uri, config_directory(config_path)) if config.runs_uri else None


def default_registry_uri(root: str) -> str:
    """The model registry of a runs root."""
    return storage.join(root, REGISTRY_DIR)


def training_report_uri(run_uri: str) -> str:
    """Where `pss step train` writes its report in a training run."""
    return storage.join(run_uri, "train", "report.json")


def prepare_training(
    config_path: str,
    *,
    pairs: Sequence[str],
    run_id: str,
    runs_root: str | None,
    registry_uri: str | None = None,
    holdout: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int | None = None,
    epochs: int | None = None,
    training_config: str | None = None,
    device: str | None = None,
) -> TrainingRequest:
    """Check a training run's inputs, freeze its config and training settings into the run directory, build the step's arguments.

    pairs are '<pairs.csv>:<task>' entries. Relative local paths (pairs, registry_uri, training_config) are relative to
    the config file's directory. seed, epochs and device override the training config's (read_training_config's rule);
    the registry defaults to the runs root's. Every input is checked here, before a training job starts.
    """
    base = config_directory(config_path)
    sources = [parse_pair_source(entry, base=base, default_task=None) for entry in pairs]
    if not sources:
        raise ValueError("no training pairs: give pairs = ['<pairs.csv>:<task>', ...] (CSV columns id_a,id_b[,label])")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if not runs_root:
        raise ValueError("no runs location: set PSS_RUNS_URI or runs_uri in the config")
    # Models are trained on the compound embedding, also when a model is already promoted.
    config = load_config(config_path).model_copy(update={"embedding_model": None})
    if not config.catalog_uri:
        raise ValueError(f"config {config_path} sets no catalog_uri")
    catalog_uri = storage.resolve(config.catalog_uri, base)
    registry = storage.resolve(registry_uri, base) if registry_uri else default_registry_uri(runs_root)
    training = read_training_config(training_config, base=base, epochs=epochs, seed=seed, device=device)

    run_id = safe_run_id(run_id)
    run_uri = storage.join(runs_root, config.application, "training", run_id)
    config_uri = freeze_config(run_uri, config)
    training_uri = storage.join(run_uri, "training.yaml")
    storage.write_text(training_uri, dump_training_config(training))
    pair_arguments = [format_pair_source(uri, task) for uri, task in sources]
    arguments = ["--config", config_uri, "--catalog", catalog_uri]
    for pair in pair_arguments:
        arguments += ["--pairs", pair]
    # --seed repeats the frozen YAML's seed: `pss step train` then reads the same one whichever it prefers.
    arguments += ["--registry", registry, "--holdout", str(float(holdout)), "--seed", str(training.seed), "--training-config", training_uri]
    log.info("training run %s: pss step train %s", run_uri, " ".join(arguments))
    return TrainingRequest(
        application=config.application,
        run_id=run_id,
        run_uri=run_uri,
        config_uri=config_uri,
        training_uri=training_uri,
        catalog_uri=catalog_uri,
        registry_uri=registry,
        pairs=pair_arguments,
        holdout=float(holdout),
        seed=training.seed,
        train_arguments=arguments,
    )


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
    """A training report as a human-readable compound-vs-model comparison and the promotion hint."""
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
        f"to promote it, edit {config_path} (a reviewed change; training never does it):",
        "  embedding_model:",
        f"    registry_uri: {report.get('registry_uri')}",
        f"    model_id: {report['model_id']}",
    ]
    return "\n".join(lines)
