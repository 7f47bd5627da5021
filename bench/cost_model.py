"""A cost model for `pss run` on AWS Batch, fitted on measured runs here and checked against them.

Reads the run folders `bench/e2e.py --work-dir DIR` leaves (DIR/n<N>/out/run_summary.json and the manifests of
each step), and:
1. fits per-unit costs from the partitions' own manifests: seconds per row for plan, embed, post_filter,
   publish and report; per index partition, build seconds from its rows and number of lists (an inverted file's
   k-means training and assignment are dense products over its lists) or rows alone (exact); per query
   partition, search seconds from the queries and, per index partition of its scope, the rows each query scans
   (nprobe lists of rows/nlist, or every row for exact search) and the centroids it compares;
2. checks the model: each measured run's wall time is predicted from a fit on the other runs only (the local
   executor runs the tasks one after another), and compared with the measured one;
3. predicts a run of 10M and 100M items on AWS Batch: the partitions the planner makes (catalog partitions of
   the run's size per scope), the index partitions and families the tuner chooses within its memory budget
   (search.tuning.choose_for_scope, from the largest measured run's family costs, at the search effort
   calibrated there), array jobs of `chunk_size` partitions, and `--queue-vcpus` shared by tasks of
   `--task-vcpus` each (as measured here: 2). Each array step's wall time is the makespan of its tasks on the
   queue's slots (longest first), plus `--task-overhead` seconds per wave for container start;
4. sets the predicted speedups beside the paper's Table 5.

    .venv/bin/python bench/e2e.py --n 100000,300000,1000000 --work-dir out/e2e
    .venv/bin/python bench/cost_model.py --runs out/e2e
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pss_ops import layout  # noqa: E402
from pss_ops.manifests import (  # noqa: E402
    BuiltIndex,
    CatalogPlan,
    EmbeddedPartition,
    FilteredPartition,
    IndexPlan,
    IndexSpec,
    PublishResult,
    QueriedPartition,
    RunContext,
)
from pss_ops.search.index_cost import choose_for_scope  # noqa: E402

SERIAL_STEPS = ("plan", "plan_index", "publish", "report")
ARRAY_STEPS = ("embed", "build_index", "query", "post_filter")
STEPS = ("plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report")
TOLERANCE = 0.25
# The paper's Table 5 (Amazon PSS): distributed over non-distributed.
PAPER_TABLE_5 = {"index build speedup on 5 partitions": 4.5, "query speedup on 500 partitions": 59.6, "overlap with non-distributed": 0.995}


@dataclass
class IndexPart:
    """One index partition as the model sees it."""

    scope: str
    rows: int
    spec: IndexSpec


@dataclass
class MeasuredRun:
    """One measured run: its shape and every task's measured seconds."""

    n: int
    wall_seconds: float
    step_seconds: dict[str, float]
    plan_rows: int
    embed: list[tuple[int, float]]  # (rows, seconds) per catalog partition
    indexes: list[tuple[IndexPart, float]]
    queries: list[tuple[str, int, float]]  # (scope, queries, seconds) per query partition
    filtered: list[tuple[int, float]]
    published_rows: int
    plan_index_seconds: float
    tuning: Any


