"""What the run report shows of a run's published pairs, read in one streamed pass over similar_items.parquet.

Counts (per category, per combination of retrievers) are exact; the score charts use a uniform sample of at most
MAX_SAMPLED_PAIRS rows, so the report costs seconds at millions of rows. Titles are read only for the pairs shown.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from pss_ops import layout, storage
from pss_ops.manifests import CatalogPlan
from pss_ops.quality.matching import pair_keys

MAX_SAMPLED_PAIRS = 200_000
SHOWN_PAIRS = 20
BATCH_ROWS = 100_000
# A fixed seed: the same run always draws the same report.
SAMPLE_SEED = 0
COLUMNS = ["category", "query_item_id", "candidate_item_id", "rank", "score", "found_by", "retriever_scores", "match_probability"]
SAMPLED = ["score", "match_probability", "found_by", "retriever_scores"]
PER_CATEGORY = ["rows_published", "queries_with_results", "queries_with_k", "rows_matched"]


def retriever_score_columns(scores_json: pa.Array | pa.ChunkedArray, retrievers: list[str]) -> dict[str, np.ndarray]:
    """Each retriever's cosine per row, parsed from the retriever_scores JSON column (NaN where it is NULL)."""
    names = list(dict.fromkeys(retrievers))
    if len(scores_json) == 0 or not names:
        return {name: np.zeros(0) for name in names}
    # Parsed by Arrow's JSON reader, one object per line: json.loads row by row is far slower at this size.
    # Large strings: the joined text of millions of rows can pass the 2 GiB a plain string array holds.
    lines = pc.fill_null(pc.cast(scores_json, pa.large_string()), "{}")
    joined = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), pa.concat_arrays(_chunks(lines))),
        pa.scalar("\n", pa.large_string()),
    )
    schema = pa.schema([(name, pa.float64()) for name in names])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pa_json.read_json(io.BytesIO(joined[0].as_py().encode()), parse_options=options)
    return {name: table.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for name in names}


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]


@dataclass(frozen=True)
class PublishedPairs:
    """The report's view of the published pairs."""

    rows: int
    # Per category (the index): rows, queries with any result, queries with all k, rows at or above the match threshold.
    by_category: pd.DataFrame
    # Published pairs per found_by value ("dense,lexical", "lexical", ...), most first.
    overlap: dict[str, int]
    # Sampled rows: score, match_probability, found_by, and one column of cosines per retriever.
    sample: pd.DataFrame
    # The SHOWN_PAIRS pairs ranked highest and lowest by ranked_by, each unordered pair once.
    most_confident: pd.DataFrame
    least_confident: pd.DataFrame
    ranked_by: str


