"""Step 2, embed: compound vectors for one catalog partition, through the embedding cache, and lexical term frequencies."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.config import LexicalRetriever
from pss_ops.features.cache.base import EmbeddingCache
from pss_ops.features.compound import content_hashes, direct_vectors, feature_text, input_columns, item_vectors
from pss_ops.features.embedded import VECTOR_COLUMN, vector_column
from pss_ops.features.retriever_inputs import write_input
from pss_ops.manifests import CatalogPartition, EmbeddedPartition, RunContext
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def embed_partition(ctx: RunContext, partition: CatalogPartition, cache: EmbeddingCache, *, device: str = "cpu") -> EmbeddedPartition:
    """Embed the cache misses, reuse the hits, write item ids + attributes + vectors.

    Precomputed vectors alone (no learned model) are computed directly, without the cache (compound.direct_vectors).
    """
    config = ctx.config
    keep = ["item_id", "category", *[a for a in config.filter_attributes if a != "category"]]
    with timed(f"embed {partition.name}") as timer:
        table = storage.read_parquet(partition.uri)
        # Only the embedding's inputs become Python objects; kept columns go straight from Arrow to the output.
        lexical_fields = [f for r in config.exact_retrievers if isinstance(r, LexicalRetriever) for f in r.fields]
        vectors = direct_vectors(table, config)
        through_cache = vectors is None
        needed = dict.fromkeys([*(input_columns(config) if through_cache else ()), *lexical_fields])
        inputs = ["item_id", *(c for c in needed if c in table.column_names and c != "item_id")]
        frame = table.select(inputs).to_pandas()
        hits = misses = 0
        if vectors is None:
            vectors, hits, misses = _through_cache(ctx, frame, cache, device)
        columns = {c: table.column(c).cast(pa.string()) for c in keep}
        columns[VECTOR_COLUMN] = vector_column(vectors)
        uri = layout.embedded(ctx.run_uri, partition.name)
        storage.write_parquet(uri, pa.table(columns))
        # Term frequencies are cheap and depend on the item alone; the IDF that weights them is fitted per run
        # on the scope (plan_index), so nothing fitted on the rest of the catalog enters the cache.
        retriever_inputs = {}
        for retriever in config.exact_retrievers:
            retriever_inputs[retriever.name] = layout.retriever_input(ctx.run_uri, partition.name, retriever.name)
            texts = feature_text(frame, retriever.fields) if isinstance(retriever, LexicalRetriever) else []
            write_input(retriever_inputs[retriever.name], retriever, texts, table)
    result = EmbeddedPartition(
        name=partition.name,
        scope=partition.scope,
        uri=uri,
        rows=table.num_rows,
        dim=vectors.shape[1],
        model_id=ctx.model_id,
        cache_hits=hits,
        cache_misses=misses,
        cache_used=through_cache,
        seconds=timer.seconds,
        retriever_inputs=retriever_inputs,
    )
    result.write(layout.embed_manifest(ctx.run_uri, partition.name))
    log.info(
        "embed %s: %d rows, %s",
        partition.name,
        result.rows,
        f"{hits} cache hits, {misses} computed" if through_cache else "precomputed vectors normalised (no cache)",
    )
    return result


def _through_cache(ctx: RunContext, frame: pd.DataFrame, cache: EmbeddingCache, device: str) -> tuple[np.ndarray, int, int]:
    """(vectors, cache hits, cache misses): the hits read from the cache, the misses computed and written to it."""
    config = ctx.config
    hashes = content_hashes(frame, input_columns(config))
    keys = list(zip(frame["item_id"].tolist(), hashes))
    hits = {} if ctx.full_refresh else cache.get_many(ctx.model_id, keys)
    missing = [i for i, key in enumerate(keys) if key not in hits]
    fresh = item_vectors(frame.iloc[missing].reset_index(drop=True), config, device=device) if missing else None
    # A learned model's output width is known only from its vectors.
    dim = fresh.shape[1] if fresh is not None else next(iter(hits.values())).shape[0] if hits else config.dim
    vectors = np.zeros((len(frame), dim), dtype=np.float32)
    for i, key in enumerate(keys):
        if key in hits:
            vectors[i] = hits[key]
    if fresh is not None:
        vectors[missing] = fresh
        cache.put_many(ctx.model_id, ((keys[i][0], keys[i][1], fresh[j]) for j, i in enumerate(missing)))
    return vectors, len(keys) - len(missing), len(missing)