def read_run(folder: Path) -> MeasuredRun:
    """The manifests of one `bench/e2e.py` run folder."""
    summary = json.loads((folder / "out" / "run_summary.json").read_text(encoding="utf-8"))
    run = summary["run_uri"]
    plan = CatalogPlan.read(layout.plan_manifest(run))
    index_plan = IndexPlan.read(layout.index_plan_manifest(run))
    built = [BuiltIndex.read(layout.index_manifest(run, p.name)) for p in index_plan.partitions]
    queried = [QueriedPartition.read(layout.query_manifest(run, p.name)) for p in plan.partitions]
    filtered = [FilteredPartition.read(layout.filter_manifest(run, p.name)) for p in plan.partitions]
    embedded = [EmbeddedPartition.read(layout.embed_manifest(run, p.name)) for p in plan.partitions]
    published = PublishResult.read(layout.publish_manifest(run))
    return MeasuredRun(
        n=plan.rows_accepted,
        wall_seconds=float(sum(summary["wall_seconds"].get(s) or 0.0 for s in STEPS)),
        step_seconds={s: float(summary["wall_seconds"].get(s) or 0.0) for s in STEPS},
        plan_rows=plan.rows_read,
        embed=[(e.rows, e.seconds) for e in embedded],
        indexes=[(IndexPart(b.scope, b.rows, b.index), b.seconds) for b in built],
        queries=[(q.scope, q.queries, q.seconds) for q in queried],
        filtered=[(f.rows, f.seconds) for f in filtered],
        published_rows=published.rows,
        plan_index_seconds=index_plan.seconds,
        tuning=index_plan.tuning,
    )


def _lists(spec: IndexSpec, rows: int) -> float:
    return float(max(1, min(spec.nlist, rows))) if spec.family == "ivf" else 0.0


def build_features(part: IndexPart) -> list[float]:
    """What one index partition's build costs in: rows copied and added, dense row-centroid products (ivf)."""
    return [float(part.rows), part.rows * _lists(part.spec, part.rows)]


def query_features(queries: int, scope_indexes: list[IndexPart]) -> list[float]:
    """What one query partition's search costs in: per query, fixed work, rows scanned, centroids compared."""
    scanned = compared = 0.0
    for part in scope_indexes:
        if part.spec.family == "ivf":
            lists = _lists(part.spec, part.rows)
            scanned += min(part.spec.search_effort, lists) * part.rows / lists
            compared += lists
        elif part.spec.family == "flat":
            scanned += part.rows
        else:  # a graph visits about efSearch * 2M nodes
            scanned += part.spec.search_effort * 2 * part.spec.hnsw_m
    return [float(queries), queries * scanned, queries * compared]


@dataclass
class UnitCosts:
    """Seconds per unit of work, fitted by non-negative least squares."""

    plan_per_row: float
    embed_per_row: float
    plan_index: tuple[float, float]  # (seconds, per row)
    build: np.ndarray
    query: np.ndarray
    post_filter_per_row: float
    publish_per_row: float
    report: tuple[float, float]


def _nnls(rows: list[list[float]], seconds: list[float]) -> np.ndarray:
    """Least squares with every coefficient at least 0 (a cost): columns that would go negative are dropped."""
    a, b = np.asarray(rows, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    active = np.ones(a.shape[1], dtype=bool)
    while True:
        scale = np.maximum(np.abs(a[:, active]).max(axis=0), 1e-12)
        solved = np.linalg.lstsq(a[:, active] / scale, b, rcond=None)[0] / scale
        coef = np.zeros(a.shape[1])
        coef[active] = solved
        if (coef >= 0).all():
            return coef
        active &= coef > 0


def _per_unit(pairs: list[tuple[float, float]]) -> float:
    units, seconds = np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float)
    return float(seconds.sum() / max(units.sum(), 1.0))


def _scope_indexes(run: MeasuredRun) -> dict[str, list[IndexPart]]:
    scopes: dict[str, list[IndexPart]] = {}
    for part, _ in run.indexes:
        scopes.setdefault(part.scope, []).append(part)
    return scopes


