"""Search quality: each retriever's recall@k against exact brute force on a query sample, the post-filter's rules applied."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from pss_ops import storage
from pss_ops.config import DenseRetriever, ExactRetriever, LexicalRetriever, PostFilterConfig
from pss_ops.features.embedded import read_vectors
from pss_ops.features.retriever_inputs import query_matrix, read_input
from pss_ops.manifests import BuiltIndex, EmbeddedPartition, IndexPlan, QueriedPartition, RunContext
from pss_ops.quality.recall import tie_hits
from pss_ops.search.candidates import found_column, score_column
from pss_ops.search.exact import Matrix
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
            allowed = allowed_pairs(rules, query_rows, ids, scores) if rules is not None and query_rows is not None else None
            yield _partition_top(scores, allowed, k, offset)
            offset += part.rows

    return merge_topk(per_partition(), len(queries), k)


def _partition_top(scores: np.ndarray, allowed: np.ndarray | None, k: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """One partition's top-k (scores, scope rows) for merge_topk; pairs not allowed score EXCLUDED."""
    if allowed is not None:
        scores = np.where(allowed, scores, EXCLUDED)
    take = min(k, scores.shape[1])
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    return np.take_along_axis(scores, top, axis=1).astype(np.float32), top + offset


def _hits(found: dict[str, np.ndarray], item_ids: np.ndarray, exact: np.ndarray) -> tuple[int, int]:
    """Recall counts of the sampled queries' found scores against their exact top-k rows (slots that exist only)."""
    return tie_hits(
        (found.get(item, np.zeros(0)) for item in item_ids),
        (row[np.isfinite(row) & (row > -1e30)] for row in exact),
    )


def _sampled_rows(uri: str, item_ids: np.ndarray, retrievers: list[str]) -> pa.Table:
    """The sampled queries' rows of a query output, with every retriever's score and flag: the file is read once."""
    columns = ["query_item_id", *(c for name in retrievers for c in (score_column(name), found_column(name)))]
    table = storage.read_parquet(uri, columns=columns)
    return table.filter(pc.is_in(table.column("query_item_id"), value_set=pa.array(item_ids.tolist(), pa.string())))


def _scores_by_query(table: pa.Table, retriever: str, k: int) -> dict[str, np.ndarray]:
    """Each sampled query's k best scores from one retriever: the rows it found, by its own cosine."""
    table = table.filter(table.column(found_column(retriever)))
    found: dict[str, list[float]] = {}
    for item, score in zip(table.column("query_item_id").to_pylist(), table.column(score_column(retriever)).to_pylist()):
        found.setdefault(item, []).append(score)
    return {item: np.sort(np.asarray(scores))[::-1][:k] for item, scores in found.items()}


def exact_retriever_topk(
    queries: Matrix, query_rows: pa.Table, built: list[BuiltIndex], retriever: ExactRetriever, rules: PostFilterConfig, k: int
) -> np.ndarray:
    """An exact retriever's brute-force top-k scores (rules applied, self excluded) over the scope's index partitions."""

    def per_partition() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        offset = 0
        for part in built:
            ids = storage.read_parquet(part.ids_uri)
            product = queries @ read_input(part.retriever_rows[retriever.name]).T
            scores = np.asarray(product.toarray() if sparse.issparse(product) else product)  # type: ignore[union-attr]
            allowed = allowed_pairs(rules, query_rows, ids, scores)
            if isinstance(retriever, LexicalRetriever):
                allowed &= scores > 0  # no shared term, no lexical candidate
            yield _partition_top(scores, allowed, k, offset)
            offset += part.rows

    return merge_topk(per_partition(), queries.shape[0], k)[0]


def sampled_recall(
    ctx: RunContext,
    embedded: list[EmbeddedPartition],
    queried: list[QueriedPartition],
    index_plan: IndexPlan,
    built: list[BuiltIndex],
) -> dict[str, Any]:
    """Recall@k of each retriever's filtered search against exact brute force with the same rules, on sampled queries."""
    config = ctx.config
    k = config.k
    rules = config.post_filter
    sample_size = config.quality.recall_sample
    total = sum(p.rows for p in embedded)
    names = [r.name for r in config.retrievers]
    dense = next(r.name for r in config.retrievers if isinstance(r, DenseRetriever))
    counts = {name: [0, 0] for name in names}
    picks = np.zeros(0, np.int64)
    if sample_size and total:
        rng = np.random.default_rng(config.quality.seed)
        picks = np.sort(rng.choice(total, size=min(sample_size, total), replace=False))
    queried_by_name = {q.name: q for q in queried}
    starts = np.cumsum([0, *(p.rows for p in embedded)])
    for scope in dict.fromkeys(p.scope for p in embedded):
        members = [(i, p) for i, p in enumerate(embedded) if p.scope == scope]
        scope_built = sorted((b for b in built if b.scope == scope), key=lambda b: b.number)
        for i, part in members:
            local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
            if not len(local):
                continue
            ids, vectors = read_vectors(part.uri)
            rows, sample = ids.take(pa.array(local)), vectors[local]
            # Only the sample is kept: brute force reads the scope's partitions again, one at a time.
            del ids, vectors
            item_ids = np.asarray(rows.column("item_id").to_pylist(), dtype=object)
            exact = {dense: exact_topk(sample, [p for _, p in members], k, query_rows=rows, rules=rules)[0]}
            for retriever in config.exact_retrievers:
                vocabulary = index_plan.for_scope(scope)[0].lexical_idf.get(retriever.name)
                queries = query_matrix(retriever, part.retriever_inputs[retriever.name], vocabulary)[local]
                exact[retriever.name] = exact_retriever_topk(queries, rows, scope_built, retriever, rules, k)
            sampled = _sampled_rows(queried_by_name[part.name].uri, item_ids, names)
            for name in names:
                found = _scores_by_query(sampled, name, k)
                hit, want = _hits(found, item_ids, exact[name])
                counts[name] = [counts[name][0] + hit, counts[name][1] + want]
    by_retriever = {name: round(hit / want, 5) if want else float("nan") for name, (hit, want) in counts.items()}
    recall = min(by_retriever.values()) if by_retriever else float("nan")
    log.info("recall@%d after filtering on %d sampled queries: %s", k, len(picks), by_retriever)
    return {
        "recall_at_k": recall,
        "recall_by_retriever": by_retriever,
        "k": k,
        "sample_queries": int(len(picks)),
        "method": "each retriever's filtered top-k against exact brute force with the same rules over its scope; "
        "ties counted as hits; recall_at_k is the lowest retriever's",
    }
