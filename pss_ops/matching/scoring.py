"""Pair features and match probabilities of one query partition's candidate table (the query step's output).

The table carries each retriever's cosine, which retrievers found the pair and each dense feature's cosine; the
rest of a pair's features (title overlap, part numbers, price, brand, attributes) come from the two items' catalog
rows, read from the plan's partitions of the same scope (a candidate is always in its query's scope) and only for
the items the table names. train-matcher and the post-filter both go through here, so a matcher sees at inference
exactly the features it was trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import layout, storage
from pss_ops.config import AppConfig
from pss_ops.manifests import CatalogPlan
from pss_ops.matching.model import Matcher
from pss_ops.matching.pair_features import COSINE_PREFIX, pair_features
from pss_ops.search.candidates import found_column, score_column

# The catalog columns pair features read besides the post-filter's attributes (plan writes them, NULL when absent).
ITEM_COLUMNS = ("item_id", "title", "brand", "price")


def scope_items(run_uri: str, scope: str, item_ids: pa.Array | pa.ChunkedArray, attributes: tuple[str, ...]) -> pd.DataFrame:
    """The catalog rows (ITEM_COLUMNS and attributes) of the given items of one scope, indexed by item_id."""
    wanted = pc.unique(item_ids if isinstance(item_ids, pa.Array) else item_ids.combine_chunks())
    columns = list(dict.fromkeys((*ITEM_COLUMNS, *attributes)))
    frames = []
    for partition in CatalogPlan.read(layout.plan_manifest(run_uri)).partitions:
        if partition.scope != scope:
            continue
        rows = storage.read_parquet(partition.uri, columns=columns)
        frames.append(rows.filter(pc.is_in(rows.column("item_id"), value_set=wanted)))
    if not frames:
        return pd.DataFrame(columns=columns).set_index("item_id")
    return pa.concat_tables(frames).to_pandas().set_index("item_id")


def candidate_features(config: AppConfig, table: pa.Table, items: pd.DataFrame, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The pair-feature frame of a candidate table's rows (of only `rows` if given), row for row."""
    names = [r.name for r in config.retrievers]
    columns = [
        "query_item_id",
        "candidate_item_id",
        *(score_column(n) for n in names),
        *(found_column(n) for n in names),
        *(c for c in table.column_names if c.startswith(COSINE_PREFIX)),
    ]
    return pair_features(table.select(columns).to_pandas(), items, names, config.filter_attributes, rows)


def partition_features(config: AppConfig, run_uri: str, scope: str, table: pa.Table, rows: np.ndarray | None = None) -> pd.DataFrame:
    """candidate_features with the items read from the run's catalog partitions of the scope."""
    ids = pa.chunked_array([*table.column("query_item_id").chunks, *table.column("candidate_item_id").chunks], pa.string())
    return candidate_features(config, table, scope_items(run_uri, scope, ids, config.filter_attributes), rows)


def match_probabilities(matcher: Matcher, config: AppConfig, run_uri: str, scope: str, table: pa.Table, rows: np.ndarray) -> np.ndarray:
    """The calibrated match probability of the given rows of a candidate table (features use the whole table)."""
    if not len(rows):
        return np.zeros(0, dtype=np.float64)
    return matcher.probabilities(partition_features(config, run_uri, scope, table, rows))
