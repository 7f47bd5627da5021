"""End to end: `pss run` on a synthetic catalog of N items with precomputed vectors, publishing to SQLite.

Each size runs the real CLI in its own process, so the peak RSS reported (the child's ru_maxrss, from
wait4) is the run's own. Time per step comes from the run summary; catalog generation is not timed.

    .venv/bin/python bench/e2e.py --n 100000,1000000 --dim 128

The catalog is Parquet with a list<float32> `image_vector` column (clustered unit vectors with planted
near-duplicates, bench/synthetic.py), a category per item from the vectors' geometry (uneven sizes, as
real categories are) and a seller per item (Zipf-like), so the post-filter "different seller" has work.
The vector column is written without dictionary pages, as an embedding export would be.

The index is tuned as the shipped example configs tune it (index.tuning, recall target --target-recall):
per category the tuner picks the cheapest family, and the run summary's sampled recall@k against exact
search is reported beside the timings. Each family side by side is measured by bench/index_query.py. On a
shared machine, compare wall time with the run's CPU seconds and the load average printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import clustered_vectors  # noqa: E402

STEPS = ("plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report")
CATEGORIES = 16
SELLERS = 5_000
WRITE_ROWS = 100_000
TARGET_SECONDS = 240
TARGET_RSS_GIB = 2.0


def write_catalog(path: Path, n: int, dim: int, seed: int) -> dict[str, int]:
    """The synthetic catalog as Parquet; returns the item count per category."""
    vectors = clustered_vectors(n, dim, seed)
    rng = np.random.default_rng(seed + 1)
    # Categories follow the geometry (nearest of a few random directions), so neighbours mostly share one.
    directions = rng.standard_normal((CATEGORIES, dim)).astype(np.float32)
    sellers = np.minimum(rng.zipf(1.3, n), SELLERS) - 1
    sizes: dict[str, int] = {}
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("category", pa.string()),
            ("brand", pa.string()),
            ("seller", pa.string()),
            ("image_vector", pa.list_(pa.float32())),
        ]
    )
    # As an upstream embedding export would write it: dictionary pages for the text columns only.
    with pq.ParquetWriter(path, schema, use_dictionary=["item_id", "title", "category", "brand", "seller"]) as writer:
        for start in range(0, n, WRITE_ROWS):
            block = vectors[start : start + WRITE_ROWS]
            rows = np.arange(start, start + len(block))
            category = np.argmax(block @ directions.T, axis=1)
            names = [f"cat-{c:02d}" for c in category]
            for name in names:
                sizes[name] = sizes.get(name, 0) + 1
            flat = pa.array(block.reshape(-1), pa.float32())
            offsets = pa.array(np.arange(0, len(block) * dim + 1, dim, dtype=np.int32))
            writer.write_table(
                pa.table(
                    {
                        "item_id": [f"item-{i:08d}" for i in rows],
                        "title": [f"Synthetic product {i}" for i in rows],
                        "category": names,
                        "brand": [f"brand-{i % 997}" for i in rows],
                        "seller": [f"seller-{s:05d}" for s in sellers[rows]],
                        "image_vector": pa.ListArray.from_arrays(offsets, flat),
                    },
                    schema=schema,
                )
            )
    return dict(sorted(sizes.items()))


def bench_config(dim: int, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """The run's config: precomputed vectors only, same category, different seller."""
    return {
        "application": "e2e_bench",
        "features": [{"type": "precomputed", "column": "image_vector", "dim": dim}],
        "k": args.k,
        "scope": "category",
        "index": {"tuning": {"target_recall": args.target_recall, "memory_budget": args.budget}},
        "catalog": {"partition_size": args.catalog_partition_size, "max_reject_fraction": 0.01},
        "post_filter": {"different": ["seller"], "candidate_multiplier": 4},
        "cache": {"uri": str(cache)},
        "quality": {"recall_sample": args.recall_sample},
    }


