"""The `pss` command: `run` for everything in-process, `step` for one step (the Batch container command)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

# Arrow's default allocator (mimalloc) keeps freed pages mapped: across the steps of one `pss run`, each reading
# and dropping large Parquet files, peak RSS grew with what had been freed (1.16 GB against 0.71 GB for the
# report step of a 24.6k-item run). The system allocator returns them. Set before pyarrow allocates; an explicit
# ARROW_DEFAULT_MEMORY_POOL wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from pss_ops import storage  # noqa: E402
from pss_ops.catalog.validate import CatalogError
from pss_ops.cli.step import (
    ARRAY_INDEX_ENV,
    STEPS,
    WAREHOUSE_ENV,
    add_step_parser,
    add_training_arguments,
    categories,
    iso_date,
    train_from_arguments,
)
from pss_ops.config import ConfigError, load_config, with_k
from pss_ops.features.cache.backends import open_cache

__all__ = ["ARRAY_INDEX_ENV", "STEPS", "WAREHOUSE_ENV", "build_parser", "main"]


def _print_summary(summary: dict[str, Any], outputs: str) -> None:
    counts, cache, search = summary["counts"], summary["cache"], summary["search"]
    lines = [
        f"application      {summary['application']}  (model {summary['model_id']}, snapshot {summary['snapshot_date']})",
        f"catalog rows     {counts['rows_read']} read, {counts['rows_accepted']} accepted, "
        f"{counts['rows_rejected']} rejected, {counts['rows_out_of_scope']} out of scope",
        f"partitions       {counts['catalog_partitions']} catalog, {counts['index_partitions']} index",
        f"embedding cache  {cache['hits']} hits, {cache['misses']} computed",
        f"search recall@{search['k']}  "
        + ", ".join(f"{name} {value}" for name, value in search.get("recall_by_retriever", {}).items())
        + f" against exact brute force with the same rules, on {search['sample_queries']} queries",
        f"published        {counts['rows_published']} rows for {counts['queries']} queries ({counts['queries_short_of_k']} short of k)",
        "seconds          " + ", ".join(f"{k} {v:.1f}" for k, v in summary.get("wall_seconds", summary["step_seconds"]).items()),
        f"outputs          {outputs}",
        f"warehouse        {summary['publish']['warehouse']} (table {summary['publish']['table']})",
    ]
    empty = search.get("scopes_without_candidates") or []
    if empty:
        lines.insert(
            -3,
            f"no candidates    {len(empty)} scope(s) where every item fails the attribute rules, 0 rows: {', '.join(empty[:10])}"
            + (" ..." if len(empty) > 10 else ""),
        )
    print("\n".join(lines))


def cmd_run(args: argparse.Namespace) -> int:
    """`pss run`: the whole pipeline in this process, then its summary."""
    from pss_ops.orchestration.run import run_pipeline

    config = with_k(load_config(args.config), args.k)
    catalog = args.catalog or config.catalog_uri
    if not catalog:
        raise SystemExit("pss run: give --catalog or set catalog_uri in the config")
    if not args.catalog and not storage.is_s3(catalog):
        catalog = str(Path(args.config).resolve().parent / catalog)
    summary = run_pipeline(
        config,
        catalog_uri=catalog,
        out_dir=args.out,
        categories=categories(args.categories),
        warehouse_url=args.warehouse_url or os.environ.get(WAREHOUSE_ENV),
        snapshot_date=args.snapshot_date,
        run_id=args.run_id,
        full_refresh=args.full_refresh,
    )
    _print_summary(summary, f"{args.out}/similar_items.parquet, run_summary.json, rejects.csv")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the newest run summary under a local directory (a run, or a folder of runs)."""
    found = sorted(Path(args.runs).glob("**/report/run_summary.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"pss summary: no report/run_summary.json under {args.runs}")
    summary = json.loads(found[-1].read_text(encoding="utf-8"))
    _print_summary(summary, f"{summary['publish']['parquet_uri']}; summary {found[-1]}")
    return 0


def _json_ready(report: dict[str, Any]) -> dict[str, Any]:
    """NaN (an undefined metric) as null, so the JSON is standard."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in report.items()}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`pss evaluate`: ranking figures over true pairs and/or R@P over labelled pairs."""
    from pss_ops.quality.evaluate import evaluate, evaluate_verification, format_table

    ranking = args.pairs is not None or args.truth is not None
    verification = args.labelled is not None or args.run_uri is not None
    if ranking and not (args.pairs and args.truth):
        raise SystemExit("pss evaluate: --pairs and --truth go together; give both")
    if verification and not (args.labelled and args.run_uri):
        raise SystemExit("pss evaluate: --labelled and --run-uri go together; give both")
    if not (ranking or verification):
        raise SystemExit("pss evaluate: give --pairs with --truth (candidate recall, NDCG, MAP) and/or --labelled with --run-uri (R@P)")
    report: dict[str, Any] = {}
    if ranking:
        ks = tuple(int(k) for k in args.k.split(","))
        report.update(evaluate(args.pairs, args.truth, ks))
    if verification:
        report.update(evaluate_verification(args.labelled, args.run_uri))
    print(format_table(report))
    if args.json_out:
        storage.write_json(args.json_out, _json_ready(report))
    if args.json:
        print(json.dumps(_json_ready(report)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`pss train`: train, evaluate on held-out queries and register a model; print the comparison."""
    from pss_ops.quality.evaluate import format_table

    report = train_from_arguments(args, storage.join(args.out, "train_report.json"))
    flat = {"model_id": report["model_id"]}
    for name, tasks in report["holdout"].items():
        for task, figures in tasks.items():
            flat.update({f"{name}/{task}/{k}": v for k, v in figures.items()})
    print(format_table(flat))
    print(f"registered {report['model_id']} in {report['registry_uri']} (not promoted); report {args.out}/train_report.json")
    return 0


def cmd_cache_purge(args: argparse.Namespace) -> int:
    """`pss cache purge`: delete a retired model id's cached embeddings."""
    cache = open_cache(args.cache_uri)
    try:
        removed = cache.delete_model(args.model_id)
    finally:
        cache.close()
    print(f"removed {removed} cached embeddings of model {args.model_id} from {args.cache_uri}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="pss", description="Product Similarity Service")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline in-process")
    run.add_argument("--config", required=True, help="application config (YAML)")
    run.add_argument("--catalog", help="catalog file (.csv, .csv.gz, .parquet), local or s3://; default: the config's catalog_uri")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--categories", help="comma-separated categories to (re)compute; default all")
    run.add_argument("--warehouse-url", help=f"SQLAlchemy URL (default: SQLite in --out; env {WAREHOUSE_ENV})")
    run.add_argument("--snapshot-date", type=iso_date, help="snapshot date (default: today)")
    run.add_argument("--run-id", help="run id (default: generated)")
    run.add_argument("--full-refresh", action="store_true", help="ignore cached embeddings")
    run.add_argument("--k", type=int, help="results per item (overrides the config)")
    run.set_defaults(func=cmd_run)

    add_step_parser(sub)

    train = sub.add_parser("train", help="train a SiameseNet on labelled pairs, evaluate it, register it (never promotes)")
    add_training_arguments(train, in_step=False)
    train.add_argument("--out", required=True, help="directory for train_report.json")
    train.set_defaults(func=cmd_train)

    summary = sub.add_parser("summary", help="print the newest run summary under a local directory")
    summary.add_argument("--runs", required=True, help="a run directory or a folder of runs")
    summary.set_defaults(func=cmd_summary)

    cache = sub.add_parser("cache", help="embedding cache maintenance")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    purge = cache_sub.add_parser("purge", help="delete every cached embedding of a retired model id")
    purge.add_argument("--cache-uri", required=True, help="dynamodb://TABLE, sqlite:///path or a local path")
    purge.add_argument("--model-id", required=True, help="the model id whose entries go")
    purge.set_defaults(func=cmd_cache_purge)

    evaluate = sub.add_parser("evaluate", help="recall@k, NDCG and MAP of similar items over true pairs; R@P over labelled pairs")
    evaluate.add_argument("--pairs", help="similar_items.parquet (with --truth)")
    evaluate.add_argument("--truth", help="CSV with id_a,id_b true pairs (with --pairs)")
    evaluate.add_argument("--k", default="1,5,10", help="comma-separated candidate recall cutoffs")
    evaluate.add_argument("--labelled", help="CSV with id_a,id_b,label (1/0) pairs for R@P80/90/95 (with --run-uri)")
    evaluate.add_argument("--run-uri", help="run directory whose embed/*.parquet vectors score --labelled")
    evaluate.add_argument("--json-out", help="write the whole report as JSON to this file (local or s3://)")
    evaluate.add_argument("--json", action="store_true", help="also print one JSON line")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pss` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # faiss logs each CPU-feature probe at INFO; that is noise in every step's log.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (ConfigError, CatalogError, FileNotFoundError, ValueError) as err:
        print(f"pss: error: {err}", file=sys.stderr)
        return 2
