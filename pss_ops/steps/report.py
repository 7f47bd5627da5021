"""Step 8, report: the run summary with counts, time per step, rejects, cache and search recall, and the report page."""

from __future__ import annotations

import logging
from typing import Any

from pss_ops import layout, storage
from pss_ops.manifests import (
    BuiltIndex,
    CatalogPlan,
    EmbeddedPartition,
    FilteredPartition,
    IndexPlan,
    PublishResult,
    QueriedPartition,
    RunContext,
)
from pss_ops.quality.search_recall import sampled_recall
from pss_ops.reporting.page import write_page
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def _tuning_summary(index_plan: IndexPlan) -> dict[str, Any] | None:
    """The tuner's choice per scope and its measured recall; the trial grid stays in the index plan manifest."""
    if index_plan.tuning is None:
        return None
    tuning = index_plan.tuning
    return {
        **tuning.model_dump(mode="json", exclude={"trials", "families", "scopes"}),
        "chosen": tuning.chosen.describe(),
        "families": [
            {"index": f.index.describe(), "recall_sample": f.recall_sample, "meets_target": f.meets_target} for f in tuning.families
        ],
        "scopes": [
            {
                "scope": c.scope,
                "rows": c.rows,
                "partitions": c.partitions,
                "index": c.index.describe(),
                "predicted_cpu_seconds": c.predicted_cpu_seconds,
            }
            for c in tuning.scopes
        ],
        "trials": len(tuning.trials),
    }


def _met_target(built: BuiltIndex) -> bool:
    """Whether the index as searched meets the target: calibrated to it, or exact search after a family gave way."""
    return built.index.family == "flat" or built.calibrations[-1].met_target


def _calibration_summary(built: list[BuiltIndex]) -> dict[str, Any] | None:
    """The search effort calibrated per built index and its measured recall@k; the lowest recall is the run's."""
    calibrated = [b for b in built if b.calibrations and b.measured_recall is not None]
    if not calibrated:
        return None
    return {
        "partitions": [
            {
                "name": b.name,
                "rows": b.rows,
                "planned": b.calibrations[0].index.describe(),
                "index": b.index.describe(),
                "families_built": len(b.calibrations) + (b.index.family == "flat"),
                "measured_recall": b.measured_recall,
                "queries": b.calibrations[-1].queries,
                "met_target": _met_target(b),
            }
            for b in calibrated
        ],
        "min_measured_recall": min(b.measured_recall for b in calibrated if b.measured_recall is not None),
        "met_target": all(_met_target(b) for b in calibrated),
    }


def _scopes_without_candidates(queried: list[QueriedPartition]) -> list[str]:
    """Scopes whose every query was left without an eligible candidate by the attribute rules."""
    scopes: dict[str, bool] = {}
    for q in queried:
        scopes[q.scope] = scopes.get(q.scope, True) and q.queries_without_candidates == q.queries
    return sorted(scope for scope, empty in scopes.items() if empty)


def _matching_summary(
    ctx: RunContext, filtered: list[FilteredPartition], queried: list[QueriedPartition], published: PublishResult
) -> dict[str, Any] | None:
    """The matcher's share of the run: which one, its decisions, its groups, and its time beside the search's."""
    matcher = ctx.config.matcher
    if matcher is None:
        return None
    matching_seconds = round(sum(f.matching_seconds or 0.0 for f in filtered), 3)
    query_seconds = sum(q.seconds for q in queried)
    return {
        "matcher_id": matcher.model_id,
        "registry_uri": matcher.registry_uri,
        "match_threshold": matcher.match_threshold,
        "rows_matched": sum(f.rows_matched or 0 for f in filtered),
        "duplicate_groups": published.duplicate_groups,
        "items_in_groups": published.items_in_groups,
        "seconds": matching_seconds,
        # The budget: matching adds at most a quarter to the search (query) step.
        "seconds_over_query": round(matching_seconds / query_seconds, 4) if query_seconds else None,
    }