def run_once(n: int, dim: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate, run `pss run` in a child process, and collect its summary, wall time and peak RSS."""
    folder = work / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    catalog = folder / "catalog.parquet"
    started = time.perf_counter()
    sizes = write_catalog(catalog, n, dim, args.seed)
    generate_seconds = time.perf_counter() - started
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(bench_config(dim, args, folder / "cache.sqlite"), sort_keys=False), encoding="utf-8")
    out = folder / "out"
    command = [sys.executable, "-m", "pss_ops.cli", "run", "--config", str(config_path), "--catalog", str(catalog), "--out", str(out)]
    log_path = folder / "run.log"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.stderr.write(log_path.read_text(encoding="utf-8")[-4000:])
        raise SystemExit(f"pss run failed for n={n} (exit {child.returncode}); log: {log_path}")
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    return {
        "n": n,
        "dim": dim,
        "categories": len(sizes),
        "largest_category": max(sizes.values()),
        "generate_seconds": round(generate_seconds, 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        # CPU seconds the run used, and the machine's 1-minute load around it: on a shared machine wall time
        # above cpu_seconds / cores is time spent waiting for a core.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "step_seconds": {s: summary["wall_seconds"].get(s) for s in STEPS},
        "catalog_partitions": summary["counts"]["catalog_partitions"],
        "index_partitions": summary["counts"]["index_partitions"],
        "rows_published": summary["counts"]["rows_published"],
        "queries_short_of_k": summary["counts"]["queries_short_of_k"],
        "recall_at_k": summary["search"]["recall_at_k"],
        "indexes": summary["search"]["index_used"]["indexes"],
        "tuning_seconds": (summary["search"].get("tuning") or {}).get("seconds"),
        "sqlite_rows": summary["publish"]["rows"],
    }


def table(results: list[dict[str, Any]]) -> str:
    """Seconds per step (the run's own wall clock) and peak RSS, one column per size."""
    header = f"{'':<22}" + "".join(f"{'n=' + format(r['n'], ','):>16}" for r in results)
    lines = [header]
    for step in STEPS:
        lines.append(f"{step + ' s':<22}" + "".join(f"{r['step_seconds'][step] or 0:>16.1f}" for r in results))
    rows = [
        ("total wall s", "wall_seconds", "{:>16.1f}"),
        ("run CPU s", "cpu_seconds", "{:>16.1f}"),
        ("peak RSS MiB", "peak_rss_mib", "{:>16.0f}"),
        ("catalog partitions", "catalog_partitions", "{:>16d}"),
        ("index partitions", "index_partitions", "{:>16d}"),
        ("rows published", "rows_published", "{:>16,d}"),
        ("queries short of k", "queries_short_of_k", "{:>16,d}"),
        ("recall@k vs exact", "recall_at_k", "{:>16.4f}"),
        ("tuner s", "tuning_seconds", "{:>16.1f}"),
    ]
    for label, key, fmt in rows:
        lines.append(f"{label:<22}" + "".join(fmt.format(r[key]) for r in results))
    lines.append(f"{'load average 1 min':<22}" + "".join(f"{r['load_average'][0]:>7.2f} → {r['load_average'][1]:<6.2f}" for r in results))
    for r in results:
        lines.append(f"n={r['n']:,} indexes: {'; '.join(r['indexes'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100000,300000,1000000", help="comma-separated catalog sizes")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-recall", type=float, default=0.995)
    parser.add_argument("--budget", default="8G", help="index.tuning.memory_budget")
    parser.add_argument("--catalog-partition-size", type=int, default=100_000)
    parser.add_argument("--recall-sample", type=int, default=200)
    parser.add_argument("--work-dir", help="keep catalogs and runs here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.n.split(",") if s.strip()]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="pss-e2e-"))
    try:
        results = [run_once(n, args.dim, args, work) for n in sizes]
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    largest = results[-1]
    payload = {
        "bench": "e2e",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {k: v for k, v in vars(args).items() if k not in ("n", "work_dir")},
        "results": results,
        "targets": {
            "n": largest["n"],
            "wall_seconds": largest["wall_seconds"],
            "wall_target_seconds": TARGET_SECONDS,
            "wall_met": largest["wall_seconds"] <= TARGET_SECONDS,
            "peak_rss_gib": round(largest["peak_rss_mib"] / 1024, 3),
            "rss_target_gib": TARGET_RSS_GIB,
            "rss_met": largest["peak_rss_mib"] / 1024 <= TARGET_RSS_GIB,
        },
    }
    print(table(results))
    print(json.dumps(payload, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
