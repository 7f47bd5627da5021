"""Typed, immutable records passed between steps, serialised to JSON (paper §4.2.2)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from pss_ops import storage
from pss_ops.config import AppConfig

M = TypeVar("M", bound="Manifest")


class Manifest(BaseModel):
    """Base: frozen, extra keys rejected, read and written through the URI layer."""

    # An undefined figure (the recall of a one-item partition, which has no neighbour to find) is NaN. Standard JSON
    # has no NaN, and null would not read back as a float: such values are written as the strings "NaN",
    # "Infinity", "-Infinity", which pydantic reads back as the floats they were.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")

    def write(self, uri: str) -> None:
        """Write atomically; callers write the manifest after the data it points to."""
        storage.write_json(uri, json.loads(self.model_dump_json()))

    @classmethod
    def read(cls: type[M], uri: str) -> M:
        """Read and validate a manifest."""
        if not storage.exists(uri):
            raise FileNotFoundError(f"manifest not found: {uri} (has the previous step finished?)")
        return cls.model_validate(storage.read_json(uri))


class RunContext(Manifest):
    """What one run is: written first by plan, read by every later step."""

    application: str
    snapshot_date: dt.date
    run_id: str
    run_uri: str
    catalog_uri: str
    categories: tuple[str, ...] | None
    full_refresh: bool
    cache_uri: str
    model_id: str
    config: AppConfig


class CatalogPartition(Manifest):
    """One slice of the accepted catalog: the unit of embedding and of querying."""

    name: str
    uri: str
    scope: str
    rows: int


class CatalogPlan(Manifest):
    """Output of plan: the partitions, the rejects and the counts."""

    partitions: tuple[CatalogPartition, ...]
    categories: tuple[str, ...]
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rows_out_of_scope: int
    reject_reasons: dict[str, int]
    rejects_uri: str
    seconds: float


class EmbeddedPartition(Manifest):
    """Output of embed for one partition."""

    name: str
    scope: str
    uri: str
    rows: int
    dim: int
    model_id: str
    cache_hits: int
    cache_misses: int
    seconds: float
    # Per exact retriever: its input for these rows (features.retriever_inputs): a lexical retriever's term
    # frequencies, fitted into TF-IDF later, or a vector retriever's unit vectors.
    retriever_inputs: dict[str, str] = {}


class RowSlice(Manifest):
    """Rows [start, stop) of one embedded partition."""

    uri: str
    start: int
    stop: int
    # The same rows' input per exact retriever (the embedded partition's retriever_inputs).
    retriever_inputs: dict[str, str] = {}


class IndexPartition(Manifest):
    """One HNSW index to build: the slices of embedded partitions it covers, and its HNSW parameters."""

    number: int
    name: str
    scope: str
    rows: int
    slices: tuple[RowSlice, ...]
    # The plan's parameters: the config's, or the tuner's choice.
    hnsw_m: int
    ef_construction: int
    ef_search: int
    # Per lexical retriever: the IDF fitted on this partition's whole scope (every index partition of a scope shares it).
    lexical_idf: dict[str, str] = {}


class TuningTrial(Manifest):
    """One HNSW setting the tuner measured on the sample, and what it predicts at the partition size."""

    hnsw_m: int
    ef_construction: int
    ef_search: int
    partition_size: int
    partitions: int
    recall_small: float
    recall_sample: float
    predicted_recall: float
    build_seconds_per_row: float
    search_seconds_per_query: float
    estimated_cpu_seconds: float
    meets_target: bool


class IndexTuning(Manifest):
    """The index parameters plan_index chose by measuring recall@k on a sample of the largest scope."""

    target_recall: float
    memory_budget: str
    memory_budget_bytes: int
    k: int
    candidates_per_query: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    partition_size: int
    partition_peak_bytes: int
    measured_recall: float
    predicted_recall: float
    met_target: bool
    sample_scope: str
    scope_rows: int
    sample_rows: int
    sample_queries: int
    trials: tuple[TuningTrial, ...]
    seconds: float


class IndexPlan(Manifest):
    """Output of plan_index: which index partitions serve which scope."""

    dim: int
    partitions: tuple[IndexPartition, ...]
    seconds: float
    tuning: IndexTuning | None = None

    def for_scope(self, scope: str) -> tuple[IndexPartition, ...]:
        """Index partitions a query in this scope must search."""
        return tuple(p for p in self.partitions if p.scope == scope)


class EfCalibration(Manifest):
    """efSearch calibrated on the built index: recall@k of its own rows as queries against exact search."""

    # The plan's (the tuner's, from a sample) efSearch, where the ladder started.
    planned_ef_search: int
    target_recall: float
    k: int
    search_k: int  # neighbours searched per query, as the query step fetches them (the query itself included)
    queries: int
    # (efSearch, measured recall@k) for every rung tried, in order; the last is the one kept.
    ladder: tuple[tuple[int, float], ...]
    met_target: bool
    seconds: float


class BuiltIndex(Manifest):
    """Output of build_index for one index partition."""

    number: int
    name: str
    scope: str
    index_uri: str
    ids_uri: str
    rows: int
    hnsw_m: int
    ef_construction: int
    seconds: float
    # The efSearch query uses: the plan's, or with index.tuning the one calibrated on this index.
    ef_search: int
    # With index.tuning: recall@k measured on this index at ef_search, and how ef_search was found.
    measured_recall: float | None = None
    calibration: EfCalibration | None = None
    # Per exact retriever: this partition's rows as it searches them (TF-IDF with the scope's IDF, or unit vectors).
    retriever_rows: dict[str, str] = {}


class QueriedPartition(Manifest):
    """Output of query for one query partition: the union of the retrievers' filtered candidates, fused and ranked."""

    name: str
    scope: str
    uri: str
    queries: int
    # Per retriever: candidates found per query (k * candidate_multiplier), the attribute rules applied in the search.
    candidates_per_query: int
    retrievers: tuple[str, ...]
    # Queries with no eligible candidate in their scope (every item in it fails an attribute rule).
    queries_without_candidates: int
    # Dense search: queries answered exactly over their eligible rows because the filter is selective, and
    # queries HNSW returned short of the eligible count, searched again exactly (the fallback).
    dense_queries_exact: int
    dense_queries_fallback: int
    index_partitions_searched: int
    seconds: float


class FilteredPartition(Manifest):
    """Output of post_filter for one query partition: ranked final rows."""

    name: str
    uri: str
    rows: int
    queries: int
    queries_short_of_k: int
    candidates_removed: dict[str, int]
    seconds: float
    # With a matcher: the published rows at or above its match_threshold, and the seconds spent scoring pairs.
    rows_matched: int | None = None
    matching_seconds: float | None = None


class PublishResult(Manifest):
    """Output of publish."""

    parquet_uri: str
    warehouse: str
    table: str
    categories: tuple[str, ...]
    rows: int
    rows_replaced: int
    seconds: float
    # Duplicate groups (none without a matcher): their Parquet, how many groups and how many items they hold.
    groups_uri: str | None = None
    duplicate_groups: int = 0
    items_in_groups: int = 0
