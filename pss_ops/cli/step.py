"""`pss step NAME`: one step of a run from the manifests under its run URI (the AWS Batch container command).

Each step is its own subparser carrying only its options; STEPS maps a step name to them and to its handler.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pss_ops import layout, storage
from pss_ops.config import load_config, with_k
from pss_ops.features.cache.backends import open_cache
from pss_ops.learning.settings import DEFAULT_HOLDOUT_FRACTION, read_training_config
from pss_ops.manifests import CatalogPlan, EmbeddedPartition, IndexPlan, QueriedPartition, RunContext
from pss_ops.orchestration.matcher_training import matcher_report_uri, matcher_work_uri
from pss_ops.orchestration.training import training_report_uri

# --- shared with `pss run` and `pss train` ----------------------------------------------------------
# They live here, not in pss_ops.cli: that package imports this module, so importing them back would be a cycle.

ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
WAREHOUSE_ENV = "PSS_WAREHOUSE_URL"


def categories(value: str | None, repeated: list[str] | None = None) -> tuple[str, ...] | None:
    """--categories (comma-separated, or a JSON list for names with commas) and each --category, distinct, in order.

    None (every category) when neither names one.
    """
    names: list[str] = []
    text = (value or "").strip()
    if text.startswith("["):
        try:
            listed = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--categories: not a JSON list of names: {err}") from None
        if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
            raise ValueError(f"--categories: a JSON value must be a list of names (strings), got {text!r}")
        names.extend(listed)
    elif text:
        names.extend(text.split(","))
    names.extend(repeated or ())
    return tuple(dict.fromkeys(n.strip() for n in names if n.strip())) or None


CATEGORIES_HELP = 'categories to (re)compute, comma-separated or a JSON list (["a, b", "c"]); default all'
CATEGORY_HELP = "one category to (re)compute, its name as it is (commas allowed); repeatable"


def add_category_arguments(parser: argparse.ArgumentParser) -> None:
    """--categories and the repeatable --category, for every command that picks categories."""
    parser.add_argument("--categories", help=CATEGORIES_HELP)
    parser.add_argument("--category", action="append", help=CATEGORY_HELP)


def iso_date(value: str) -> dt.date:
    """The argparse type of --snapshot-date."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {value!r}") from None


def add_training_arguments(parser: argparse.ArgumentParser, *, in_step: bool) -> None:
    """The options of `pss train` and `pss step train` (the step's --config/--catalog are checked by train_from_arguments)."""
    if not in_step:
        parser.add_argument("--config", required=True, help="application config (its features define the compound input)")
        parser.add_argument("--catalog", required=True, help="catalog the pairs' items come from")
    parser.add_argument("--pairs", action="append", help="pairs CSV (id_a,id_b[,label]) as URI[:TASK]; repeat for multi-task")
    parser.add_argument("--registry", help="model registry URI (local or s3://)")
    parser.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT_FRACTION, help="share of query items held out for evaluation")
    parser.add_argument("--seed", type=int, help="seed of the split, negative mining and training (default: the training config's, else 0)")
    parser.add_argument("--epochs", type=int, help="override the training config's epochs")
    parser.add_argument("--training-config", help="YAML of pss_ops.learning.settings.TrainingConfig fields")


def train_from_arguments(args: argparse.Namespace, report_uri: str) -> dict[str, Any]:
    """Train, evaluate and register a model from `pss train`'s options; the report is written to report_uri and returned."""
    # Imported here: torch loads only when a training command runs, not for every `pss` invocation.
    from pss_ops.learning.pairs import parse_pair_source
    from pss_ops.learning.pipeline import train_model, write_report

    if not (args.config and args.catalog and args.pairs and args.registry):
        raise SystemExit("pss train: --config, --catalog, --pairs and --registry are required")
    # One seed for the split, negative mining and training: --seed, else the training config's, else 0.
    training = read_training_config(args.training_config, epochs=args.epochs, seed=args.seed)
    report = train_model(
        load_config(args.config),
        catalog_uri=args.catalog,
        pair_sources=[parse_pair_source(p) for p in args.pairs],
        registry_uri=args.registry,
        training=training,
        holdout_fraction=args.holdout,
    )
    write_report(report, report_uri)
    return report


def _run_uri_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-uri", required=True, help="the run's directory or s3:// prefix")


def _partition_options(parser: argparse.ArgumentParser) -> None:
    """The options of every per-partition step: which partition this process takes."""
    _run_uri_option(parser)
    parser.add_argument("--partition", type=int, help=f"partition number (default: ${ARRAY_INDEX_ENV})")
    parser.add_argument("--partition-offset", type=int, help=f"array jobs: partition = this + ${ARRAY_INDEX_ENV}")


