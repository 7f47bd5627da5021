"""What an orchestrator needs before `pss step train-matcher`: checked labels in the run directory, the step's arguments, the report."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from pss_ops import storage
from pss_ops.config import load_config
from pss_ops.orchestration.request import config_directory, freeze_config, safe_run_id

log = logging.getLogger(__name__)

# The matcher registry's folder under the runs root, when a run names no registry.
MATCHER_REGISTRY_DIR = "matchers"
# A run's folder under <runs root>/<application>/.
RUNS_DIR = "train_matcher"


@dataclass(frozen=True)
class MatcherTrainingRequest:
    """One orchestrated matcher-training run, as plain data an Airflow task can pass on through XCom."""

    application: str
    run_id: str
    run_uri: str
    config_uri: str
    catalog_uri: str
    # The labels as given, and the copy in the run directory that is trained on.
    pairs_source: str
    pairs_uri: str
    registry_uri: str
    seed: int
    train_arguments: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The request as a JSON-able dict."""
        return asdict(self)


def default_matcher_registry_uri(root: str) -> str:
    """The matcher registry of a runs root."""
    return storage.join(root, MATCHER_REGISTRY_DIR)


def matcher_work_uri(run_uri: str) -> str:
    """Where `pss step train-matcher` keeps the search run its candidate pairs come from (`pss train-matcher --out`)."""
    return storage.join(run_uri, "work")


def matcher_report_uri(run_uri: str) -> str:
    """Where `pss step train-matcher` writes its report (`pss train-matcher --report`)."""
    return storage.join(run_uri, "report.json")


def prepare_matcher_training(
    config_path: str,
    *,
    pairs: str,
    run_id: str,
    runs_root: str | None,
    registry_uri: str | None = None,
    seed: int = 0,
    cache_uri: str | None = None,
) -> MatcherTrainingRequest:
    """Check a matcher-training run's inputs, freeze its config and labels into the run directory, build the step's arguments.

    Relative local paths (pairs, registry_uri) are relative to the config file's directory; the registry defaults to the
    runs root's. cache_uri (e.g. PSS_CACHE_URI) replaces the config's embedding cache, so the search reuses the daily runs'
    vectors. The labels are read and checked in full here (LabelError names the row), before any search starts.
    """
    # Imported here: the matcher's trees (lightgbm) load when a run is prepared, not when a DAG file is parsed.
    from pss_ops.matching.training import read_labelled_pairs

    base = config_directory(config_path)
    if not runs_root:
        raise ValueError("no runs location: set PSS_RUNS_URI or runs_uri in the config")
    config = load_config(config_path)
    if not config.catalog_uri:
        raise ValueError(f"config {config_path} sets no catalog_uri")
    catalog_uri = storage.resolve(config.catalog_uri, base)
    cache = cache_uri or config.cache.uri
    if not cache and storage.is_s3(runs_root):
        # `pss train-matcher` would otherwise put a SQLite cache in its work folder, which cannot live on S3.
        raise ValueError("runs on S3 need a shared embedding cache: set PSS_CACHE_URI=dynamodb://TABLE or cache.uri")
    if cache:
        config = config.model_copy(update={"cache": config.cache.model_copy(update={"uri": cache})})
    source = storage.resolve(pairs, base)
    if not storage.exists(source):
        raise FileNotFoundError(f"labelled pairs {source} do not exist (pairs={pairs!r}; relative paths start at {base})")
    labelled = read_labelled_pairs(source)
    registry = storage.resolve(registry_uri, base) if registry_uri else default_matcher_registry_uri(runs_root)

    run_id = safe_run_id(run_id)
    run_uri = storage.join(runs_root, config.application, RUNS_DIR, run_id)
    config_uri = freeze_config(run_uri, config)
    # The run keeps the labels it trained on, where a Batch job can read them even when they were given as a local path.
    pairs_uri = storage.join(run_uri, "pairs.csv")
    storage.copy(source, pairs_uri)
    arguments = ["--config", config_uri, "--catalog", catalog_uri, "--pairs", pairs_uri, "--registry", registry, "--seed", str(seed)]
    log.info(
        "matcher-training run %s: %d labelled pairs (%d matches) from %s; pss step train-matcher %s",
        run_uri,
        len(labelled),
        int(labelled["label"].sum()),
        source,
        " ".join(arguments),
    )
    return MatcherTrainingRequest(
        application=config.application,
        run_id=run_id,
        run_uri=run_uri,
        config_uri=config_uri,
        catalog_uri=catalog_uri,
        pairs_source=source,
        pairs_uri=pairs_uri,
        registry_uri=registry,
        seed=seed,
        train_arguments=arguments,
    )


def promotion_line(report: dict[str, Any], match_threshold: float | None = None) -> str:
    """The one-line config change that would promote a report's matcher; match_threshold keeps a config's current one."""
    reference: dict[str, Any] = {"registry_uri": report["registry_uri"], "model_id": report["matcher_id"]}
    if match_threshold is not None:
        reference["match_threshold"] = match_threshold
    # Dumped, not formatted by hand: a registry URI such as s3://... must come out as YAML that reads back the same.
    return yaml.safe_dump({"matcher": reference}, default_flow_style=None, sort_keys=False, width=math.inf).strip()


def matcher_report_text(report: dict[str, Any], config_path: str, match_threshold: float | None = None) -> str:
    """A matcher-training report as its held-out figures and the promotion hint, for a task log."""
    training, holdout = report.get("training") or {}, report.get("holdout") or {}
    lines = [
        f"matcher {report['matcher_id']} saved in {report['registry_uri']} (NOT promoted)",
        f"labelled pairs: {training.get('labelled_pairs')} ({training.get('labelled_matches')} matches), "
        f"{training.get('labelled_pairs_among_candidates')} among the search's candidates "
        f"({training.get('labelled_matches_among_candidates')} matches)",
        "held-out pairs (a fifth of the labelled pairs, whole connected components; recall counts every true pair):",
    ]
    width = max((len(name) for name in holdout), default=0)
    for name, value in holdout.items():
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)
        lines.append(f"  {name:<{width}}  {shown}")
    lines += [
        f"to promote it, set this in {config_path} (a reviewed change; training never makes it):",
        f"  {promotion_line(report, match_threshold)}",
    ]
    return "\n".join(lines)
