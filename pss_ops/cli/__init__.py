"""The `pss` command: `run` for everything in-process, `step` for one step (the Batch container command)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
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
    add_category_arguments,
    add_step_parser,
    add_train_matcher_arguments,
    add_training_arguments,
    categories,
    iso_date,
    train_from_arguments,
)
from pss_ops.config import ConfigError, load_config, with_k
from pss_ops.features.cache.backends import open_cache
from pss_ops.warehouse.errors import WarehouseError

__all__ = ["ARRAY_INDEX_ENV", "DEBUG_ENV", "STEPS", "WAREHOUSE_ENV", "build_parser", "error_message", "main"]

log = logging.getLogger("pss")
# Set to 1 to get tracebacks from workers whose command line you don't write (Airflow tasks, Batch jobs).
DEBUG_ENV = "PSS_DEBUG"


def _print_summary(summary: dict[str, Any], outputs: str, report_page: str | None = None) -> None:
    """The run in a dozen lines, ending with where its report page is (default: the run's own)."""
    counts, cache, search = summary["counts"], summary["cache"], summary["search"]
    lines = [
        f"application      {summary['application']}  (model {summary['model_id']}, snapshot {summary['snapshot_date']})",
        f"catalog rows     {counts['rows_read']} read, {counts['rows_accepted']} accepted, "
        f"{counts['rows_rejected']} rejected, {counts['rows_out_of_scope']} out of scope",
        f"partitions       {counts['catalog_partitions']} catalog, {counts['index_partitions']} index",
        f"embedding cache  {cache['hits']} hits, {cache['misses']} computed"
        + (f", {cache['bypassed']} precomputed vectors used directly" if cache.get("bypassed") else ""),
        f"index            {'; '.join(search.get('index_used', {}).get('indexes', []))}",
        f"search recall@{search['k']}  "
        + ", ".join(f"{name} {value}" for name, value in search.get("recall_by_retriever", {}).items())
        + f" against exact brute force with the same rules, on {search['sample_queries']} queries",
        f"published        {counts['rows_published']} rows for {counts['queries']} queries ({counts['queries_short_of_k']} short of k)",
        "seconds          " + ", ".join(f"{k} {v:.1f}" for k, v in summary.get("wall_seconds", summary["step_seconds"]).items()),
        f"outputs          {outputs}",
        f"warehouse        {summary['publish']['warehouse']} (table {summary['publish']['table']})",
        f"report           {report_page or summary.get('report_page', '(none: a run from before run reports)')}",
    ]
    matching = summary.get("matching")
    if matching:
        lines.insert(
            -4,
            f"matching         {matching['rows_matched']} published pairs at match_probability >= {matching['match_threshold']} "
            f"(matcher {matching['matcher_id']}); {matching['duplicate_groups']} duplicate groups of {matching['items_in_groups']} items",
        )
    empty = search.get("scopes_without_candidates") or []
    if empty:
        lines.insert(
            -4,
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
        categories=categories(args.categories, args.category),
        warehouse_url=args.warehouse_url or os.environ.get(WAREHOUSE_ENV),
        snapshot_date=args.snapshot_date,
        run_id=args.run_id,
        full_refresh=args.full_refresh,
    )
    out = Path(args.out)
    outputs = f"{out}/similar_items.parquet, duplicate_groups.parquet, run_summary.json, rejects.csv"
    _print_summary(summary, outputs, str(out / "report.html"))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the newest run summary under a local directory (a run, or a folder of runs)."""
    found = sorted(Path(args.runs).glob("**/report/run_summary.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"pss summary: no report/run_summary.json under {args.runs}")
    summary = json.loads(found[-1].read_text(encoding="utf-8"))
    _print_summary(summary, f"{summary['publish']['parquet_uri']}; summary {found[-1]}")
    return 0


def _has_match_probability(pairs_uri: str) -> bool:
    schema = storage.open_parquet(pairs_uri).schema_arrow
    if "match_probability" not in schema.names:
        return False
    probability = storage.read_parquet(pairs_uri, columns=["match_probability"]).column("match_probability")
    return probability.null_count < len(probability)


def _matching_report(args: argparse.Namespace) -> dict[str, Any]:
    """pss evaluate's match-decision figures; the threshold and groups default to the run's, beside --pairs."""
    from pss_ops.quality.evaluate import evaluate_matching, load_items

    folder = str(Path(args.pairs).parent) if not storage.is_s3(args.pairs) else args.pairs.rsplit("/", 1)[0]
    threshold = args.threshold
    if threshold is None:
        summary_uri = storage.join(folder, "run_summary.json")
        matching = storage.read_json(summary_uri).get("matching") if storage.exists(summary_uri) else None
        threshold = matching["match_threshold"] if matching else 0.5
    groups = args.groups or storage.join(folder, "duplicate_groups.parquet")
    items = load_items(args.items) if args.items else None
    return evaluate_matching(args.pairs, args.truth, threshold=threshold, groups_uri=groups, items=items)


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
        if _has_match_probability(args.pairs):
            report.update(_matching_report(args))
    if verification:
        report.update(evaluate_verification(args.labelled, args.run_uri))
    print(format_table(report))
    if ranking:
        from pss_ops.orchestration.evaluation import record_evaluation

        # The run's report gains the labels' section (precision-recall, calibration, group sizes); stderr keeps the
        # --json line last on stdout.
        recorded = record_evaluation(args.pairs, args.truth, report, items_uri=args.items, groups_uri=args.groups)
        print(recorded.describe(), file=sys.stderr)
    if args.json_out:
        storage.write_json(args.json_out, report)
    if args.json:
        print(storage.json_text(report, indent=None), end="")
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


def cmd_train_matcher(args: argparse.Namespace) -> int:
    """`pss train-matcher`: the new matcher's id alone on stdout (for scripts); the held-out figures on stderr."""
    from pss_ops.matching.training import train_matcher
    from pss_ops.quality.evaluate import format_table

    config = load_config(args.config)
    report = train_matcher(
        config, catalog_uri=args.catalog, pairs_uri=args.pairs, registry_uri=args.registry, work_dir=args.out, seed=args.seed
    )
    training = report["training"]
    lines = [
        f"labelled pairs   {training['labelled_pairs']} ({training['labelled_matches']} matches), "
        f"{training['labelled_pairs_among_candidates']} among the search's candidates "
        f"({training['labelled_matches_among_candidates']} matches)",
        "held-out pairs (a fifth of the labelled pairs, whole connected components; recall counts every true pair):",
        format_table(report["holdout"]),
        f"registered {report['matcher_id']} in {report['registry_uri']} "
        "(not promoted: set matcher: {registry_uri, model_id} in the config)",
    ]
    print("\n".join(lines), file=sys.stderr)
    if args.report:
        storage.write_json(args.report, report)
    print(report["matcher_id"])
    return 0


def cmd_label_queue(args: argparse.Namespace) -> int:
    """`pss label-queue`: the N published pairs most worth labelling, as a labelled-pairs CSV with empty labels."""
    from pss_ops.matching.label_queue import label_queue, write_queue

    queue = label_queue(args.run, args.n, args.exclude or ())
    write_queue(queue, args.out)
    categories_in = queue["category"].nunique() if len(queue) else 0
    print(
        f"wrote {len(queue)} pairs from {categories_in} categories to {args.out}: "
        "fill in label (1 same product, 0 not), then pss train-matcher --pairs"
    )
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """`pss review`: serve the local labelling page until Ctrl-C; labels go to a labelled-pairs CSV."""
    from pss_ops.review.labels import default_labels
    from pss_ops.review.server import open_review, serve

    labels = args.labels or default_labels(args.run)
    server = open_review(args.run, labels, host=args.host, port=args.port, queue_size=args.n)
    serve(server)
    print(f"pss review stopped; {len(server.data.labels)} labelled pairs in {labels}")
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
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what each step does (-vv: debug detail)")
    parser.add_argument("--debug", action="store_true", help=f"print the traceback of a failure (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline in-process")
    run.add_argument("--config", required=True, help="application config (YAML)")
    run.add_argument("--catalog", help="catalog file (.csv, .csv.gz, .parquet), local or s3://; default: the config's catalog_uri")
    run.add_argument("--out", required=True, help="output directory")
    add_category_arguments(run)
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
    evaluate.add_argument("--threshold", type=float, help="match threshold for F1 (default: the run's matcher.match_threshold)")
    evaluate.add_argument("--groups", help="duplicate_groups.parquet (default: beside --pairs)")
    evaluate.add_argument("--items", help="CSV with an item_id column: count only pairs of these items (a held-out half)")
    evaluate.add_argument("--json-out", help="write the whole report as JSON to this file (local or s3://)")
    evaluate.add_argument("--json", action="store_true", help="also print one JSON line")
    evaluate.set_defaults(func=cmd_evaluate)

    train_matcher = sub.add_parser("train-matcher", help="train a pair matcher on labelled pairs, measure it, register it (never promotes)")
    add_train_matcher_arguments(train_matcher, in_step=False)
    train_matcher.add_argument(
        "--out", help="folder for the search run, as pss run --out (its embedding cache is reused); default: a temporary folder"
    )
    train_matcher.add_argument("--report", help="write the training report as JSON to this file")
    train_matcher.set_defaults(func=cmd_train_matcher)

    queue = sub.add_parser("label-queue", help="write the published pairs most worth labelling, with an empty label")
    queue.add_argument("--run", required=True, help="a pss run --out folder, or a run directory")
    queue.add_argument("--n", type=int, default=200, help="how many pairs (default 200)")
    queue.add_argument("--out", required=True, help="CSV to write (id_a,id_b,label,... with label empty)")
    queue.add_argument("--exclude", action="append", help="labelled-pairs CSV whose pairs are left out (repeatable)")
    queue.set_defaults(func=cmd_label_queue)

    review = sub.add_parser("review", help="serve a local page to see a run's pairs side by side and label them")
    review.add_argument("--run", required=True, help="a pss run --out folder, or a run directory")
    review.add_argument("--labels", help="labelled-pairs CSV to add to (default: review/labelled_pairs.csv in --run)")
    review.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 is refused)")
    review.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    review.add_argument("--n", type=int, default=200, help="pairs in the label queue (default 200)")
    review.set_defaults(func=cmd_review)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_message(err: BaseException) -> str:
    """What `pss: error:` says about an exception: the problem and the thing it concerns (file, URL, key), on one line."""
    if isinstance(err, OSError) and err.filename is not None:
        # "[Errno 28] No space left on device: '/out/x'" reads better as the reason, then the path (and a rename's target).
        target = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
        return _one_line(f"{err.strerror or type(err).__name__}: {target}")
    text = _one_line(str(err))
    # An error whose text alone names its problem is shown as it is; a bare one (KeyError('x'), a library's
    # RuntimeError) keeps its class so the line still says what went wrong.
    if isinstance(err, (ConfigError, CatalogError, ValueError, OSError, WarehouseError)) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pss` console script: every failure ends in one `pss: error:` line (a traceback with --debug)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    # Accepted anywhere on the line (`pss run ... --debug`), not only before the subcommand.
    debug = "--debug" in arguments or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = build_parser().parse_args([a for a in arguments if a != "--debug"])
    # Quiet by default, so what a command prints (pss run's summary) is what the user reads; a worker (`pss step`, in
    # an Airflow task or a Batch job) logs each step's and partition's lines, which is what its log is for.
    default = logging.INFO if args.command == "step" else logging.WARNING
    logging.basicConfig(
        level={0: default, 1: logging.INFO}.get(args.verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # faiss logs each CPU-feature probe at INFO; that is noise in every step's log.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        # A command's own usage message ("pss run: give --catalog ..."): same line shape, same exit status 1.
        _report_error(stop, _one_line(stop.code), debug)
        return 1
    except KeyboardInterrupt as err:
        _report_error(err, "interrupted", debug)
        return 130
    except (ConfigError, CatalogError, ValueError, FileNotFoundError) as err:
        # The input is wrong (config, catalog, arguments, a missing file): exit 2, as scripts already expect.
        _report_error(err, error_message(err), debug)
        return 2
    except Exception as err:  # noqa: BLE001 - the one place every other failure (disk, network, a bug) is reported
        _report_error(err, error_message(err), debug)
        return 1


def _report_error(err: BaseException, message: str, debug: bool) -> None:
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    else:
        log.debug("traceback", exc_info=err)
    print(f"pss: error: {message}", file=sys.stderr, flush=True)