def _plan_options(parser: argparse.ArgumentParser) -> None:
    _run_uri_option(parser)
    # Not argparse-required: _plan's own check keeps the message and exit status scripts already see.
    parser.add_argument("--config", help="application config (required)")
    parser.add_argument("--catalog", help="catalog file, local or s3:// (required)")
    add_category_arguments(parser)
    parser.add_argument("--snapshot-date", type=iso_date, help="snapshot date (default: today)")
    parser.add_argument("--run-id", help="run id (default: generated)")
    parser.add_argument("--cache-uri", help="embedding cache shared by every run (default: the config's cache.uri)")
    parser.add_argument("--full-refresh", action="store_true", help="ignore cached embeddings")
    parser.add_argument("--k", type=int, help="results per item (overrides the config)")


def _publish_options(parser: argparse.ArgumentParser) -> None:
    _run_uri_option(parser)
    parser.add_argument("--warehouse-url", help=f"SQLAlchemy URL of the warehouse (default: env {WAREHOUSE_ENV})")


def _train_options(parser: argparse.ArgumentParser) -> None:
    _run_uri_option(parser)
    # Optional in argparse: train_from_arguments checks them with --pairs and --registry and names all four in one message.
    parser.add_argument("--config", help="application config (its features define the compound input)")
    parser.add_argument("--catalog", help="catalog the pairs' items come from")
    add_training_arguments(parser, in_step=True)


def add_train_matcher_arguments(parser: argparse.ArgumentParser, *, in_step: bool) -> None:
    """The options of `pss train-matcher`, shared with `pss step train-matcher`.

    Optional in the step, as for train: its handler names all four missing ones in one message.
    """
    required = not in_step
    parser.add_argument("--config", required=required, help="application config (YAML): its retrievers produce the candidate pairs")
    parser.add_argument("--catalog", required=required, help="catalog holding every labelled item (.csv, .csv.gz, .parquet)")
    parser.add_argument("--pairs", required=required, help="labelled pairs CSV: id_a,id_b,label (1 same product, 0 not)")
    parser.add_argument("--registry", required=required, help="model registry folder (local or s3://)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the trees")


def _train_matcher_options(parser: argparse.ArgumentParser) -> None:
    # The step's work folder and report.json are the run's (pss train-matcher's --out and --report).
    _run_uri_option(parser)
    add_train_matcher_arguments(parser, in_step=True)


# --- handlers ---------------------------------------------------------------------------------------


def _partition_number(args: argparse.Namespace) -> int:
    """--partition; else --partition-offset plus this array child's AWS_BATCH_JOB_ARRAY_INDEX."""
    if args.partition is not None:
        return args.partition
    index = os.environ.get(ARRAY_INDEX_ENV)
    if args.partition_offset is not None:
        # A chunk of one partition is submitted as a plain job, which has no array index.
        return args.partition_offset + int(index or 0)
    if index is not None:
        return int(index)
    raise SystemExit(f"pss step {args.step}: give --partition N, --partition-offset N or set {ARRAY_INDEX_ENV}")


def _pick(items: tuple[Any, ...], number: int, what: str) -> Any:
    if not 0 <= number < len(items):
        raise SystemExit(f"{what} partition {number} does not exist; the manifest has {len(items)} (0..{len(items) - 1})")
    return items[number]


def _planned_run(args: argparse.Namespace) -> tuple[RunContext, CatalogPlan]:
    # Every step after plan reads both first, so a run that was never planned fails naming the missing manifest.
    ctx = RunContext.read(layout.context(args.run_uri))
    return ctx, CatalogPlan.read(layout.plan_manifest(ctx.run_uri))


def _printed(result: BaseModel) -> int:
    # The step's manifest on stdout is what an orchestrator reads back.
    print(result.model_dump_json())
    return 0


def _plan(args: argparse.Namespace) -> int:
    from pss_ops.orchestration.run import new_run_id
    from pss_ops.steps import plan

    if not (args.config and args.catalog):
        raise SystemExit("pss step plan: --config and --catalog are required")
    config = with_k(load_config(args.config), args.k)
    cache_uri = args.cache_uri or config.cache.uri
    if not cache_uri:
        # A default inside the run directory would start every run with an empty cache.
        raise SystemExit("pss step plan: give --cache-uri or set cache.uri in the config (shared by every run)")
    ctx = plan.make_context(
        config,
        catalog_uri=args.catalog,
        run_uri=args.run_uri,
        snapshot_date=args.snapshot_date or dt.date.today(),
        run_id=args.run_id or new_run_id(),
        cache_uri=cache_uri,
        categories=categories(args.categories, args.category),
        full_refresh=args.full_refresh,
    )
    return _printed(plan.plan(ctx))


def _embed(args: argparse.Namespace) -> int:
    from pss_ops.steps import embed

    ctx, catalog_plan = _planned_run(args)
    partition = _pick(catalog_plan.partitions, _partition_number(args), "catalog")
    cache = open_cache(ctx.cache_uri)
    try:
        result = embed.embed_partition(ctx, partition, cache)
    finally:
        cache.close()
    return _printed(result)


def _plan_index(args: argparse.Namespace) -> int:
    from pss_ops.steps import plan_index

    ctx, catalog_plan = _planned_run(args)
    return _printed(plan_index.plan_index(ctx, catalog_plan))


