"""Typed, immutable records passed between steps, serialised to JSON (paper §4.2.2)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal, TypeVar

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
    # False when the vectors were computed directly from precomputed columns, without the cache (no hits, no misses).
    cache_used: bool = True
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


class IndexSpec(Manifest):
    """One faiss index: its family, the family's build parameters, and the search effort query uses.

    - flat: exact inner-product search (no parameters; right for small partitions);
    - ivf: an inverted file of `nlist` lists (k-means centroids), each query scanning `search_effort` lists
      (nprobe); the lists' centroids are found through a flat or an HNSW coarse quantiser;
    - hnsw: an HNSW graph of `hnsw_m` links per node built at `ef_construction`, searched at efSearch
      `search_effort`.
    """

    family: Literal["flat", "ivf", "hnsw"]
    hnsw_m: int = 0
    ef_construction: int = 0
    nlist: int = 0
    coarse_quantizer: Literal["flat", "hnsw"] = "flat"
    search_effort: int = 0

    def describe(self) -> str:
        """The spec in faiss's index_factory spirit, for logs and reports: 'Flat', 'IVF244,Flat nprobe=16', ..."""
        if self.family == "flat":
            return "Flat"
        if self.family == "ivf":
            coarse = "_HNSW32" if self.coarse_quantizer == "hnsw" else ""
            return f"IVF{self.nlist}{coarse},Flat nprobe={self.search_effort}"
        return f"HNSW{self.hnsw_m} efConstruction={self.ef_construction} efSearch={self.search_effort}"


class IndexPartition(Manifest):
    """One index to build: the slices of embedded partitions it covers, and the index chosen for it."""

    number: int
    name: str
    scope: str
    rows: int
    slices: tuple[RowSlice, ...]
    # The plan's index: the config's, or the tuner's cheapest choice for this partition's size.
    index: IndexSpec
    # With index.tuning: the next cheapest choices, built in turn when calibration on the built index would have to
    # raise the search effort past its bound (exact search, always last, needs no calibration).
    alternatives: tuple[IndexSpec, ...] = ()
    # Per lexical retriever: the IDF fitted on this partition's whole scope (every index partition of a scope shares it).
    lexical_idf: dict[str, str] = {}


class TuningTrial(Manifest):
    """One index setting the tuner measured on the sample, and its predicted recall and cost at a partition's size."""

    index: IndexSpec
    sample_rows: int
    recall_sample: float
    predicted_recall: float
    build_seconds_per_row: float
    search_seconds_per_query: float
    meets_target: bool


class FamilyCost(Manifest):
    """The cheapest setting of one index family meeting the target on the sample, and what it cost there.

    search.tuning.predicted_seconds scales these to a partition's size.
    """

    index: IndexSpec
    recall_sample: float
    predicted_recall: float
    build_seconds_per_row: float
    search_seconds_per_query: float
    sample_rows: int
    # CPU seconds of one exact query-row comparison, measured by exact search of the sample: the price of the dense
    # products an inverted file's training, assignment and coarse search are made of.
    exact_seconds_per_pair: float
    meets_target: bool


class ScopeChoice(Manifest):
    """The index chosen for one scope's partitions: the cheapest predicted family that meets the target."""

    scope: str
    rows: int
    partitions: int
    partition_rows: int
    index: IndexSpec
    # Built in turn when calibration finds the choice would need more than its bound: the next cheapest families
    # predicted to meet the target, exact search last.
    alternatives: tuple[IndexSpec, ...]
    predicted_cpu_seconds: float
    # Every family considered, cheapest first: (description, predicted CPU seconds, meets the target).
    ranking: tuple[tuple[str, float, bool], ...]


class IndexTuning(Manifest):
    """The index plan_index chose per scope, by measuring each family's recall@k and cost on a sample of the largest scope."""

    target_recall: float
    memory_budget: str
    memory_budget_bytes: int
    k: int
    candidates_per_query: int
    sample_scope: str
    scope_rows: int
    sample_rows: int
    sample_queries: int
    families: tuple[FamilyCost, ...]
    scopes: tuple[ScopeChoice, ...]
    trials: tuple[TuningTrial, ...]
    # The largest scope's choice, and what the tuner measured and predicts for it.
    chosen: IndexSpec
    measured_recall: float
    predicted_recall: float
    met_target: bool
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


class SearchCalibration(Manifest):
    """The search effort (efSearch or nprobe) calibrated on a built index: its own rows as queries against exact search."""

    index: IndexSpec  # as built, at the plan's effort (where the ladder started)
    target_recall: float
    k: int
    search_k: int  # neighbours searched per query, as the query step fetches them (the query itself included)
    queries: int
    # (search effort, measured recall@k) for every rung tried, in order; the last is the one kept.
    ladder: tuple[tuple[int, float], ...]
    met_target: bool
    # The effort was not raised past this bound: a family whose effort must grow further is replaced by the next.
    max_effort: int
    seconds: float


class BuiltIndex(Manifest):
    """Output of build_index for one index partition."""

    number: int
    name: str
    scope: str
    index_uri: str
    ids_uri: str
    # The partition's vectors in index row order (float32 .npy), for the families whose index does not keep them
    # in row order (ivf): exact fallbacks and pair scores read them.
    vectors_uri: str | None = None
    rows: int
    # The index as searched by query: with index.tuning, the effort calibrated on this index.
    index: IndexSpec
    seconds: float
    # With index.tuning: recall@k measured on this index at its search effort, and each family's calibration tried
    # (more than one when one had to give way to the next).
    measured_recall: float | None = None
    calibrations: tuple[SearchCalibration, ...] = ()
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
