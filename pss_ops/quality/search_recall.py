"""Search quality: recall@k against exact brute force on a query sample, before and after the post-filter."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import storage
from pss_ops.config import PostFilterConfig
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import EmbeddedPartition, FilteredPartition, QueriedPartition, RunContext
from pss_ops.quality.recall import tie_hits
from pss_ops.search.filters import allowed_pairs
from pss_ops.search.merge import merge_topk

log = logging.getLogger(__name__)

EXCLUDED = -np.inf


def exact_topk(
    queries: np.ndarray,
    partitions: list[EmbeddedPartition],
    k: int,
    *,
    query_rows: pa.Table | None = None,
    rules: PostFilterConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over the partitions, streamed one partition at a time.

    With rules (and the queries' id/attribute rows), candidates the post-filter would drop are excluded.
    """

    def per_partition() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        offset = 0
        for part in partitions:
            ids, vectors = read_vectors(part.uri)
            scores = queries @ vectors.T
            if rules is not None and query_rows is not None:
                scores = np.where(allowed_pairs(rules, query_rows, ids, scores), scores, EXCLUDED)
            take = min(k, scores.shape[1])
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            yield np.take_along_axis(scores, top, axis=1).astype(np.float32), top + offset
            offset += part.rows

    return merge_topk(per_partition(), len(queries), k)


def _hits(found: dict[str, np.ndarray], item_ids: np.ndarray, exact: np.ndarray) -> tuple[int, int]:
    """Recall counts of the sampled queries' found scores against their exact top-k rows (slots that exist only)."""
    return tie_hits(
        (found.get(item, np.zeros(0)) for item in item_ids),
        (row[np.isfinite(row) & (row > -1e30)] for row in exact),
    )


def _scores_by_query(uri: str, item_ids: np.ndarray, k: int | None) -> dict[str, np.ndarray]:
    """Scores of the sampled queries' rows in a query or post-filter output (search rank <= k when given)."""
    columns = ["query_item_id", "score"] + (["search_rank"] if k is not None else [])
    table = storage.read_parquet(uri, columns=columns)
    wanted = pc.is_in(table.column("query_item_id"), value_set=pa.array(item_ids.tolist(), pa.string()))
    if k is not None:
        wanted = pc.and_(wanted, pc.less_equal(table.column("search_rank"), k))
    table = table.filter(wanted)
    found: dict[str, list[float]] = {}
    for item, score in zip(table.column("query_item_id").to_pylist(), table.column("score").to_pylist()):
        found.setdefault(item, []).append(score)
    return {item: np.asarray(scores) for item, scores in found.items()}


def sampled_recall(
    ctx: RunContext,
    embedded: list[EmbeddedPartition],
    queried: list[QueriedPartition],
    filtered: list[FilteredPartition] | None = None,
) -> dict[str, float | int | str]:
    """Recall@k of the search (before the post-filter) and of the published rows (after it) against brute force."""
    k = ctx.config.k
    rules = ctx.config.post_filter
    sample_size = ctx.config.quality.recall_sample
    total = sum(p.rows for p in embedded)
    if sample_size == 0 or total == 0:
        return {"recall_at_k": float("nan"), "filtered_recall_at_k": float("nan"), "k": k, "sample_queries": 0}
    rng = np.random.default_rng(ctx.config.quality.seed)
    picks = np.sort(rng.choice(total, size=min(sample_size, total), replace=False))
    search = [0, 0]
    published = [0, 0]
    queried_by_name = {q.name: q for q in queried}
    filtered_by_name = {f.name: f for f in filtered or []}
    starts = np.cumsum([0, *(p.rows for p in embedded)])
    for scope in dict.fromkeys(p.scope for p in embedded):
        members = [(i, p) for i, p in enumerate(embedded) if p.scope == scope]
        # The scope's sampled queries, gathered first so that brute force reads each partition once per pass.
        sampled: list[tuple[EmbeddedPartition, pa.Table, np.ndarray]] = []
        for i, part in members:
            local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
            if len(local):
                ids, vectors = read_vectors(part.uri)
                sampled.append((part, ids.take(pa.array(local)), vectors[local]))
        if not sampled:
            continue
        scope_parts = [p for _, p in members]
        rows = pa.concat_tables([r for _, r, _ in sampled])
        sample = np.vstack([v for _, _, v in sampled])
        # The query itself is the exact top-1; the search output excludes it.
        exact = exact_topk(sample, scope_parts, k + 1)[0][:, 1:]
        exact_filtered = exact_topk(sample, scope_parts, k, query_rows=rows, rules=rules)[0] if filtered_by_name else None
        offset = 0
        for part, part_rows, _ in sampled:
            count = part_rows.num_rows
            item_ids = np.asarray(part_rows.column("item_id").to_pylist(), dtype=object)
            found = _scores_by_query(queried_by_name[part.name].uri, item_ids, k)
            hit, want = _hits(found, item_ids, exact[offset : offset + count])
            search = [search[0] + hit, search[1] + want]
            if part.name in filtered_by_name and exact_filtered is not None:
                final = _scores_by_query(filtered_by_name[part.name].uri, item_ids, None)
                hit, want = _hits(final, item_ids, exact_filtered[offset : offset + count])
                published = [published[0] + hit, published[1] + want]
            offset += count
    recall = search[0] / search[1] if search[1] else float("nan")
    filtered_recall = published[0] / published[1] if published[1] else float("nan")
    log.info("recall@%d on %d sampled queries: search %.4f, published after filter %.4f", k, len(picks), recall, filtered_recall)
    return {
        "recall_at_k": round(recall, 5),
        "filtered_recall_at_k": round(filtered_recall, 5),
        "k": k,
        "sample_queries": int(len(picks)),
        "method": "exact brute force over the scope, ties counted as hits; filtered = with the post-filter applied",
    }
