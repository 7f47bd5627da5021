"""Step 3, plan_index: group embedded rows of each scope into balanced index partitions."""

from __future__ import annotations

import logging
import math

from pss_ops import layout, storage
from pss_ops.config import IndexConfig, IndexTuningConfig
from pss_ops.features.lexical import sum_document_frequencies, write_vocabulary
from pss_ops.manifests import CatalogPlan, EmbeddedPartition, IndexPartition, IndexPlan, IndexSpec, IndexTuning, RowSlice, RunContext
from pss_ops.search.filters import candidates_per_query
from pss_ops.search.indexes import coarse_quantizer_for, ivf_lists
from pss_ops.search.tuning import sample_scope, tune_index
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def _balanced_slices(parts: list[EmbeddedPartition], max_rows: int) -> list[list[RowSlice]]:
    total = sum(p.rows for p in parts)
    count = max(1, math.ceil(total / max_rows))
    # Equal sizes rather than full-then-remainder, so no index partition is a tiny straggler:
    # the first total % count partitions hold one row more than the rest.
    base, extra = divmod(total, count)
    groups: list[list[RowSlice]] = [[]]
    room = base + (1 if extra > 0 else 0)
    for part in parts:
        start = 0
        while start < part.rows:
            if room == 0:
                groups.append([])
                room = base + (1 if len(groups) <= extra else 0)
            stop = min(part.rows, start + room)
            groups[-1].append(RowSlice(uri=part.uri, start=start, stop=stop, retriever_inputs=part.retriever_inputs))
            room -= stop - start
            start = stop
    return [g for g in groups if g]


def _tune(ctx: RunContext, embedded: list[EmbeddedPartition], tuning: IndexTuningConfig) -> IndexTuning:
    """Measure the index families on a sample of the largest scope and return the choice for every scope."""
    scope, scope_rows, sample = sample_scope(embedded, tuning.sample_rows, tuning.seed)
    sizes: dict[str, int] = {}
    for part in embedded:
        sizes[part.scope] = sizes.get(part.scope, 0) + part.rows
    return tune_index(
        sample,
        scope=scope,
        scope_rows=scope_rows,
        scope_sizes=sizes,
        k=ctx.config.k,
        candidates_per_query=candidates_per_query(ctx.config),
        tuning=tuning,
    )


def _fit_lexical_idf(ctx: RunContext, embedded: list[EmbeddedPartition], partitions: list[IndexPartition]) -> list[IndexPartition]:
    """Per scope and lexical retriever: sum the embedded partitions' document frequencies and write the scope's IDF."""
    if not ctx.config.lexical_retrievers:
        return partitions
    idf_uris: dict[str, dict[str, str]] = {}
    for scope in dict.fromkeys(p.scope for p in partitions):
        first = next(p for p in partitions if p.scope == scope)
        members = [e for e in embedded if e.scope == scope]
        for retriever in ctx.config.lexical_retrievers:
            parts = []
            for member in members:
                arrays = storage.read_arrays(member.retriever_inputs[retriever.name])
                parts.append((arrays["df_buckets"], arrays["df_counts"]))
            uri = layout.lexical_idf(ctx.run_uri, retriever.name, first.name)
            write_vocabulary(uri, sum(m.rows for m in members), *sum_document_frequencies(parts))
            idf_uris.setdefault(scope, {})[retriever.name] = uri
    return [p.model_copy(update={"lexical_idf": idf_uris[p.scope]}) for p in partitions]


def configured_index(params: IndexConfig, rows: int) -> IndexSpec:
    """The index an untuned config asks for, for a partition of `rows` (an ivf's lists follow its size unless set)."""
    if params.family == "flat":
        return IndexSpec(family="flat")
    if params.family == "hnsw":
        return IndexSpec(family="hnsw", hnsw_m=params.hnsw_m, ef_construction=params.ef_construction, search_effort=params.ef_search)
    nlist = min(params.nlist or ivf_lists(rows), rows)
    return IndexSpec(family="ivf", nlist=nlist, coarse_quantizer=coarse_quantizer_for(nlist), search_effort=params.nprobe)


def plan_index(ctx: RunContext, catalog_plan: CatalogPlan) -> IndexPlan:
    """Read every embed manifest (all must exist) and plan the index partitions per scope (tuned if configured)."""
    with timed("plan_index") as timer:
        embedded = [EmbeddedPartition.read(layout.embed_manifest(ctx.run_uri, p.name)) for p in catalog_plan.partitions]
        stale = [e.name for e in embedded if e.model_id != ctx.model_id]
        if stale:
            raise ValueError(f"embedded partitions {stale} were made with another model than {ctx.model_id}")
        dims = sorted({e.dim for e in embedded})
        if len(dims) > 1:
            raise ValueError(f"embedded partitions disagree on the vector width: {dims}")
        params = ctx.config.index
        tuning = _tune(ctx, embedded, params.tuning) if params.tuning is not None and embedded else None
        choices = {c.scope: c for c in tuning.scopes} if tuning is not None else {}
        partitions: list[IndexPartition] = []
        for scope in sorted({e.scope for e in embedded}):
            members = [e for e in embedded if e.scope == scope]
            choice = choices.get(scope)
            for slices in _balanced_slices(members, choice.partition_rows if choice is not None else params.partition_size):
                number = len(partitions)
                rows = sum(s.stop - s.start for s in slices)
                partitions.append(
                    IndexPartition(
                        number=number,
                        name=f"index-{number:05d}",
                        scope=scope,
                        rows=rows,
                        slices=tuple(slices),
                        index=choice.index if choice is not None else configured_index(params, rows),
                        alternatives=choice.alternatives if choice is not None else (),
                    )
                )
        partitions = _fit_lexical_idf(ctx, embedded, partitions)
    result = IndexPlan(dim=dims[0] if dims else ctx.config.dim, partitions=tuple(partitions), seconds=timer.seconds, tuning=tuning)
    result.write(layout.index_plan_manifest(ctx.run_uri))
    log.info("plan_index: %d index partitions over %d scopes", len(partitions), len({p.scope for p in partitions}))
    return result
