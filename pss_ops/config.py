"""Application config: declared once, typed, validated; errors name the bad key.

This module is longer than 400 lines because it is the whole schema of a config file, every key with its type,
default and reason, kept together so it reads top to bottom as the reference the README's table summarises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TEXT_MODELS = {"all-MiniLM-L6-v2": 384}
VECTOR_COLUMNS = ("image_vector", "behavior_vector")
# The catalog's text columns a feature may read.
TextField = Literal["title", "description", "brand"]


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextEmbeddingFeature(_Strict):
    """Sentence-embedding of text fields (paper §3.1.1, title feature)."""

    type: Literal["text_embedding"]
    name: str = "title_embedding"
    model: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"
    fields: tuple[TextField, ...] = ("title",)
    weight: float = Field(1.0, gt=0)
    batch_size: int = Field(64, ge=1, le=4096)
    max_chars: int = Field(512, ge=16)

    @property
    def dim(self) -> int:
        return TEXT_MODELS[self.model]


class CharNgramFeature(_Strict):
    """Hashed character n-grams: model numbers like 'PSLX350H' decide matches."""

    type: Literal["char_ngram"]
    name: str = "lexical"
    fields: tuple[TextField, ...] = ("title",)
    ngram_min: int = Field(3, ge=1, le=10)
    ngram_max: int = Field(5, ge=1, le=10)
    dims: int = Field(2048, ge=16, le=1 << 20)
    weight: float = Field(1.0, gt=0)

    @property
    def dim(self) -> int:
        return self.dims

    @model_validator(mode="after")
    def _ngram_order(self) -> CharNgramFeature:
        if self.ngram_min > self.ngram_max:
            raise ValueError("ngram_min must not exceed ngram_max")
        return self


class ModelTokenFeature(_Strict):
    """Hashed whole tokens that contain a digit: model numbers, capacities, versions, compared exactly.

    Character n-grams score "wd red 1tb" and "wd red 3tb" as near-identical; as whole tokens, "1tb" and
    "3tb" share nothing, which is what tells two offers of different products apart (WDC computers).
    """

    type: Literal["model_tokens"]
    name: str = "model_tokens"
    fields: tuple[TextField, ...] = ("title",)
    dims: int = Field(4096, ge=16, le=1 << 20)
    weight: float = Field(0.5, gt=0)

    @property
    def dim(self) -> int:
        return self.dims


class PrecomputedVectorFeature(_Strict):
    """A vector computed upstream (image or behaviour embedding) read from a catalog column."""

    type: Literal["precomputed"]
    name: str = ""
    column: Literal["image_vector", "behavior_vector"]
    dim: int = Field(ge=1, le=65536)
    weight: float = Field(1.0, gt=0)


Feature = Annotated[TextEmbeddingFeature | CharNgramFeature | ModelTokenFeature | PrecomputedVectorFeature, Field(discriminator="type")]

# Hash buckets of the lexical retriever's terms: the whole 31-bit range, so two terms of a scope share a bucket
# about once per 2 million distinct terms, and TF-IDF matches a fitted vocabulary's. Matrices are indexed by the
# buckets a scope uses (features.lexical.ScopeVocabulary), never by this range.
LEXICAL_BUCKETS = (1 << 31) - 1


class DenseRetriever(_Strict):
    """The compound embedding of `features` (or the learned model on top of it), searched with HNSW (`index`)."""

    type: Literal["dense"]
    name: str = Field("dense", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    # Share of this retriever's cosine in the fused score (weights are divided by their sum).
    weight: float = Field(1.0, gt=0)


class LexicalRetriever(_Strict):
    """TF-IDF over text fields: sublinear tf, IDF fitted on the scope searched, exact top-k by sparse dot products.

    Character n-grams within word boundaries by default, the baseline Coupang's embeddings had to beat.
    """

    type: Literal["lexical"]
    name: str = Field("lexical", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    fields: tuple[TextField, ...] = Field(("title",), min_length=1)
    analyzer: Literal["char_wb", "char", "word"] = "char_wb"
    ngram_min: int = Field(2, ge=1, le=10)
    ngram_max: int = Field(4, ge=1, le=10)
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _ngram_order(self) -> LexicalRetriever:
        if self.ngram_min > self.ngram_max:
            raise ValueError("ngram_min must not exceed ngram_max")
        return self


class VectorRetriever(_Strict):
    """A vector computed upstream (say an image embedding), read from a catalog column and searched exactly.

    Apart from the compound embedding: its own candidates, and its own cosine in the fused score.
    """

    type: Literal["vector"]
    name: str = Field("image", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    column: Literal["image_vector", "behavior_vector"]
    dim: int = Field(ge=1, le=65536)
    weight: float = Field(1.0, gt=0)


Retriever = Annotated[DenseRetriever | LexicalRetriever | VectorRetriever, Field(discriminator="type")]
# Retrievers other than the dense one: searched exactly over each index partition's rows (search.exact).
ExactRetriever = LexicalRetriever | VectorRetriever


_MEMORY_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(text: str) -> int:
    """Bytes in a human memory size: "8G", "512M", "1.5G", "64KB", "4096" (binary units, as autofaiss)."""
    raw = str(text).strip().upper()
    for suffix in ("IB", "B"):
        if raw.endswith(suffix) and len(raw) > len(suffix):
            raw = raw[: -len(suffix)]
            break
    unit = raw[-1] if raw and raw[-1] in _MEMORY_UNITS else ""
    try:
        value = float(raw[:-1] if unit else raw)
    except ValueError:
        raise ValueError(f"memory size {text!r} is not a number with an optional unit K, M, G or T (like '8G' or '512M')") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"memory size {text!r} must be positive and finite")
    return int(value * _MEMORY_UNITS.get(unit, 1))


class IndexTuningConfig(_Strict):
    """Choose, per scope, the index family (exact, IVF or HNSW), its parameters and the partition size by measuring
    recall and cost on a sample (like autofaiss), and calibrate the search effort on each built index."""

    target_recall: float = Field(0.99, gt=0, le=1)
    # What one build or query process may hold: bounds the rows per index partition.
    memory_budget: str = "8G"
    # Rows of the largest scope the trial indexes are built on, and how many of them are measured as queries.
    sample_rows: int = Field(50_000, ge=100)
    sample_queries: int = Field(1_000, ge=10)
    seed: int = 0

    @field_validator("memory_budget")
    @classmethod
    def _readable_budget(cls, value: str) -> str:
        parse_memory(value)
        return value


class IndexConfig(_Strict):
    """The index family, its parameters and how many items one index partition holds; with tuning set, plan_index
    chooses them per scope by measurement, partition size included (the fields below are then unused)."""

    # flat: exact search; ivf: an inverted file of k-means lists; hnsw: a graph (search.indexes).
    family: Literal["flat", "ivf", "hnsw"] = "hnsw"
    hnsw_m: int = Field(32, ge=4, le=256)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(128, ge=8)
    # ivf: the number of lists (0: one per search.indexes.IVF_LIST_ROWS rows of the partition) and lists scanned per query.
    nlist: int = Field(0, ge=0)
    nprobe: int = Field(16, ge=1)
    partition_size: int = Field(1_000_000, ge=2)
    tuning: IndexTuningConfig | None = None


class CatalogConfig(_Strict):
    """How the catalog is read, partitioned and policed."""

    partition_size: int = Field(100_000, ge=1)
    max_reject_fraction: float = Field(0.01, ge=0, le=1)
    default_category: str = Field("uncategorized", min_length=1)


class PostFilterConfig(_Strict):
    """Attribute post-filters (paper §3.3) and the score floor."""

    same: tuple[str, ...] = ()
    different: tuple[str, ...] = ()
    min_score: float = Field(-1.0, ge=-1, le=1)
    # Each retriever finds k * this many candidates per query (the rules applied during the search), so the
    # fused ranking and min_score choose the k published rows from more than k.
    candidate_multiplier: int = Field(4, ge=1, le=100)
    # With a matcher: drop candidates whose match probability is below this (none dropped when unset).
    min_match_probability: float | None = Field(None, ge=0, le=1)

    @field_validator("same", "different")
    @classmethod
    def _attribute_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name in ("item_id", "title", "description", *VECTOR_COLUMNS):
                raise ValueError(f"{name!r} cannot be used as a post-filter attribute")
        return value


class CacheConfig(_Strict):
    """Embedding cache location; the backend follows from the URI."""

    # dynamodb://TABLE, sqlite:///path or a local path; default: OUT/cache/embeddings.sqlite.
    uri: str | None = None


class QualityConfig(_Strict):
    """How many queries are checked against exact brute force for the summary's recall."""

    recall_sample: int = Field(500, ge=0)
    seed: int = 0