def _extremes(frame: pd.DataFrame, ranked_by: str, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The n highest and n lowest rows by ranked_by (ties by score, then ids), one row per unordered pair."""
    keyed = frame.assign(pair=pair_keys(frame["query_item_id"], frame["candidate_item_id"]))
    order = [ranked_by, "score", "query_item_id", "candidate_item_id"]
    high = keyed.sort_values(order, ascending=[False, False, True, True], kind="stable").drop_duplicates("pair").head(n)
    low = keyed.sort_values(order, ascending=[True, True, True, True], kind="stable").drop_duplicates("pair").head(n)
    return high.drop(columns="pair"), low.drop(columns="pair")


def _near_extremes(values: np.ndarray, n: int) -> np.ndarray:
    """Rows that can be among the n highest or lowest distinct pairs: those at or beyond the 2n-th value from either end.

    A pair has at most two rows, so 2n rows hold at least n pairs; every tie at the boundary is kept.
    """
    if len(values) <= 4 * n:
        return np.ones(len(values), dtype=bool)
    high = np.partition(values, len(values) - 2 * n)[len(values) - 2 * n]
    low = np.partition(values, 2 * n - 1)[2 * n - 1]
    return (values >= high) | (values <= low)


def _counts_by_category(batch: pa.RecordBatch, k: int, match_threshold: float | None) -> pd.DataFrame:
    """One batch's PER_CATEGORY counts, by Arrow's group-by."""
    rank = batch.column("rank")
    matched = (
        pc.fill_null(pc.greater_equal(batch.column("match_probability"), match_threshold), False)
        if match_threshold is not None
        else pa.array(np.zeros(batch.num_rows, dtype=bool))
    )
    flags = pa.table(
        {
            "category": batch.column("category"),
            "first": pc.cast(pc.equal(rank, 1), pa.int64()),
            "full": pc.cast(pc.equal(rank, k), pa.int64()),
            "matched": pc.cast(matched, pa.int64()),
        }
    )
    grouped = flags.group_by("category").aggregate([("category", "count"), ("first", "sum"), ("full", "sum"), ("matched", "sum")])
    frame = grouped.to_pandas().set_index("category")
    frame.columns = PER_CATEGORY  # the aggregates, in the order asked
    return frame


def read_published(uri: str, *, retrievers: list[str], k: int, match_threshold: float | None) -> PublishedPairs:
    """Stream similar_items.parquet once: exact counts, a uniform sample of scores, and the most and least confident pairs."""
    parquet = storage.open_parquet(uri)
    total = parquet.metadata.num_rows
    rate = min(1.0, MAX_SAMPLED_PAIRS / total) if total else 1.0
    rng = np.random.default_rng(SAMPLE_SEED)
    ranked_by = "score" if match_threshold is None else "match_probability"
    by_category = pd.DataFrame(columns=PER_CATEGORY, dtype=np.int64)
    overlap: dict[str, int] = {}
    samples: list[pd.DataFrame] = []
    extremes: list[pd.DataFrame] = []
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=COLUMNS):
        counts = _counts_by_category(batch, k, match_threshold)
        by_category = counts if by_category.empty else by_category.add(counts, fill_value=0).astype(np.int64)
        for entry in pc.value_counts(pc.fill_null(batch.column("found_by"), "")).to_pylist():
            overlap[entry["values"]] = overlap.get(entry["values"], 0) + entry["counts"]
        samples.append(batch.select(SAMPLED).filter(pa.array(rng.random(batch.num_rows) < rate)).to_pandas())
        ranked = batch.column(ranked_by).to_numpy(zero_copy_only=False).astype(np.float64)
        candidates = batch.filter(pa.array(_near_extremes(np.nan_to_num(ranked, nan=-np.inf), SHOWN_PAIRS)))
        # A batch's n extremes hold every pair of it that can be among the run's n extremes.
        extremes.extend(_extremes(candidates.to_pandas(), ranked_by, SHOWN_PAIRS))
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(columns=SAMPLED)
    cosines = retriever_score_columns(pa.array(sample["retriever_scores"].tolist(), pa.string()), retrievers)
    sample = sample.drop(columns="retriever_scores").assign(**cosines)
    every = pd.concat(extremes, ignore_index=True) if extremes else pd.DataFrame(columns=COLUMNS)
    most, least = _extremes(every, ranked_by, SHOWN_PAIRS)
    return PublishedPairs(
        rows=total,
        by_category=by_category.sort_index(),
        overlap=dict(sorted(overlap.items(), key=lambda item: (-item[1], item[0]))),
        sample=sample,
        most_confident=most.reset_index(drop=True),
        least_confident=least.reset_index(drop=True),
        ranked_by=ranked_by,
    )


def accepted_by_category(run_uri: str, plan: CatalogPlan) -> pd.Series:
    """Accepted rows (each one a query) per category, from the category column of the run's catalog partitions."""
    counts: pd.Series = pd.Series(dtype=np.int64)
    for partition in plan.partitions:
        column = storage.read_parquet(layout.catalog_partition(run_uri, partition.name), columns=["category"]).column("category")
        found = column.value_counts().to_pylist()
        part = pd.Series({entry["values"]: entry["counts"] for entry in found}, dtype=np.int64)
        counts = counts.add(part, fill_value=0).astype(np.int64)
    return counts.sort_index()


def groups_by_category(groups_uri: str | None) -> pd.DataFrame:
    """Duplicate groups and the items they hold, per category (no rows without a matcher)."""
    if groups_uri is None or not storage.exists(groups_uri):
        return pd.DataFrame(columns=["duplicate_groups", "items_in_groups"], dtype=np.int64)
    groups = storage.read_parquet(groups_uri, columns=["category", "group_id"]).to_pandas()
    by = groups.groupby("category")
    return pd.DataFrame({"duplicate_groups": by["group_id"].nunique(), "items_in_groups": by.size()}).astype(np.int64)


def titles(run_uri: str, plan: CatalogPlan, item_ids: set[str]) -> dict[str, str]:
    """The titles of item_ids, read one catalog partition at a time: never the whole catalog's titles at once."""
    wanted = pa.array(sorted(item_ids), pa.string())
    found: dict[str, str] = {}
    for partition in plan.partitions:
        if len(found) == len(item_ids):
            break
        rows = storage.read_parquet(layout.catalog_partition(run_uri, partition.name), columns=["item_id", "title"])
        rows = rows.filter(pc.is_in(rows.column("item_id"), value_set=wanted))
        found.update(zip(rows.column("item_id").to_pylist(), rows.column("title").to_pylist()))
    return found