def fit(runs: list[MeasuredRun]) -> UnitCosts:
    """Unit costs from every task of the given runs."""
    plan_index = np.polyfit([r.n for r in runs], [r.plan_index_seconds for r in runs], 1) if len(runs) > 1 else (0.0, 0.0)
    report = np.polyfit([r.n for r in runs], [r.step_seconds["report"] for r in runs], 1) if len(runs) > 1 else (0.0, 0.0)
    query_rows, query_seconds = [], []
    for run in runs:
        scopes = _scope_indexes(run)
        for scope, queries, seconds in run.queries:
            query_rows.append(query_features(queries, scopes.get(scope, [])))
            query_seconds.append(seconds)
    return UnitCosts(
        plan_per_row=_per_unit([(r.plan_rows, r.step_seconds["plan"]) for r in runs]),
        embed_per_row=_per_unit([pair for r in runs for pair in r.embed]),
        plan_index=(max(float(plan_index[1]), 0.0), max(float(plan_index[0]), 0.0)),
        build=_nnls([build_features(p) for r in runs for p, _ in r.indexes], [s for r in runs for _, s in r.indexes]),
        query=_nnls(query_rows, query_seconds),
        post_filter_per_row=_per_unit([pair for r in runs for pair in r.filtered]),
        publish_per_row=_per_unit([(r.published_rows, r.step_seconds["publish"]) for r in runs]),
        report=(max(float(report[1]), 0.0), max(float(report[0]), 0.0)),
    )


@dataclass
class Shape:
    """What a run is made of: catalog partitions per scope, index partitions, rows published."""

    n: int
    catalog: list[tuple[str, int]]  # (scope, rows) per catalog (= query) partition
    indexes: list[IndexPart]
    published_rows: int


def task_seconds(costs: UnitCosts, shape: Shape) -> dict[str, list[float]]:
    """Predicted seconds of every task of every step."""
    scopes: dict[str, list[IndexPart]] = {}
    for part in shape.indexes:
        scopes.setdefault(part.scope, []).append(part)
    return {
        "plan": [costs.plan_per_row * shape.n],
        "embed": [costs.embed_per_row * rows for _, rows in shape.catalog],
        "plan_index": [costs.plan_index[0] + costs.plan_index[1] * shape.n],
        "build_index": [float(np.dot(costs.build, build_features(p))) for p in shape.indexes],
        "query": [float(np.dot(costs.query, query_features(rows, scopes.get(scope, [])))) for scope, rows in shape.catalog],
        "post_filter": [costs.post_filter_per_row * rows * shape.published_rows / max(shape.n, 1) for _, rows in shape.catalog],
        "publish": [costs.publish_per_row * shape.published_rows],
        "report": [costs.report[0] + costs.report[1] * shape.n],
    }


def makespan(tasks: list[float], slots: int, overhead: float) -> float:
    """Wall time of tasks on `slots` parallel slots, longest first, each paying the start overhead."""
    if not tasks:
        return 0.0
    finish = [0.0] * max(1, min(slots, len(tasks)))
    for seconds in sorted(tasks, reverse=True):
        heapq.heapreplace(finish, finish[0] + seconds + overhead)
    return max(finish)


def shape_of(run: MeasuredRun) -> Shape:
    """The measured run's own shape: its partitions, and the indexes as built (the effort as calibrated)."""
    return Shape(
        n=run.n,
        catalog=[(scope, queries) for scope, queries, _ in run.queries],
        indexes=[p for p, _ in run.indexes],
        published_rows=run.published_rows,
    )


def check(runs: list[MeasuredRun]) -> list[dict[str, Any]]:
    """Each run's wall time predicted from a fit on the others (one task after another, as `pss run` runs them)."""
    rows = []
    for held_out in runs:
        others = [r for r in runs if r is not held_out]
        costs = fit(others)
        tasks = task_seconds(costs, shape_of(held_out))
        steps = {step: round(sum(seconds), 1) for step, seconds in tasks.items()}
        predicted = sum(steps.values())
        rows.append(
            {
                "n": held_out.n,
                "fitted_on": [r.n for r in others],
                "measured_seconds": round(held_out.wall_seconds, 1),
                "predicted_seconds": round(predicted, 1),
                "error": round(predicted / held_out.wall_seconds - 1, 3),
                "within_tolerance": abs(predicted / held_out.wall_seconds - 1) <= TOLERANCE,
                "steps_measured": {s: round(v, 1) for s, v in held_out.step_seconds.items()},
                "steps_predicted": steps,
            }
        )
    return rows


