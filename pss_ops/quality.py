"""Search quality: recall@k of the partitioned HNSW search against exact brute force on a query sample."""

from __future__ import annotations

import logging

import numpy as np

from pss_ops import storage
from pss_ops.manifests import EmbeddedPartition, QueriedPartition, RunContext
from pss_ops.merge import merge_topk
from pss_ops.steps.embed import read_vectors

log = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-5


def exact_topk(queries: np.ndarray, partitions: list[EmbeddedPartition], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over the partitions, streamed one partition at a time."""

    def per_partition():
        offset = 0
        for part in partitions:
            _, vectors = read_vectors(part.uri)
            scores = queries @ vectors.T
            take = min(k, scores.shape[1])
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            yield np.take_along_axis(scores, top, axis=1), top + offset
            offset += part.rows

    return merge_topk(per_partition(), len(queries), k)


def sampled_recall(ctx: RunContext, embedded: list[EmbeddedPartition], queried: list[QueriedPartition]) -> dict[str, float | int | str]:
    """Recall@k of the search output (before post-filtering) against brute force; ties count as hits."""
    k = ctx.config.k
    sample_size = ctx.config.quality.recall_sample
    total = sum(p.rows for p in embedded)
    if sample_size == 0 or total == 0:
        return {"recall_at_k": float("nan"), "k": k, "sample_queries": 0}
    rng = np.random.default_rng(ctx.config.quality.seed)
    picks = np.sort(rng.choice(total, size=min(sample_size, total), replace=False))
    found, wanted = 0, 0
    offset = 0
    by_name = {q.name: q for q in queried}
    for part in embedded:
        local = picks[(picks >= offset) & (picks < offset + part.rows)] - offset
        offset += part.rows
        if len(local) == 0:
            continue
        ids, vectors = read_vectors(part.uri)
        item_ids = np.asarray(ids.column("item_id").to_pylist(), dtype=object)[local]
        scope = [p for p in embedded if p.scope == part.scope]
        exact_scores, _ = exact_topk(vectors[local], scope, k + 1)
        results = storage.read_parquet(by_name[part.name].uri, columns=["query_item_id", "score", "search_rank"]).to_pandas()
        results = results[results["search_rank"] <= k].groupby("query_item_id")["score"].apply(np.asarray)
        for row, item in enumerate(item_ids):
            # The query itself is the exact top-1; the search output excludes it.
            others = exact_scores[row][1:]
            others = others[np.isfinite(others) & (others > -1e30)]
            if len(others) == 0:
                continue
            approx = results.get(item, np.zeros(0))
            found += int(np.sum(approx >= others[-1] - TIE_TOLERANCE))
            wanted += len(others)
    recall = found / wanted if wanted else float("nan")
    log.info("search recall@%d on %d sampled queries: %.4f", k, len(picks), recall)
    return {"recall_at_k": round(recall, 5), "k": k, "sample_queries": int(len(picks)), "method": "exact brute force, ties counted as hits"}
