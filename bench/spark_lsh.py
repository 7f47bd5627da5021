"""Spark ML LSH against our faiss HNSW: recall@k against exact search and wall time, on the same vectors.

The tool a data engineer would otherwise pick: `BucketedRandomProjectionLSH.approxSimilarityJoin` (Spark ML,
local[2], offline). In one run, on the same synthetic clustered unit vectors with planted near-duplicates
(bench/synthetic.py):
  exact  faiss IndexFlatIP: the ground truth (top-k by inner product = by Euclidean distance on unit vectors)
  ours   one faiss IndexHNSWFlat with the pipeline's default M, efConstruction and efSearch (IndexConfig)
  spark  approxSimilarityJoin(queries, catalog, threshold) per (bucketLength, numHashTables), then the k
         nearest per query by a window; the threshold is the largest exact k-th distance of the queries,
         so the threshold never drops a true neighbour (generous to Spark)
Both sides answer the same queries (every item, or a sample with --queries) against all n items, self
excluded, and both times include building the index (Spark: fit + hashing inside the join) and the search.
Spark's one projection per hash table separates near from far poorly in 128 dimensions, so a self-join of
all n items at useful recall joins billions of candidate pairs: the default is a query sample, and the
time for every item is measured for us and estimated for Spark (fixed cost + per-query cost × n).
Vectors go to Spark as Parquet, as a pipeline would hand them over; JVM start-up is timed apart.
Prints a table, then one JSON line.

    .venv/bin/python bench/spark_lsh.py --n 100000 --dim 128 --k 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import clustered_vectors  # noqa: E402
from pss_ops.quality.recall import recall_with_ties  # noqa: E402

FEW_QUERIES = 10  # the join that measures Spark's fixed cost
DEFAULT_SPARK_CONFIGS = "0.01x5,0.02x10"  # bucketLength x numHashTables; 0.05x5 ran > 6 min on 1,000 queries


def recall_at_k(found: list[np.ndarray], exact: np.ndarray, k: int) -> float:
    """Recall@k of the found cosines against each query's exact top-k cosines, ties counted (the pipeline's definition)."""
    return recall_with_ties([np.asarray(f)[:k] for f in found], exact)


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Each query's exact top-k cosines (self excluded) and the seconds it took."""
    import faiss

    start = time.perf_counter()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, ids = index.search(vectors[queries], k + 1)
    seconds = time.perf_counter() - start
    kept = np.array([s[i != q][:k] for s, i, q in zip(scores, ids, queries)])
    return kept, seconds


def ours(vectors: np.ndarray, queries: np.ndarray, k: int) -> dict[str, Any]:
    """faiss HNSW as the pipeline builds and queries it (default IndexConfig): build, then the queries, then every item."""
    import faiss

    from pss_ops.config import IndexConfig

    params = IndexConfig()
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.add(vectors)
    build = time.perf_counter() - start
    index.hnsw.efSearch = max(params.ef_search, k + 1)
    start = time.perf_counter()
    scores, ids = index.search(vectors[queries], k + 1)
    search = time.perf_counter() - start
    start = time.perf_counter()
    index.search(vectors, k + 1)  # the whole job: every item's neighbours
    search_all = time.perf_counter() - start
    return {
        "found": [s[(i != q) & (i >= 0)][:k] for s, i, q in zip(scores, ids, queries)],
        "build_s": build,
        "seconds": build + search,
        "all_items_seconds": build + search_all,
        "params": {"M": params.hnsw_m, "efConstruction": params.ef_construction, "efSearch": index.hnsw.efSearch},
    }


def spark_session(memory: str) -> Any:
    """local[2], offline: no UI, no package resolution, bound to 127.0.0.1."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("pss-bench-spark-lsh")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", memory)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.adaptive.enabled", "true")
        .getOrCreate()
    )


def write_parquet(vectors: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """Rows of (id, vector as a float list): how the vectors would reach Spark from our pipeline."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    flat = pa.array(vectors[rows].reshape(-1), pa.float32())
    table = pa.table(
        {
            "id": pa.array(rows, pa.int64()),
            "values": pa.ListArray.from_arrays(pa.array(np.arange(0, len(rows) * dim + 1, dim, dtype=np.int32)), flat),
        }
    )
    pq.write_table(table, path)


