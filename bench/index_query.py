"""Index + query side by side: exact brute force, one monolithic faiss HNSW, and our pipeline's steps.

For each n, on the same synthetic clustered unit vectors (bench/synthetic.py), in one run:
  brute       faiss IndexFlatIP, on a query sample; the time for all n queries is extrapolated (exact
              search costs the same per query), and its answers are the ground truth for recall
  monolithic  one IndexHNSWFlat in-process, built on all n and searched by all n, with the tuned M and
              efConstruction, and the efSearch build_index calibrated on the tuned pipeline's built index
              (so the two are compared at about equal recall)
  pipeline    plan_index → build_index → query through the pss step functions, artifacts on disk:
              "tuned" (index.tuning chooses partitions and HNSW parameters; build_index then calibrates
              efSearch on each built index to the target) and "P=4" (the same HNSW parameters and
              calibrated efSearch over four forced index partitions, so the merge cost shows)
Every measured step runs in its own process: wall seconds are taken around the call inside it (module
imports excluded, for every method alike), peak RSS from the kernel's accounting of that process
(wait4). Every item queries the catalog (k nearest, itself excluded). Prints a table, then one JSON line.

    .venv/bin/python bench/index_query.py --n 100000,300000,1000000 --dim 128 --k 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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
TARGETS = {"recall_at_1m": 0.995, "pipeline_over_monolithic": 1.3, "brute_over_pipeline": 6.0, "time_exponent": 1.2}


# --- shared helpers ---------------------------------------------------------------------------------


def recall(found_scores: list[np.ndarray], exact: np.ndarray, k: int) -> float:
    """Recall@k of the found scores against each query's exact top-k scores, ties counted (the pipeline's definition)."""
    return recall_with_ties([np.asarray(f)[:k] for f in found_scores], exact)


def without_self(scores: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> list[np.ndarray]:
    """Each query's scores with its own row dropped, best first, at most k."""
    return [s[(i != q) & (i >= 0)][:k] for s, i, q in zip(scores, ids, queries)]


def bench_config(args: argparse.Namespace, n: int, partitions: int | None, chosen: dict[str, int] | None) -> Any:
    """The pipeline's config: one global scope, no post-filter (so no over-fetch), tuned or forced partitions."""
    from pss_ops.config import parse_config

    if partitions is None:
        index: dict[str, Any] = {
            "tuning": {
                "target_recall": args.target_recall,
                "memory_budget": args.budget,
                "sample_rows": args.sample_rows,
                "seed": args.seed,
            }
        }
    else:
        assert chosen is not None
        index = {**chosen, "partition_size": math.ceil(n / partitions)}
    return parse_config(
        {
            "application": "bench_index_query",
            "features": [{"type": "precomputed", "column": "image_vector", "dim": args.dim}],
            "k": args.k,
            "scope": "global",
            "post_filter": {"candidate_multiplier": 1},
            "quality": {"recall_sample": 0},
            "index": index,
        }
    )