def _build_index(args: argparse.Namespace) -> int:
    from pss_ops.steps import build_index

    ctx, _ = _planned_run(args)
    index_plan = IndexPlan.read(layout.index_plan_manifest(ctx.run_uri))
    return _printed(build_index.build_index(ctx, _pick(index_plan.partitions, _partition_number(args), "index")))


def _queried(args: argparse.Namespace) -> tuple[RunContext, QueriedPartition]:
    from pss_ops.steps import query

    ctx, catalog_plan = _planned_run(args)
    partition = _pick(catalog_plan.partitions, _partition_number(args), "catalog")
    embedded = EmbeddedPartition.read(layout.embed_manifest(ctx.run_uri, partition.name))
    return ctx, query.query_partition(ctx, embedded, IndexPlan.read(layout.index_plan_manifest(ctx.run_uri)))


def _query(args: argparse.Namespace) -> int:
    _, queried = _queried(args)
    return _printed(queried)


def _post_filter(args: argparse.Namespace) -> int:
    from pss_ops.steps import post_filter

    ctx, catalog_plan = _planned_run(args)
    partition = _pick(catalog_plan.partitions, _partition_number(args), "catalog")
    return _printed(post_filter.post_filter_partition(ctx, QueriedPartition.read(layout.query_manifest(ctx.run_uri, partition.name))))


def _search(args: argparse.Namespace) -> int:
    from pss_ops.steps import post_filter

    # Query then post-filter one partition: what one Batch child does in the DAG's query task.
    ctx, queried = _queried(args)
    return _printed(post_filter.post_filter_partition(ctx, queried))


def _publish(args: argparse.Namespace) -> int:
    from pss_ops.steps import publish

    ctx, catalog_plan = _planned_run(args)
    url = args.warehouse_url or os.environ.get(WAREHOUSE_ENV)
    if not url:
        raise SystemExit(f"pss step publish: give --warehouse-url or set {WAREHOUSE_ENV}")
    return _printed(publish.publish(ctx, catalog_plan, url))


def _report(args: argparse.Namespace) -> int:
    from pss_ops.steps import report

    ctx, _ = _planned_run(args)
    print(storage.json_text(report.report(ctx)), end="")
    return 0


def _train_step(args: argparse.Namespace) -> int:
    print(storage.json_text(train_from_arguments(args, training_report_uri(args.run_uri)), indent=None), end="")
    return 0


def _train_matcher_step(args: argparse.Namespace) -> int:
    # Imported here: lightgbm loads only when a matcher is trained, not for every `pss` invocation.
    from pss_ops.matching.training import train_matcher

    if not (args.config and args.catalog and args.pairs and args.registry):
        raise SystemExit("pss step train-matcher: --config, --catalog, --pairs and --registry are required")
    report = train_matcher(
        load_config(args.config),
        catalog_uri=args.catalog,
        pairs_uri=args.pairs,
        registry_uri=args.registry,
        work_dir=matcher_work_uri(args.run_uri),
        seed=args.seed,
    )
    storage.write_json(matcher_report_uri(args.run_uri), report)
    print(storage.json_text(report, indent=None), end="")
    return 0


# --- the dispatch table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One `pss step` subcommand: its one-line help, the options it takes and the handler that runs it."""

    help: str
    options: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


# In pipeline order, which is the order `pss step --help` lists them in.
STEPS: dict[str, Step] = {
    "plan": Step("validate the catalog, write rejects and split accepted rows into partitions", _plan_options, _plan),
    "embed": Step("embed one catalog partition through the embedding cache", _partition_options, _embed),
    "plan-index": Step("group the embedded rows of each scope into index partitions", _run_uri_option, _plan_index),
    "build-index": Step("build and calibrate the index of one index partition", _partition_options, _build_index),
    "query": Step("search one catalog partition against every index in its scope", _partition_options, _query),
    "post-filter": Step("apply the attribute rules and score floor to one queried partition", _partition_options, _post_filter),
    "search": Step("query then post-filter one catalog partition (one Batch child of the DAG)", _partition_options, _search),
    "publish": Step("write the run's Parquet and replace its categories in the warehouse", _publish_options, _publish),
    "report": Step("write and print run_summary.json: counts, step times, cache and search recall", _run_uri_option, _report),
    "train": Step("train, evaluate and register a SiameseNet (never promotes); report in RUN/train", _train_options, _train_step),
    "train-matcher": Step(
        "train, evaluate and register a pair matcher (never promotes); search in RUN/work, report RUN/report.json",
        _train_matcher_options,
        _train_matcher_step,
    ),
}


def cmd_step(args: argparse.Namespace) -> int:
    """Run the step named on the command line through STEPS."""
    return STEPS[args.step].handler(args)


def add_step_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pss step` and one subparser per step under it, each with only that step's options."""
    step = sub.add_parser("step", help="run one step from its manifests (the AWS Batch container command)")
    steps = step.add_subparsers(dest="step", required=True)
    for name, spec in STEPS.items():
        parser = steps.add_parser(name, help=spec.help, description=spec.help)
        spec.options(parser)
    step.set_defaults(func=cmd_step)
