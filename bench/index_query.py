"""Index + query side by side: exact search, every monolithic faiss index family, and our pipeline's steps.

For each n, on the same synthetic clustered unit vectors (bench/synthetic.py), in one run:
  exact       faiss IndexFlatIP, on a query sample; the time for all n queries is extrapolated (exact search
              costs the same per query), and its answers are the ground truth for recall
  monolithic  one plain faiss index per family, built on all n and searched by all n with faiss's own batch
              search, its effort (nprobe, efSearch) first calibrated on the built index to the recall target
              with the pipeline's calibration (that calibration's time is not counted: the baselines get their
              best setting for free):
                IVF n/256,Flat         lists of 256 rows (the pipeline's list length), centroids compared
                                       one by one (a flat coarse quantiser)
                IVF n/256_HNSW32,Flat  the same lists found through a graph over the centroids
                HNSW32                 M 32, efConstruction 200
  pipeline    plan_index → build_index → query through the pss step functions, artifacts on disk, with
              index.tuning: the tuner chooses the family per scope by measured cost, build_index calibrates
              the effort on the built index (and gives way to the next family past its bound)
Every measured step runs in its own process: wall seconds are taken around the call inside it (module
imports excluded, for every method alike), peak RSS from the kernel's accounting of that process
(wait4). Every item queries the catalog (k nearest, itself excluded). Prints a table, then one JSON line
whose `by_n` carries, per n, pipeline_recall, pipeline_over_best_monolithic (the pipeline's time over the
fastest monolithic index meeting the recall target) and exact_over_pipeline.

    .venv/bin/python bench/index_query.py --n 100000,300000,1000000 --dim 128 --k 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pss_ops.quality.recall import recall_with_ties  # noqa: E402  (numpy only: nothing the timings would count)

PIPELINE_STEPS = ("plan_index", "build_index", "query")
MONOLITHIC = ("ivf_flat", "ivf_graph", "hnsw32")
TARGETS = {"recall_at_1m": 0.995, "pipeline_over_best_monolithic": 1.5, "exact_over_pipeline": 10.0, "time_exponent": 1.15}


# --- shared helpers ---------------------------------------------------------------------------------


def recall(found_scores: list[np.ndarray], exact: np.ndarray, k: int) -> float:
    """Recall@k of the found scores against each query's exact top-k scores, ties counted (the pipeline's definition)."""
    return recall_with_ties([np.asarray(f)[:k] for f in found_scores], exact)


def without_self(scores: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> list[np.ndarray]:
    """Each query's scores with its own row dropped, best first, at most k."""
    return [s[(i != q) & (i >= 0)][:k] for s, i, q in zip(scores, ids, queries)]


def bench_config(args: argparse.Namespace) -> Any:
    """The pipeline's config: one global scope, no post-filter (so no over-fetch), the index tuned to the target."""
    from pss_ops.config import parse_config

    tuning = {"target_recall": args.target_recall, "memory_budget": args.budget, "sample_rows": args.sample_rows, "seed": args.seed}
    return parse_config(
        {
            "application": "bench_index_query",
            "features": [{"type": "precomputed", "column": "image_vector", "dim": args.dim}],
            "k": args.k,
            "scope": "global",
            "post_filter": {"candidate_multiplier": 1},
            "quality": {"recall_sample": 0},
            "index": {"tuning": tuning},
        }
    )


def monolithic_spec(family: str, n: int) -> Any:
    """The plain faiss index of one monolithic baseline, before its effort is calibrated."""
    from pss_ops.manifests import IndexSpec

    if family == "hnsw32":
        return IndexSpec(family="hnsw", hnsw_m=32, ef_construction=200, search_effort=16)
    lists = max(1, round(n / 256))
    return IndexSpec(family="ivf", nlist=lists, coarse_quantizer="hnsw" if family == "ivf_graph" else "flat", search_effort=1)