# --- workers: one process per measured step -----------------------------------------------------------


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    if args.worker == "prepare":
        prepare(args, int(args.n), work)
        return {}
    if args.worker == "brute":
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

        chosen = json.loads(args.chosen)
        vectors = np.load(work / "vectors.npy")
        sample = np.load(work / "sample.npy")
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(vectors.shape[1], chosen["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = chosen["ef_construction"]
        index.add(vectors)
        built = time.perf_counter() - started
        index.hnsw.efSearch = max(chosen["ef_search"], args.k + 1)
        scores, ids = index.search(vectors, args.k + 1)
        seconds = time.perf_counter() - started
        found = without_self(scores[sample], ids[sample], sample, args.k)
        return {
            "seconds": round(seconds, 3),
            "build_seconds": round(built, 3),
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
    elif args.worker == "build_index":
        built = [build_index(ctx, part) for part in IndexPlan.read(layout.index_plan_manifest(run_uri)).partitions]
        # With tuning: efSearch calibrated on each built index (what query uses) and its measured recall.
        out = {
            "calibration": [
                {"ef_search": b.ef_search, "measured_recall": b.measured_recall, **b.calibration.model_dump(mode="json")}
                for b in built
                if b.calibration is not None
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
    for key in ("seed", "queries", "target_recall", "budget", "sample_rows", "catalog_partition"):
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
    """Vectors, the query sample, and two run directories holding embedded partitions and their manifests."""
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
    for variant in ("tuned", "p4"):
        # The P=4 run gets the tuned HNSW parameters once plan_index has chosen them (force_partitions).
        config = bench_config(args, n, None if variant == "tuned" else 4, {"hnsw_m": 32, "ef_construction": 200, "ef_search": 128})
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


def force_partitions(args: argparse.Namespace, n: int, workdir: Path, chosen: dict[str, int]) -> None:
    """Point the P=4 run at the tuned HNSW parameters, so only the partitioning differs."""
    from pss_ops import layout, storage
    from pss_ops.manifests import RunContext

    run_uri = str(workdir / "p4")
    ctx = RunContext.read(layout.context(run_uri))
    ctx = ctx.model_copy(update={"config": bench_config(args, n, 4, chosen)})
    storage.write_json(layout.context(run_uri), ctx.model_dump(mode="json"))


def measure_size(args: argparse.Namespace, n: int, root: Path) -> dict[str, Any]:
    """Every method at one n."""
    workdir = root / f"n{n}"
    workdir.mkdir(parents=True)
    print(f"[n={n}] preparing data", file=sys.stderr, flush=True)
    # In a child too: a child's peak RSS starts from its parent's at fork, so the parent must stay small.
    run_worker(args, "prepare", workdir, n=str(n))
    result: dict[str, Any] = {"n": n}
    print(f"[n={n}] brute force", file=sys.stderr, flush=True)
    result["brute"] = run_worker(args, "brute", workdir)
    for variant in ("tuned", "p4"):
        steps: dict[str, Any] = {}
        for step in PIPELINE_STEPS:
            print(f"[n={n}] pipeline {variant}: {step}", file=sys.stderr, flush=True)
            steps[step] = run_worker(args, step, workdir, variant=variant)
        if variant == "tuned":
            tuning = steps["plan_index"]["tuning"]
            chosen = {key: tuning[key] for key in ("hnsw_m", "ef_construction", "ef_search")}
            # The efSearch the tuned query really used: calibrated on the built index(es), not the sample's.
            calibrated = steps["build_index"]["calibration"]
            chosen["ef_search"] = max([c["ef_search"] for c in calibrated], default=chosen["ef_search"])
            # P=4 and the monolithic index search with it too, so they are compared at (about) equal recall.
            force_partitions(args, n, workdir, chosen)
        check = run_worker(args, "recall", workdir, variant=variant)
        result[variant] = {
            "steps": steps,
            "seconds": round(sum(s["seconds"] for s in steps.values()), 3),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in steps.values()),
            "partitions": steps["plan_index"]["partitions"],
            "recall": check["recall"],
        }
    print(f"[n={n}] monolithic HNSW", file=sys.stderr, flush=True)
    result["monolithic"] = run_worker(args, "monolithic", workdir, chosen=json.dumps(chosen))
    result["tuning"] = result["tuned"]["steps"]["plan_index"]["tuning"]
    result["calibration"] = result["tuned"]["steps"]["build_index"]["calibration"]
    result["monolithic"]["ef_search"] = chosen["ef_search"]
    shutil.rmtree(workdir, ignore_errors=True)
    # Each size's figures as soon as they exist, so a long run that is stopped still leaves them.
    print(f"[n={n}] done: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def exponent(ns: list[int], seconds: list[float]) -> float | None:
    """Slope of log(time) against log(n), least squares."""
    if len(ns) < 2:
        return None
    return round(float(np.polyfit(np.log(ns), np.log(seconds), 1)[0]), 3)


def summarise(args: argparse.Namespace, sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios, exponents and the targets, from the measured sizes."""
    ns = [s["n"] for s in sizes]
    largest = sizes[-1]
    exponents = {m: exponent(ns, [s[m]["seconds"] for s in sizes]) for m in ("brute", "monolithic", "tuned", "p4")}
    per_n = {
        str(s["n"]): {
            "pipeline_over_monolithic": round(s["tuned"]["seconds"] / s["monolithic"]["seconds"], 3),
            "p4_over_monolithic": round(s["p4"]["seconds"] / s["monolithic"]["seconds"], 3),
            "brute_over_pipeline": round(s["brute"]["seconds"] / s["tuned"]["seconds"], 2),
        }
        for s in sizes
    }
    ratios = per_n[str(largest["n"])]
    targets = {
        f"recall@{args.k} >= {TARGETS['recall_at_1m']} at n={largest['n']}": {
            "value": round(largest["tuned"]["recall"], 5),
            "met": largest["tuned"]["recall"] >= TARGETS["recall_at_1m"],
        },
        f"tuned pipeline <= {TARGETS['pipeline_over_monolithic']}x monolithic HNSW at n={largest['n']}": {
            "value": ratios["pipeline_over_monolithic"],
            "recall_pipeline": round(largest["tuned"]["recall"], 5),
            "recall_monolithic": round(largest["monolithic"]["recall"], 5),
            "met": ratios["pipeline_over_monolithic"] <= TARGETS["pipeline_over_monolithic"],
        },
        f"tuned pipeline >= {TARGETS['brute_over_pipeline']}x faster than brute force at n={largest['n']}": {
            "value": ratios["brute_over_pipeline"],
            "met": ratios["brute_over_pipeline"] >= TARGETS["brute_over_pipeline"],
        },
        f"time exponent <= {TARGETS['time_exponent']} ({ns[0]}..{ns[-1]})": {
            "value": exponents["tuned"],
            "met": exponents["tuned"] is not None and exponents["tuned"] <= TARGETS["time_exponent"],
        },
    }
    return {"ratios_by_n": per_n, "time_exponent": exponents, "targets": targets}


def _row(n: int, method: str, step: str, figures: dict[str, Any], recall_value: float | None = None, partitions: int | None = None) -> str:
    shown_recall = f"{recall_value:>10.4f}" if recall_value is not None else " " * 10
    shown_parts = f"{partitions:>10}" if partitions is not None else " " * 10
    return f"{n:>9} {method:<22} {step:<12} {figures['seconds']:>9.1f} {figures['peak_rss_mib']:>13.0f} {shown_recall} {shown_parts}"


def print_table(sizes: list[dict[str, Any]], summary: dict[str, Any], k: int) -> None:
    """One row per method and step, then the ratios and targets."""
    header = f"{'n':>9} {'method':<22} {'step':<12} {'seconds':>9} {'peak RSS MiB':>13} {'recall@' + str(k):>10} {'partitions':>10}"
    print(header)
    print("-" * len(header))
    for s in sizes:
        n = s["n"]
        print(_row(n, "brute (extrapolated)", "all", s["brute"], 1.0))
        print(_row(n, "monolithic HNSW", "build+query", s["monolithic"], s["monolithic"]["recall"], 1))
        for variant, label in (("tuned", "pipeline tuned"), ("p4", "pipeline P=4")):
            run = s[variant]
            for step, figures in run["steps"].items():
                print(_row(n, label, step, figures))
            print(_row(n, label, "total", run, run["recall"], run["partitions"]))
        t = s["tuning"]
        print(
            f"{n:>9} tuning: M={t['hnsw_m']} efConstruction={t['ef_construction']} efSearch={t['ef_search']} "
            f"partition_size={t['partition_size']} recall on {t['sample_rows']} sampled rows {t['measured_recall']:.4f}, "
            f"predicted {t['predicted_recall']:.4f} (target {t['target_recall']}), {t['seconds']:.1f}s"
        )
        for number, c in enumerate(s["calibration"]):
            ladder = " ".join(f"{ef}:{r:.4f}" for ef, r in c["ladder"])
            print(
                f"{n:>9} calibrated on built index {number} ({c['queries']} of its rows as queries): efSearch "
                f"{c['planned_ef_search']} -> {c['ef_search']}, recall@{c['k']} {c['measured_recall']:.4f} "
                f"(ladder {ladder}; {c['seconds']:.1f}s); monolithic and P=4 searched at efSearch {s['monolithic']['ef_search']}"
            )
    print()
    for n, ratios in summary["ratios_by_n"].items():
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
    parser.add_argument("--chosen", help=argparse.SUPPRESS)
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
    print_table(sizes, summary, args.k)
    machine = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "max_rss_parent_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(
        json.dumps(
            {
                "bench": "index_query",
                "args": {key: getattr(args, key) for key in ("n", "dim", "k", "queries", "seed", "target_recall", "budget", "sample_rows")},
                "machine": machine,
                "sizes": sizes,
                **summary,
                "total_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