class LearnedModelRef(_Strict):
    """A trained embedding model in the registry, applied on top of the compound embedding (paper §3.1.2)."""

    registry_uri: str
    # A content hash (pss_ops.learning.registry): the embedding cache keys on it, so a new model never reads old vectors.
    model_id: str = Field(pattern=r"^siamese-[0-9a-f]{16}$")
    device: str = "cpu"


class MatcherRef(_Strict):
    """A trained pair matcher in the registry (pss train-matcher): scores every candidate pair's match probability.

    With one set, similar_items carries match_probability and is ranked by it, and pairs at or above
    match_threshold link items into duplicate groups.
    """

    registry_uri: str
    model_id: str = Field(pattern=r"^matcher-[0-9a-f]{16}$")
    # Calibrated probabilities: 0.5 decides each pair by its likelier side; raise it for fewer, surer matches.
    match_threshold: float = Field(0.5, gt=0, le=1)


BatchStep = Literal["plan", "embed", "plan_index", "build_index", "search", "publish", "report", "train", "train_matcher"]


class BatchStepResources(_Strict):
    """Where and how big one step's AWS Batch jobs are; unset queue/definition fall back to the defaults."""

    job_queue: str | None = None
    job_definition: str | None = None
    vcpus: int = Field(1, ge=1, le=256)
    memory_mib: int = Field(2048, ge=128)
    gpus: int = Field(0, ge=0, le=8)