# --- workers: one process per measured step -----------------------------------------------------------


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    if args.worker == "prepare":
        prepare(args, int(args.n), work)
        return {}
    if args.worker == "exact":
        import faiss

        vectors = np.load(work / "vectors.npy")
        sample = np.load(work / "sample.npy")
        started = time.perf_counter()
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        added = time.perf_counter() - started
        scores, ids = flat.search(vectors[sample], args.k + 1)
        searched = time.perf_counter() - started - added
        exact = without_self(scores, ids, sample, args.k)
        np.save(work / "exact.npy", np.array(exact, dtype=np.float32))
        return {"seconds_sample": round(added + searched, 3), "seconds": round(added + searched * len(vectors) / len(sample), 3)}

    if args.worker == "monolithic":
        import faiss

        from pss_ops.search.calibration import calibrate_search
        from pss_ops.search.indexes import build_index as build_faiss_index
        from pss_ops.search.indexes import search_parameters

        vectors = np.load(work / "vectors.npy")
        sample = np.load(work / "sample.npy")
        spec = monolithic_spec(args.family, len(vectors))
        started = time.perf_counter()
        index = build_faiss_index(vectors, spec, seed=args.seed)
        built = time.perf_counter() - started
        calibration = calibrate_search(
            index, spec, vectors, k=args.k, search_k=args.k + 1, target_recall=args.target_recall, queries=1000, seed=args.seed,
            max_effort=4096,
        )  # fmt: skip
        effort = calibration.ladder[-1][0]
        started = time.perf_counter()
        # faiss's own batch search, in the batch's order: what a user of the plain index gets.
        scores, ids = index.search(vectors, args.k + 1, params=search_parameters(index, effort, args.k + 1))
        searched = time.perf_counter() - started
        found = without_self(scores[sample], ids[sample], sample, args.k)
        del faiss
        return {
            "index": spec.model_copy(update={"search_effort": effort}).describe(),
            "seconds": round(built + searched, 3),
            "build_seconds": round(built, 3),
            "query_seconds": round(searched, 3),
            "calibration_seconds": calibration.seconds,
            "calibration_met_target": calibration.met_target,
            "recall": recall(found, np.load(work / "exact.npy"), args.k),
        }

    import pss_ops.search.tuning  # noqa: F401  (imported before the clock starts, as faiss is for the monolithic run)
    from pss_ops import layout, storage
    from pss_ops.manifests import CatalogPlan, EmbeddedPartition, IndexPlan, RunContext
    from pss_ops.steps.build_index import build_index
    from pss_ops.steps.plan_index import plan_index
    from pss_ops.steps.query import query_partition

    run_uri = str(work / args.variant)
    ctx = RunContext.read(layout.context(run_uri))
    catalog_plan = CatalogPlan.read(layout.plan_manifest(run_uri))
    started = time.perf_counter()
    if args.worker == "plan_index":
        plan = plan_index(ctx, catalog_plan)
        out: dict[str, Any] = {"partitions": len(plan.partitions)}
        if plan.tuning is not None:
            out["tuning"] = plan.tuning.model_dump(mode="json", exclude={"trials"})
            out["tuning"]["chosen"] = plan.tuning.chosen.describe()
    elif args.worker == "build_index":
        built = [build_index(ctx, part) for part in IndexPlan.read(layout.index_plan_manifest(run_uri)).partitions]
        # The index each partition got (after calibration, or the family that replaced the plan's), and its recall.
        out = {
            "built": [
                {
                    "rows": b.rows,
                    "index": b.index.describe(),
                    "measured_recall": b.measured_recall,
                    "ladders": [{"index": c.index.describe(), "ladder": c.ladder, "seconds": c.seconds} for c in b.calibrations],
                }
                for b in built
            ]
        }
    elif args.worker == "query":
        plan = IndexPlan.read(layout.index_plan_manifest(run_uri))
        for part in catalog_plan.partitions:
            query_partition(ctx, EmbeddedPartition.read(layout.embed_manifest(run_uri, part.name)), plan)
        out = {}
    elif args.worker == "recall":
        sample = np.load(work / "sample.npy")
        wanted = {f"i{row:09d}" for row in sample}
        scores: dict[str, np.ndarray] = {}
        for part in catalog_plan.partitions:
            frame = storage.read_parquet(
                layout.query_result(run_uri, part.name), columns=["query_item_id", "score", "search_rank"]
            ).to_pandas()
            frame = frame[frame["query_item_id"].isin(wanted) & (frame["search_rank"] <= args.k)]
            scores.update(frame.groupby("query_item_id")["score"].apply(np.asarray).to_dict())
        found = [scores.get(f"i{row:09d}", np.zeros(0)) for row in sample]
        return {"recall": recall(found, np.load(work / "exact.npy"), args.k)}
    else:
        raise ValueError(f"unknown worker {args.worker}")
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def run_worker(args: argparse.Namespace, worker: str, workdir: Path, **extra: str) -> dict[str, Any]:
    """Run one measured step in a fresh process: its result, plus its peak RSS in MiB."""
    command = [sys.executable, __file__, "--worker", worker, "--workdir", str(workdir), "--k", str(args.k), "--dim", str(args.dim)]
    for key in ("seed", "queries", "target_recall", "budget", "sample_rows", "catalog_partition", "families"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    for key, value in extra.items():
        command += [f"--{key}", value]
    # Files, not pipes: a worker that logs more than a pipe holds would block before wait4 returns.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all children so far).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"worker {worker} failed ({process.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    return result


# --- setup: data and the embedded partitions the embed step would have written ------------------------


def prepare(args: argparse.Namespace, n: int, workdir: Path) -> None:
    """Vectors, the query sample, and a run directory holding embedded partitions and their manifests."""
    import pyarrow as pa

    from bench.synthetic import clustered_vectors
    from pss_ops import layout, storage
    from pss_ops.manifests import CatalogPartition, CatalogPlan, EmbeddedPartition
    from pss_ops.steps.plan import make_context

    vectors = clustered_vectors(n, args.dim, seed=args.seed)
    np.save(workdir / "vectors.npy", vectors)
    sample = np.sort(np.random.default_rng(args.seed).choice(n, size=min(args.queries, n), replace=False))
    np.save(workdir / "sample.npy", sample)
    shared = workdir / "embedded"
    parts = []
    for number, start in enumerate(range(0, n, args.catalog_partition)):
        block = vectors[start : start + args.catalog_partition]
        name = f"part-{number:05d}"
        uri = str(shared / f"{name}.parquet")
        table = pa.table(
            {
                "item_id": pa.array([f"i{row:09d}" for row in range(start, start + len(block))], pa.string()),
                "category": pa.array(["synthetic"] * len(block), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), args.dim),
            }
        )
        storage.write_parquet(uri, table)
        parts.append((name, uri, len(block)))
    for variant in ("tuned",):
        config = bench_config(args)
        run_uri = str(workdir / variant)
        ctx = make_context(
            config,
            catalog_uri=str(workdir / "catalog"),
            run_uri=run_uri,
            snapshot_date=dt.date(2024, 5, 1),
            run_id=variant,
            cache_uri=str(workdir / "cache.sqlite"),
        )
        storage.write_json(layout.context(run_uri), ctx.model_dump(mode="json"))
        for name, uri, rows in parts:
            EmbeddedPartition(
                name=name, scope="*", uri=uri, rows=rows, dim=args.dim, model_id=ctx.model_id, cache_hits=0, cache_misses=rows, seconds=0.0
            ).write(layout.embed_manifest(run_uri, name))
        CatalogPlan(
            partitions=tuple(CatalogPartition(name=name, uri=uri, scope="*", rows=rows) for name, uri, rows in parts),
            categories=("synthetic",),
            rows_read=n,
            rows_accepted=n,
            rows_rejected=0,
            rows_out_of_scope=0,
            reject_reasons={},
            rejects_uri=str(workdir / "rejects.csv"),
            seconds=0.0,
        ).write(layout.plan_manifest(run_uri))