def spark_lsh(
    spark: Any,
    catalog_path: Path,
    queries_path: Path,
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    threshold: float,
    bucket_length: float,
    tables: int,
    seed: int,
) -> dict[str, Any]:
    """One approxSimilarityJoin of the queries against the catalog; top-k per query by a window; recall inputs."""
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    start = time.perf_counter()
    catalog = spark.read.parquet(str(catalog_path)).select("id", array_to_vector("values").alias("features"))
    probe = spark.read.parquet(str(queries_path)).select("id", array_to_vector("values").alias("features"))
    model = BucketedRandomProjectionLSH(
        inputCol="features", outputCol="hashes", bucketLength=bucket_length, numHashTables=tables, seed=seed
    ).fit(catalog)
    joined = model.approxSimilarityJoin(probe, catalog, threshold, distCol="distance").select(
        F.col("datasetA.id").alias("query"), F.col("datasetB.id").alias("item"), "distance"
    )
    nearest = joined.where(F.col("query") != F.col("item")).withColumn(
        "rank", F.row_number().over(Window.partitionBy("query").orderBy("distance", "item"))
    )
    rows = nearest.where(F.col("rank") <= k).select("query", "item").collect()
    seconds = time.perf_counter() - start
    by_query: dict[int, list[int]] = {int(q): [] for q in queries}
    for row in rows:
        by_query[int(row["query"])].append(int(row["item"]))
    # Cosines recomputed from the same float32 vectors both sides use, best first.
    found = [np.sort(vectors[by_query[int(q)]] @ vectors[int(q)])[::-1] if by_query[int(q)] else np.zeros(0, np.float32) for q in queries]
    answered = sum(1 for q in queries if by_query[int(q)])
    return {"seconds": seconds, "found": found, "answered": answered, "pairs_returned": len(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="catalog size")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", default="1000", help="query sample size, or 'all' for a full self-join")
    parser.add_argument("--spark", default=DEFAULT_SPARK_CONFIGS, help="comma-separated bucketLength x numHashTables, e.g. 0.02x10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spark-memory", default="6g")
    args = parser.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(2)  # Spark gets local[2]; the same two cores for us
    vectors = clustered_vectors(args.n, args.dim, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    q = args.n if args.queries == "all" else min(int(args.queries), args.n)
    queries = np.arange(args.n) if q == args.n else np.sort(rng.choice(args.n, size=q, replace=False))
    print(f"n={args.n} dim={args.dim} k={args.k} queries={q}; load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)

    exact, exact_seconds = exact_search(vectors, queries, args.k)
    exact_kth = exact[:, args.k - 1]
    # Unit vectors: |a-b|² = 2 - 2 cos; the largest exact k-th distance, plus rounding room.
    threshold = float(np.sqrt(max(0.0, 2 - 2 * float(exact_kth.min())))) + 1e-4
    mine = ours(vectors, queries, args.k)
    our_seconds, our_params = mine["seconds"], mine["params"]
    our_recall = recall_at_k(mine["found"], exact, args.k)
    print(f"  exact {exact_seconds:.2f}s, ours {our_seconds:.2f}s recall {our_recall:.4f}", file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="pss-bench-spark-") as work:
        write_parquet(vectors, np.arange(args.n), Path(work) / "catalog.parquet")
        write_parquet(vectors, queries, Path(work) / "queries.parquet")
        few = queries[: min(FEW_QUERIES, q)]
        write_parquet(vectors, few, Path(work) / "few.parquet")
        start = time.perf_counter()
        spark = spark_session(args.spark_memory)
        spark.range(1).count()
        jvm_seconds = time.perf_counter() - start
        spark.sparkContext.setLogLevel("ERROR")
        try:
            for spec in args.spark.split(","):
                bucket_length, tables = float(spec.split("x")[0]), int(spec.split("x")[1])
                result = spark_lsh(
                    spark,
                    Path(work) / "catalog.parquet",
                    Path(work) / "queries.parquet",
                    queries,
                    vectors,
                    args.k,
                    threshold,
                    bucket_length,
                    tables,
                    args.seed,
                )
                recall = recall_at_k(result["found"], exact, args.k)
                # Spark's time for every item, estimated: the same join with a handful of queries is its fixed
                # cost (reading, fitting, hashing the catalog); the rest grows with the number of queries.
                estimate = None
                if q < args.n:
                    fixed = spark_lsh(
                        spark,
                        Path(work) / "catalog.parquet",
                        Path(work) / "few.parquet",
                        few,
                        vectors,
                        args.k,
                        threshold,
                        bucket_length,
                        tables,
                        args.seed,
                    )["seconds"]
                    per_query = max(result["seconds"] - fixed, 0.0) / (q - len(few))
                    estimate = fixed + per_query * (args.n - len(few))
                rows.append(
                    {
                        "bucket_length": bucket_length,
                        "hash_tables": tables,
                        "seconds": result["seconds"],
                        "recall": recall,
                        "answered_fraction": result["answered"] / q,
                        "our_recall_over_spark": our_recall / recall if recall > 0 else None,
                        "our_time_over_spark": our_seconds / result["seconds"],
                        "all_items_seconds_estimate": estimate if estimate is not None else result["seconds"],
                        "all_items_measured": estimate is None,
                        "our_time_over_spark_all_items": mine["all_items_seconds"]
                        / (estimate if estimate is not None else result["seconds"]),
                    }
                )
                print(f"  spark {spec}: {result['seconds']:.2f}s recall {recall:.4f}", file=sys.stderr, flush=True)
        finally:
            spark.stop()

    print(f"\nrecall@{args.k} against exact (faiss IndexFlatIP), n={args.n}, dim={args.dim}, {q} queries against all n, self excluded")
    header = f"{'method':34s} {'seconds':>9s} {f'recall@{args.k}':>10s} {'ours/it recall':>15s} {'ours/it time':>13s}"
    print(f"{header} {'all-items s':>12s} {'ours/it':>9s}")
    print(f"{'exact (IndexFlatIP)':34s} {exact_seconds:9.2f} {1.0:10.4f}")
    label = "ours (HNSW M={M} efC={efConstruction} efS={efSearch})".format(**our_params)
    print(f"{label:34s} {our_seconds:9.2f} {our_recall:10.4f} {'':15s} {'':13s} {mine['all_items_seconds']:12.2f}")
    for r in rows:
        label = f"spark LSH bucket={r['bucket_length']} tables={r['hash_tables']}"
        ratio = f"{r['our_recall_over_spark']:14.2f}x" if r["our_recall_over_spark"] is not None else f"{'inf':>15s}"
        everything = (
            f"{r['all_items_seconds_estimate']:11.0f}{'' if r['all_items_measured'] else '*'} {r['our_time_over_spark_all_items']:8.4f}x"
        )
        print(f"{label:34s} {r['seconds']:9.2f} {r['recall']:10.4f} {ratio} {r['our_time_over_spark']:12.4f}x {everything}")
    print("(* estimated: Spark's fixed cost, measured with a handful of queries, plus its measured per-query cost times n)")
    print(f"(Spark JVM start-up, not in the times above: {jvm_seconds:.1f}s; join threshold {threshold:.4f})")
    best = max(rows, key=lambda r: r["recall"]) if rows else None
    payload = {
        "bench": "spark_lsh",
        "n": args.n,
        "dim": args.dim,
        "k": args.k,
        "queries": q,
        "seed": args.seed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()[0]},
        "exact_seconds": exact_seconds,
        "ours": {
            "seconds": our_seconds,
            "build_seconds": mine["build_s"],
            "all_items_seconds": mine["all_items_seconds"],
            "recall": our_recall,
            **our_params,
        },
        "spark": rows,
        "spark_jvm_seconds": jvm_seconds,
        "threshold": threshold,
        "best_spark": best,
        "our_recall_over_spark": best["our_recall_over_spark"] if best else None,
        "our_time_over_spark": best["our_time_over_spark"] if best else None,
        "our_time_over_spark_all_items": best["our_time_over_spark_all_items"] if best else None,
    }
    print(json.dumps(payload, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