class BatchConfig(_Strict):
    """AWS Batch settings per step; partitions are handed to array jobs in chunks (paper §4.2.2)."""

    job_queue: str
    job_definition: str
    # Partitions per array job. Airflow maps at most 1024 tasks, Batch arrays hold at most 10,000.
    chunk_size: int = Field(100, ge=1, le=10_000)
    steps: dict[BatchStep, BatchStepResources] = {}

    def resources(self, step: BatchStep) -> BatchStepResources:
        """A step's resources with the default queue and job definition filled in."""
        own = self.steps.get(step, BatchStepResources())
        return own.model_copy(
            update={"job_queue": own.job_queue or self.job_queue, "job_definition": own.job_definition or self.job_definition}
        )


class AppConfig(_Strict):
    """One application's definition of 'similar' and how to compute it."""

    application: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
    description: str = ""
    features: tuple[Feature, ...] = Field(min_length=1)
    # Each query's candidates are the union of every retriever's top k * candidate_multiplier, ranked by the
    # weighted mean of the retrievers' cosines. The default is the compound embedding alone.
    retrievers: tuple[Retriever, ...] = Field((DenseRetriever(type="dense"),), min_length=1)
    k: int = Field(10, ge=1, le=1000)
    scope: Literal["category", "global"] = "category"
    index: IndexConfig = IndexConfig()
    catalog: CatalogConfig = CatalogConfig()
    post_filter: PostFilterConfig = PostFilterConfig()
    cache: CacheConfig = CacheConfig()
    quality: QualityConfig = QualityConfig()
    # The catalog the scheduled refresh reads (local path relative to this file, or s3://).
    catalog_uri: str | None = None
    # Where runs live (local path or s3://); runs go under <runs_uri>/<application>/<snapshot_date>/<run_id>.
    runs_uri: str | None = None
    batch: BatchConfig | None = None
    # Promoting a trained model is this one line of config; training never changes it.
    embedding_model: LearnedModelRef | None = None
    # Match decisions (pss train-matcher trains one); unset, match_probability is NULL and no groups are formed.
    matcher: MatcherRef | None = None

    @model_validator(mode="after")
    def _unique_feature_names(self) -> AppConfig:
        names = [feature_name(f) for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"feature names must be unique, repeated: {', '.join(duplicated)}")
        retrievers = [r.name for r in self.retrievers]
        repeated = sorted({n for n in retrievers if retrievers.count(n) > 1})
        if repeated:
            raise ValueError(f"retriever names must be unique, repeated: {', '.join(repeated)}")
        if sum(isinstance(r, DenseRetriever) for r in self.retrievers) != 1:
            raise ValueError("retrievers must include exactly one 'dense' retriever (the compound embedding of features)")
        dims: dict[str, set[int]] = {}
        for source in (*self.features, *self.retrievers):
            if isinstance(source, PrecomputedVectorFeature | VectorRetriever):
                dims.setdefault(source.column, set()).add(source.dim)
        for column, widths in dims.items():
            if len(widths) > 1:
                raise ValueError(f"{column} is given different dims by features and retrievers: {sorted(widths)}")
        if self.post_filter.min_match_probability is not None and self.matcher is None:
            raise ValueError("post_filter.min_match_probability needs a matcher: set matcher: {registry_uri, model_id}")
        return self

    @property
    def vector_columns(self) -> dict[str, int]:
        """The catalog's vector columns a feature or retriever reads, and their dims (every row must have one)."""
        return {s.column: s.dim for s in (*self.features, *self.retrievers) if isinstance(s, PrecomputedVectorFeature | VectorRetriever)}

    @property
    def exact_retrievers(self) -> tuple[ExactRetriever, ...]:
        """The retrievers searched exactly (every one but the dense), in config order."""
        return tuple(r for r in self.retrievers if isinstance(r, LexicalRetriever | VectorRetriever))

    @property
    def lexical_retrievers(self) -> tuple[LexicalRetriever, ...]:
        """The lexical retrievers, in config order."""
        return tuple(r for r in self.retrievers if isinstance(r, LexicalRetriever))

    @property
    def dim(self) -> int:
        """Width of the compound embedding (a learned model's output width is in its spec)."""
        return sum(f.dim for f in self.features)

    @property
    def filter_attributes(self) -> tuple[str, ...]:
        """Attribute columns the post-filter compares, in a stable order."""
        return tuple(dict.fromkeys((*self.post_filter.same, *self.post_filter.different)))

    @property
    def compound_model_id(self) -> str:
        """Content id of the compound embedding: changes when any feature or weight changes."""
        return compound_id(feature_spec(self.features))

    @property
    def model_id(self) -> str:
        """Id of the vectors this config produces: the learned model's, else the compound's."""
        return self.embedding_model.model_id if self.embedding_model else self.compound_model_id