def planned_shape(n: int, largest: MeasuredRun, catalog_partition: int, budget: int, dim: int) -> Shape:
    """The shape of an n-item run whose categories keep the largest measured run's proportions.

    Catalog partitions of `catalog_partition` rows per scope; per scope the tuner's choice from the measured run's
    family costs within the memory budget; an inverted file at the effort calibrated on the measured run.
    """
    measured_scope_rows: dict[str, int] = {}
    for scope, queries, _ in largest.queries:
        measured_scope_rows[scope] = measured_scope_rows.get(scope, 0) + queries
    efforts = {p.spec.family: p.spec.search_effort for p, _ in largest.indexes}
    families = [
        f.model_copy(update={"index": f.index.model_copy(update={"search_effort": efforts.get(f.index.family, f.index.search_effort)})})
        for f in largest.tuning.families
    ]
    catalog, indexes = [], []
    for scope, rows in measured_scope_rows.items():
        scope_rows = round(rows * n / largest.n)
        count = math.ceil(scope_rows / catalog_partition)
        catalog += [(scope, math.ceil(scope_rows / count))] * count
        choice = choose_for_scope(families, scope, scope_rows, dim=dim, budget=budget, cap=10**12)
        indexes += [IndexPart(scope, choice.partition_rows, choice.index)] * choice.partitions
    return Shape(n=n, catalog=catalog, indexes=indexes, published_rows=round(largest.published_rows * n / largest.n))


def _index_summary(indexes: list[IndexPart]) -> list[str]:
    """Per family: how many partitions, their rows and (ivf) lists and nprobe, e.g. 'IVF x16: 1,038-3,495 lists'."""
    lines = []
    for family in sorted({p.spec.family for p in indexes}):
        parts = [p for p in indexes if p.spec.family == family]
        rows = f"{min(p.rows for p in parts):,}-{max(p.rows for p in parts):,} rows"
        if family == "ivf":
            lists = f"{min(p.spec.nlist for p in parts):,}-{max(p.spec.nlist for p in parts):,} lists"
            efforts = "/".join(str(e) for e in sorted({p.spec.search_effort for p in parts}))
            lines.append(f"IVF x{len(parts)}: {rows}, {lists}, nprobe {efforts}")
        else:
            lines.append(f"{parts[0].spec.describe()} x{len(parts)}: {rows}")
    return lines


