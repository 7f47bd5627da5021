"""Features of candidate pairs, the matcher's input: computed column-wise over one partition's candidate table.

For each (query, candidate) row of the query step's output (search.candidates):
- per retriever: its cosine, its rank among the rows it found for the query (NaN when it did not find the
  pair), and the same two for the reverse pair (candidate, query) when that row is in the same table;
- title overlap: Jaccard of the lower-cased word sets and of the character 3-gram sets;
- part numbers (learning.part_numbers): how many the two titles share, and whether both have some but share
  none (two different model numbers: the strongest evidence of two different products);
- price ratio (smaller over larger), brand equality, and equality of each configured attribute.
Missing inputs (no price, no brand, a NULL attribute) are NaN, never a made-up value: gradient-boosted trees
route NaN on their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pss_ops.learning.part_numbers import part_numbers

_WORD = re.compile(r"(?u)\w+")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _trigrams(text: str) -> frozenset[str]:
    padded = f" {' '.join(text.lower().split())} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def _jaccard(a: Sequence[frozenset[str]], b: Sequence[frozenset[str]]) -> np.ndarray:
    out = np.full(len(a), np.nan, dtype=np.float32)
    for i, (x, y) in enumerate(zip(a, b)):
        union = len(x | y)
        if union:
            out[i] = len(x & y) / union
    return out


def _per_item(items: pd.Series, parse: object) -> dict[str, frozenset[str]]:
    """One parse per distinct item, not per pair: a catalog item appears in up to 2 x fetch pairs."""
    return {item: parse(text) if isinstance(text, str) else frozenset() for item, text in items.items()}  # type: ignore[operator]


def _own_ranks(pairs: pd.DataFrame, score: str, found: str) -> np.ndarray:
    """1-based rank of each found row among its query's found rows by this retriever's score; NaN if not found."""
    ranks = np.full(len(pairs), np.nan, dtype=np.float32)
    hit = pairs[found].to_numpy(dtype=bool)
    if hit.any():
        ranked = pairs.loc[hit, ["query_item_id", score]].copy()
        ranked["_order"] = np.arange(len(ranked))
        ranked = ranked.sort_values(["query_item_id", score], ascending=[True, False], kind="stable")
        position = ranked.groupby("query_item_id", sort=False).cumcount().to_numpy() + 1
        ranks[np.flatnonzero(hit)[ranked["_order"].to_numpy()]] = position
    return ranks


def pair_features(pairs: pd.DataFrame, items: pd.DataFrame, retrievers: Sequence[str], attributes: Sequence[str] = ()) -> pd.DataFrame:
    """The feature frame of the pairs, row for row (float32, NaN where an input is missing).

    pairs: query_item_id, candidate_item_id, and score_<retriever>, found_<retriever> for each retriever.
    items: indexed by item_id, with title and optionally brand, price and the attribute columns.
    """
    features: dict[str, np.ndarray] = {}
    keys = pairs["query_item_id"].astype(str) + "\x00" + pairs["candidate_item_id"].astype(str)
    reverse_keys = pairs["candidate_item_id"].astype(str) + "\x00" + pairs["query_item_id"].astype(str)
    reverse_row = pd.Series(np.arange(len(pairs)), index=keys.to_numpy()).reindex(reverse_keys.to_numpy()).to_numpy()
    has_reverse = ~np.isnan(reverse_row)
    reverse_at = np.where(has_reverse, reverse_row, 0).astype(np.int64)
    for name in retrievers:
        score = pairs[f"score_{name}"].to_numpy(dtype=np.float32)
        rank = _own_ranks(pairs, f"score_{name}", f"found_{name}")
        features[f"{name}_score"] = score
        features[f"{name}_rank"] = rank
        features[f"{name}_reverse_score"] = np.where(has_reverse, score[reverse_at], np.nan).astype(np.float32)
        features[f"{name}_reverse_rank"] = np.where(has_reverse, rank[reverse_at], np.nan).astype(np.float32)

    query, candidate = pairs["query_item_id"].to_numpy(), pairs["candidate_item_id"].to_numpy()
    titles = items["title"]
    words, trigrams = _per_item(titles, _words), _per_item(titles, _trigrams)
    parts = _per_item(titles, lambda text: frozenset(m.group(0).lower() for m in part_numbers(text)))
    features["title_word_jaccard"] = _jaccard([words[q] for q in query], [words[c] for c in candidate])
    features["title_char3_jaccard"] = _jaccard([trigrams[q] for q in query], [trigrams[c] for c in candidate])
    shared = np.array([len(parts[q] & parts[c]) for q, c in zip(query, candidate)], dtype=np.float32)
    both = np.array([bool(parts[q]) and bool(parts[c]) for q, c in zip(query, candidate)])
    features["part_numbers_shared"] = shared
    features["part_numbers_conflict"] = np.where(both, (shared == 0).astype(np.float32), np.nan).astype(np.float32)

    if "price" in items.columns:
        price = pd.to_numeric(items["price"], errors="coerce").where(lambda p: p > 0)
        a, b = price.reindex(query).to_numpy(dtype=np.float64), price.reindex(candidate).to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            features["price_ratio"] = (np.minimum(a, b) / np.maximum(a, b)).astype(np.float32)
    for column, name in [("brand", "brand_equal"), *((a, f"same_{a}") for a in attributes)]:
        if column not in items.columns:
            continue
        values = items[column].map(lambda v: v.strip().lower() if isinstance(v, str) and v.strip() else None)
        a, b = values.reindex(query).to_numpy(dtype=object), values.reindex(candidate).to_numpy(dtype=object)
        known = ~(pd.isna(a) | pd.isna(b))
        features[name] = np.where(known, (a == b).astype(np.float32), np.nan).astype(np.float32)
    return pd.DataFrame(features, index=pairs.index)