def feature_name(feature: TextEmbeddingFeature | CharNgramFeature | ModelTokenFeature | PrecomputedVectorFeature) -> str:
    """A feature's display name, defaulting to its column for precomputed vectors."""
    return feature.name or getattr(feature, "column", feature.type)


def feature_spec(
    features: Iterable[TextEmbeddingFeature | CharNgramFeature | ModelTokenFeature | PrecomputedVectorFeature],
) -> tuple[dict[str, Any], ...]:
    """The features as JSON-able dicts: the content of a compound embedding (batch_size only sets throughput)."""
    return tuple(f.model_dump(mode="json", exclude={"batch_size"}) for f in features)


def compound_id(spec: Iterable[dict[str, Any]]) -> str:
    """The content id of the compound embedding of a feature_spec; a learned model's spec records the same one."""
    digest = hashlib.sha256(json.dumps({"compound/v1": list(spec)}, sort_keys=True).encode()).hexdigest()
    return f"compound-{digest[:16]}"


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<root>"
        lines.append(f"  key '{key}': {problem['msg']}")
    return "\n".join(lines)


def with_k(config: AppConfig, k: int | None) -> AppConfig:
    """The config with k overridden (validated); k is not part of the model id."""
    if k is None or k == config.k:
        return config
    return parse_config({**config.model_dump(mode="json"), "k": k}, "k override")


def dump_config(config: AppConfig) -> str:
    """The config as YAML that load_config reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)


def parse_config(data: Any, source: str = "<dict>") -> AppConfig:
    """Validate a config mapping; ConfigError names every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: expected a mapping at the top level")
    try:
        return AppConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file, local or s3://."""
    from pss_ops import storage

    path = str(path)
    try:
        text = storage.read_text(path)
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    return parse_config(data, str(path))