def batch_prediction(costs: UnitCosts, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    """Wall time and vCPU-hours of the shape on Batch, and the distributed speedups set beside Table 5."""
    tasks = task_seconds(costs, shape)
    slots = args.queue_vcpus // args.task_vcpus
    walls, arrays = {}, {}
    for step, seconds in tasks.items():
        if step in ARRAY_STEPS:
            walls[step] = makespan(seconds, slots, args.task_overhead)
            arrays[step] = {
                "tasks": len(seconds),
                "array_jobs": math.ceil(len(seconds) / args.chunk_size),
                "longest_task_s": round(max(seconds), 1),
            }
        else:
            walls[step] = sum(seconds) + args.task_overhead
    cpu_seconds = sum(sum(s) + args.task_overhead * len(s) for s in tasks.values())
    serial_build, serial_query = sum(tasks["build_index"]), sum(tasks["query"])
    return {
        "n": shape.n,
        "catalog_partitions": len(shape.catalog),
        "index_partitions": len(shape.indexes),
        "indexes": _index_summary(shape.indexes),
        "wall_hours": round(sum(walls.values()) / 3600, 2),
        "step_wall_minutes": {s: round(w / 60, 1) for s, w in walls.items()},
        "vcpu_hours": round(cpu_seconds * args.task_vcpus / 3600, 1),
        "arrays": arrays,
        "speedup_index_build": round(serial_build / max(walls["build_index"] - args.task_overhead, 1e-9), 1),
        "speedup_query": round(serial_query / max(walls["query"] - args.task_overhead, 1e-9), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="a bench/e2e.py --work-dir holding n<N>/out of each measured run")
    parser.add_argument("--predict", default="10000000,100000000", help="catalog sizes to predict on Batch")
    parser.add_argument("--queue-vcpus", type=int, default=256, help="the Batch compute environment's maximum vCPUs")
    parser.add_argument("--task-vcpus", type=int, default=2, help="vCPUs per task (the per-task costs were measured on 2)")
    parser.add_argument("--task-overhead", type=float, default=60.0, help="seconds per task for scheduling and container start")
    parser.add_argument("--chunk-size", type=int, default=100, help="partitions per array job (batch.chunk_size)")
    args = parser.parse_args()
    folders = sorted(Path(args.runs).glob("n*/out/run_summary.json"), key=lambda p: int(p.parent.parent.name[1:]))
    runs = [read_run(p.parent.parent) for p in folders]
    if len(runs) < 2:
        raise SystemExit(f"pss: error: {args.runs} holds {len(runs)} measured run(s); the model needs at least 2")
    checked = check(runs)
    costs = fit(runs)
    largest = runs[-1]
    ctx = RunContext.read(layout.context(json.loads((folders[-1]).read_text())["run_uri"]))
    tuning = ctx.config.index.tuning
    budget = largest.tuning.memory_budget_bytes if largest.tuning is not None else 8 << 30
    catalog_partition = ctx.config.catalog.partition_size
    predictions = [
        batch_prediction(costs, planned_shape(int(n), largest, catalog_partition, budget, ctx.config.dim), args)
        for n in args.predict.split(",")
    ]

    print(f"{'n':>10} {'fitted on':>22} {'measured s':>11} {'predicted s':>12} {'error':>7}")
    for row in checked:
        fitted = ",".join(f"{n:,}" for n in row["fitted_on"])
        print(f"{row['n']:>10,} {fitted:>22} {row['measured_seconds']:>11.1f} {row['predicted_seconds']:>12.1f} {row['error']:>+7.1%}")
        print(
            "           per step measured/predicted: "
            + ", ".join(f"{s} {row['steps_measured'][s]}/{row['steps_predicted'][s]}" for s in STEPS)
        )
    print()
    print(
        f"AWS Batch, {args.queue_vcpus} vCPUs, {args.task_vcpus} per task, {args.task_overhead:.0f} s start per task, "
        f"chunks of {args.chunk_size}:"
    )
    for p in predictions:
        print(
            f"{p['n']:>12,} items: {p['wall_hours']:.2f} h wall, {p['vcpu_hours']:.1f} vCPU-hours; {p['catalog_partitions']} catalog and "
            f"{p['index_partitions']} index partitions ({'; '.join(p['indexes'])}); build {p['speedup_index_build']}x and query "
            f"{p['speedup_query']}x faster than one task doing all; step minutes {p['step_wall_minutes']}"
        )
    print("paper Table 5: " + ", ".join(f"{k} {v}" for k, v in PAPER_TABLE_5.items()))
    print(
        json.dumps(
            {
                "bench": "cost_model",
                "args": {k: v for k, v in vars(args).items()},
                "tuning": None if tuning is None else tuning.model_dump(mode="json"),
                "check": checked,
                "all_within_tolerance": all(r["within_tolerance"] for r in checked),
                "tolerance": TOLERANCE,
                "unit_costs": {
                    "plan_per_row": costs.plan_per_row,
                    "embed_per_row": costs.embed_per_row,
                    "plan_index": costs.plan_index,
                    "build": costs.build.tolist(),
                    "query": costs.query.tolist(),
                    "post_filter_per_row": costs.post_filter_per_row,
                    "publish_per_row": costs.publish_per_row,
                    "report": costs.report,
                },
                "predictions": predictions,
                "paper_table_5": PAPER_TABLE_5,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