def measure_size(args: argparse.Namespace, n: int, root: Path) -> dict[str, Any]:
    """Every method at one n."""
    workdir = root / f"n{n}"
    workdir.mkdir(parents=True)
    print(f"[n={n}] preparing data", file=sys.stderr, flush=True)
    # In a child too: a child's peak RSS starts from its parent's at fork, so the parent must stay small.
    run_worker(args, "prepare", workdir, n=str(n))
    result: dict[str, Any] = {"n": n, "load_average_before": round(os.getloadavg()[0], 2)}
    print(f"[n={n}] exact search", file=sys.stderr, flush=True)
    result["exact"] = run_worker(args, "exact", workdir)
    steps: dict[str, Any] = {}
    for step in PIPELINE_STEPS:
        print(f"[n={n}] pipeline: {step}", file=sys.stderr, flush=True)
        steps[step] = run_worker(args, step, workdir, variant="tuned")
    check = run_worker(args, "recall", workdir, variant="tuned")
    result["pipeline"] = {
        "steps": steps,
        "seconds": round(sum(s["seconds"] for s in steps.values()), 3),
        "peak_rss_mib": max(s["peak_rss_mib"] for s in steps.values()),
        "partitions": steps["plan_index"]["partitions"],
        "indexes": sorted({b["index"] for b in steps["build_index"]["built"]}),
        "recall": check["recall"],
    }
    result["tuning"] = steps["plan_index"]["tuning"]
    result["built"] = steps["build_index"]["built"]
    for family in args.families.split(","):
        print(f"[n={n}] monolithic {family}", file=sys.stderr, flush=True)
        result[family] = run_worker(args, "monolithic", workdir, family=family)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(workdir, ignore_errors=True)
    # Each size's figures as soon as they exist, so a long run that is stopped still leaves them.
    print(f"[n={n}] done: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def exponent(ns: list[int], seconds: list[float]) -> float | None:
    """Slope of log(time) against log(n), least squares."""
    if len(ns) < 2:
        return None
    return round(float(np.polyfit(np.log(ns), np.log(seconds), 1)[0]), 3)


def best_monolithic(args: argparse.Namespace, size: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The fastest monolithic index whose recall on the query sample meets the target."""
    meeting = [(family, size[family]) for family in args.families.split(",") if size[family]["recall"] >= args.target_recall]
    return min(meeting, key=lambda item: item[1]["seconds"]) if meeting else None


def summarise(args: argparse.Namespace, sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios, exponents and the targets, from the measured sizes."""
    ns = [s["n"] for s in sizes]
    largest = sizes[-1]
    methods = ("exact", "pipeline", *args.families.split(","))
    exponents = {m: exponent(ns, [s[m]["seconds"] for s in sizes]) for m in methods}
    by_n: dict[str, Any] = {}
    for s in sizes:
        best = best_monolithic(args, s)
        by_n[str(s["n"])] = {
            "pipeline_recall": round(s["pipeline"]["recall"], 5),
            "pipeline_over_best_monolithic": round(s["pipeline"]["seconds"] / best[1]["seconds"], 3) if best else None,
            "best_monolithic": best[1]["index"] if best else None,
            "exact_over_pipeline": round(s["exact"]["seconds"] / s["pipeline"]["seconds"], 2),
        }
    ratios = by_n[str(largest["n"])]
    targets = {
        f"recall@{args.k} >= {TARGETS['recall_at_1m']} at n={largest['n']}": {
            "value": ratios["pipeline_recall"],
            "met": ratios["pipeline_recall"] >= TARGETS["recall_at_1m"],
        },
        f"pipeline <= {TARGETS['pipeline_over_best_monolithic']}x the best monolithic index at that recall, n={largest['n']}": {
            "value": ratios["pipeline_over_best_monolithic"],
            "met": ratios["pipeline_over_best_monolithic"] is not None
            and ratios["pipeline_over_best_monolithic"] <= TARGETS["pipeline_over_best_monolithic"],
        },
        f"pipeline >= {TARGETS['exact_over_pipeline']}x faster than exact search at n={largest['n']}": {
            "value": ratios["exact_over_pipeline"],
            "met": ratios["exact_over_pipeline"] >= TARGETS["exact_over_pipeline"],
        },
        f"pipeline time exponent <= {TARGETS['time_exponent']} ({ns[0]}..{ns[-1]})": {
            "value": exponents["pipeline"],
            "met": exponents["pipeline"] is not None and exponents["pipeline"] <= TARGETS["time_exponent"],
        },
    }
    return {"by_n": by_n, "time_exponent": exponents, "targets": targets}


def _row(n: int, method: str, step: str, figures: dict[str, Any], recall_value: float | None = None, index: str = "") -> str:
    shown_recall = f"{recall_value:>10.4f}" if recall_value is not None else " " * 10
    return f"{n:>9} {method:<18} {step:<12} {figures['seconds']:>9.1f} {figures['peak_rss_mib']:>13.0f} {shown_recall}  {index}"


def print_table(args: argparse.Namespace, sizes: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One row per method and step, then the ratios and targets."""
    header = f"{'n':>9} {'method':<18} {'step':<12} {'seconds':>9} {'peak RSS MiB':>13} {'recall@' + str(args.k):>10}  index"
    print(header)
    print("-" * len(header))
    for s in sizes:
        n = s["n"]
        print(f"{n:>9} load average (1 min) {s['load_average_before']} before, {s['load_average_after']} after")
        print(_row(n, "exact", "extrapolated", s["exact"], 1.0, "Flat"))
        for family in args.families.split(","):
            mono = s[family]
            step = f"{mono['build_seconds']:.0f}+{mono['query_seconds']:.0f}s"
            print(_row(n, "monolithic", step, mono, mono["recall"], mono["index"]))
        run = s["pipeline"]
        for step, figures in run["steps"].items():
            print(_row(n, "pipeline", step, figures))
        print(_row(n, "pipeline", "total", run, run["recall"], "; ".join(run["indexes"])))
        t = s["tuning"]
        print(
            f"{n:>9} tuner: {t['chosen']} on {t['sample_rows']} sampled rows (recall {t['measured_recall']:.4f}, "
            f"predicted {t['predicted_recall']:.4f}, target {t['target_recall']}), {t['seconds']:.1f}s; "
            + "; ".join(f"{c['scope']}: {c['ranking']}" for c in t["scopes"])
        )
        for number, b in enumerate(s["built"]):
            ladders = " then ".join(
                f"{c['index']} [{' '.join(f'{e}:{r:.4f}' for e, r in c['ladder'])}] {c['seconds']:.1f}s" for c in b["ladders"]
            )
            print(f"{n:>9} built index {number}: {b['index']}, recall {b['measured_recall']}; calibration {ladders or '-'}")
    print()
    for n, ratios in summary["by_n"].items():
        print(f"n={n}: " + ", ".join(f"{key} {value}" for key, value in ratios.items()))
    print("time exponent (log-log fit): " + ", ".join(f"{key} {value}" for key, value in summary["time_exponent"].items()))
    for name, target in summary["targets"].items():
        print(f"{'MET    ' if target['met'] else 'NOT MET'} {name}: {target['value']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100000,300000,1000000", help="catalog sizes, comma separated")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000, help="query sample for brute force and recall")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-recall", type=float, default=TARGETS["recall_at_1m"])
    parser.add_argument("--budget", default="8G", help="memory budget per index partition process")
    parser.add_argument("--sample-rows", type=int, default=50_000, help="rows the tuner builds its trial indexes on")
    parser.add_argument("--catalog-partition", type=int, default=100_000, help="rows per embedded (query) partition")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--families", default=",".join(MONOLITHIC), help="monolithic baselines: " + ", ".join(MONOLITHIC))
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return

    ns = sorted(int(v) for v in args.n.split(","))
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="pss-bench-index-query-"))
    try:
        sizes = [measure_size(args, n, root) for n in ns]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = summarise(args, sizes)
    print_table(args, sizes, summary)
    machine = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "max_rss_parent_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(
        json.dumps(
            {
                "bench": "index_query",
                "args": {
                    key: getattr(args, key)
                    for key in ("n", "dim", "k", "queries", "seed", "target_recall", "budget", "sample_rows", "families")
                },
                "machine": machine,
                "sizes": sizes,
                **summary,
                "total_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