def report(ctx: RunContext, *, wall_seconds: dict[str, float] | None = None, published: PublishResult | None = None) -> dict[str, Any]:
    """Gather every manifest of the run into run_summary.json, draw its report page (report.html), and return the summary.

    published stands in for the publish manifest when the report is written before the warehouse commits (pss run).
    """
    with timed("report"):
        plan = CatalogPlan.read(layout.plan_manifest(ctx.run_uri))
        embedded = [EmbeddedPartition.read(layout.embed_manifest(ctx.run_uri, p.name)) for p in plan.partitions]
        index_plan = IndexPlan.read(layout.index_plan_manifest(ctx.run_uri))
        built = [BuiltIndex.read(layout.index_manifest(ctx.run_uri, p.name)) for p in index_plan.partitions]
        queried = [QueriedPartition.read(layout.query_manifest(ctx.run_uri, p.name)) for p in plan.partitions]
        filtered = [FilteredPartition.read(layout.filter_manifest(ctx.run_uri, p.name)) for p in plan.partitions]
        published = published or PublishResult.read(layout.publish_manifest(ctx.run_uri))
        quality = sampled_recall(ctx, embedded, queried, index_plan, built)

    removed: dict[str, int] = {}
    for f in filtered:
        for rule, count in f.candidates_removed.items():
            removed[rule] = removed.get(rule, 0) + count
    summary: dict[str, Any] = {
        "application": ctx.application,
        "snapshot_date": ctx.snapshot_date.isoformat(),
        "run_id": ctx.run_id,
        "model_id": ctx.model_id,
        "catalog": ctx.catalog_uri,
        "run_uri": ctx.run_uri,
        "categories": list(plan.categories),
        "counts": {
            "rows_read": plan.rows_read,
            "rows_accepted": plan.rows_accepted,
            "rows_rejected": plan.rows_rejected,
            "rows_out_of_scope": plan.rows_out_of_scope,
            "catalog_partitions": len(plan.partitions),
            "index_partitions": len(built),
            "queries": sum(q.queries for q in queried),
            "rows_published": published.rows,
            "queries_short_of_k": sum(f.queries_short_of_k for f in filtered),
        },
        "rejects": {
            "count": plan.rows_rejected,
            "fraction": round(plan.rows_rejected / plan.rows_read, 6) if plan.rows_read else 0.0,
            "reasons": plan.reject_reasons,
            "file": plan.rejects_uri,
        },
        "cache": {
            "uri": ctx.cache_uri,
            "full_refresh": ctx.full_refresh,
            "hits": sum(e.cache_hits for e in embedded),
            "misses": sum(e.cache_misses for e in embedded),
            # Rows whose precomputed vectors were normalised directly, without the cache.
            "bypassed": sum(e.rows for e in embedded if not e.cache_used),
        },
        "search": {
            **quality,
            "index": ctx.config.index.model_dump(),
            # What the indexes were built and searched with: the tuner's choice when index.tuning is set.
            "index_used": {
                "indexes": sorted({b.index.describe() for b in built}),
                "families": sorted({b.index.family for b in built}),
                "largest_partition_rows": max((b.rows for b in built), default=0),
            },
            "tuning": _tuning_summary(index_plan),
            # With index.tuning: the search effort as calibrated on each built index (what query used) and its recall.
            "calibration": _calibration_summary(built),
            "retrievers": [r.model_dump(mode="json") for r in ctx.config.retrievers],
            "candidates_per_query": queried[0].candidates_per_query if queried else 0,
            # The attribute rules are applied during the search; these say how the dense queries were answered.
            "dense_queries_exact": sum(q.dense_queries_exact for q in queried),
            "dense_queries_fallback": sum(q.dense_queries_fallback for q in queried),
            "queries_without_candidates": sum(q.queries_without_candidates for q in queried),
            # Scopes where no query has an eligible candidate (say, one seller holds the whole category): 0 rows.
            "scopes_without_candidates": _scopes_without_candidates(queried),
        },
        "post_filter": {"candidates_removed": removed, **ctx.config.post_filter.model_dump(mode="json")},
        "matching": _matching_summary(ctx, filtered, queried, published),
        "publish": published.model_dump(mode="json"),
        "step_seconds": {
            "plan": plan.seconds,
            "embed": round(sum(e.seconds for e in embedded), 3),
            "plan_index": index_plan.seconds,
            "build_index": round(sum(b.seconds for b in built), 3),
            "query": round(sum(q.seconds for q in queried), 3),
            "post_filter": round(sum(f.seconds for f in filtered), 3),
            "publish": published.seconds,
        },
    }
    if wall_seconds:
        summary["wall_seconds"] = wall_seconds
    # The page first, the summary that names it last.
    summary["report_page"] = write_page(ctx.run_uri, summary)
    storage.write_json(layout.run_summary(ctx.run_uri), summary)
    return summary
