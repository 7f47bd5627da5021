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
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from pss_ops.learning.part_numbers import part_numbers

_WORD = re.compile(r"(?u)\w+")
COSINE_PREFIX = "cos_"


def _part_numbers(text: str) -> list[str]:
    return [m.group(0).lower() for m in part_numbers(text)]


def _padded(text: str) -> str:
    """Lower-cased, whitespace collapsed, one space either side: the text character 3-grams are taken from."""
    return f" {' '.join(text.lower().split())} "


# One binary row per item (one parse per distinct item, not per pair: an item is in up to 2 x fetch pairs).
_TOKENIZERS: dict[str, Callable[[], CountVectorizer]] = {
    "words": lambda: CountVectorizer(binary=True, lowercase=True, token_pattern=_WORD.pattern, dtype=np.float32),
    "char3": lambda: CountVectorizer(
        binary=True, lowercase=False, preprocessor=_padded, analyzer="char", ngram_range=(3, 3), dtype=np.float32
    ),
    "part_numbers": lambda: CountVectorizer(binary=True, analyzer=_part_numbers, dtype=np.float32),
}


def _token_sets(texts: Sequence[str], kind: str) -> sp.csr_matrix:
    """Each text's set of tokens of a kind as a binary row; a text without any is an empty row."""
    try:
        return sp.csr_matrix(_TOKENIZERS[kind]().fit_transform(texts))
    except ValueError:  # every text empty: no vocabulary
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)


def _shared(sets: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair of rows: the size of the intersection and of each set, as sparse row products (no Python per pair)."""
    sizes = np.diff(sets.indptr).astype(np.float32)
    shared = np.asarray(sets[a].multiply(sets[b]).sum(axis=1), dtype=np.float32).ravel()
    return shared, sizes[a], sizes[b]


def _jaccard(sets: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shared, size_a, size_b = _shared(sets, a, b)
    union = size_a + size_b - shared
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, shared / union, np.nan).astype(np.float32)


def _own_ranks(query: np.ndarray, score: np.ndarray, found: np.ndarray) -> np.ndarray:
    """1-based rank of each found row among its query's found rows by this retriever's score; NaN if not found."""
    ranks = np.full(len(query), np.nan, dtype=np.float32)
    hit = np.flatnonzero(found)
    if len(hit):
        order = hit[np.lexsort((-score[hit], query[hit]))]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = query[order][1:] != query[order][:-1]
        first = np.flatnonzero(starts)
        ranks[order] = np.arange(len(order)) - first[np.cumsum(starts) - 1] + 1
    return ranks


def pair_features(
    pairs: pd.DataFrame, items: pd.DataFrame, retrievers: Sequence[str], attributes: Sequence[str] = (), rows: np.ndarray | None = None
) -> pd.DataFrame:
    """The feature frame of the pairs, row for row (float32, NaN where an input is missing); of only `rows` if given.

    Ranks and reverse pairs always read every row of `pairs` (a query's whole candidate list); `rows` saves the
    per-pair work of the rest when only some rows are scored.

    pairs: query_item_id, candidate_item_id, score_<retriever> and found_<retriever> for each retriever, and any
    cos_<feature> columns (each dense feature's own cosine, search.candidates), taken as they are.
    items: indexed by item_id, with title and optionally brand, price and the attribute columns; every pair's
    items must be in it.
    """
    item_index = pd.Index(items.index)
    if not item_index.is_unique:
        raise ValueError("pair features need one row per item id; the items table repeats some")
    query = item_index.get_indexer(pairs["query_item_id"])
    candidate = item_index.get_indexer(pairs["candidate_item_id"])
    unknown = np.flatnonzero((query < 0) | (candidate < 0))
    if len(unknown):
        row = pairs.iloc[unknown[0]]
        raise ValueError(f"pair ({row['query_item_id']!r}, {row['candidate_item_id']!r}) names an item the items table lacks")

    features: dict[str, np.ndarray] = {}
    # The reverse pair's row: pairs as integer keys, looked up in sorted order.
    n = np.int64(max(len(item_index), 1))
    keys, reverse_keys = query * n + candidate, candidate * n + query
    by_key = np.argsort(keys, kind="stable")
    at = np.minimum(np.searchsorted(keys[by_key], reverse_keys), max(len(keys) - 1, 0))
    has_reverse = (keys[by_key][at] == reverse_keys) if len(keys) else np.zeros(0, bool)
    reverse_at = np.where(has_reverse, by_key[at] if len(keys) else 0, 0)
    for name in retrievers:
        score = pairs[f"score_{name}"].to_numpy(dtype=np.float32)
        rank = _own_ranks(query, score, pairs[f"found_{name}"].to_numpy(dtype=bool))
        features[f"{name}_score"] = score
        features[f"{name}_rank"] = rank
        features[f"{name}_reverse_score"] = np.where(has_reverse, score[reverse_at], np.nan).astype(np.float32)
        features[f"{name}_reverse_rank"] = np.where(has_reverse, rank[reverse_at], np.nan).astype(np.float32)
    for column in sorted(c for c in pairs.columns if c.startswith(COSINE_PREFIX)):
        features[f"{column[len(COSINE_PREFIX) :]}_cosine"] = pairs[column].to_numpy(dtype=np.float32)
    index = pairs.index
    if rows is not None:
        features = {name: values[rows] for name, values in features.items()}
        query, candidate, index = query[rows], candidate[rows], pairs.index[rows]

    # Only the items the pairs name are read: `used` are their rows in items, query and candidate index into it.
    used, position = np.unique(np.concatenate([query, candidate]), return_inverse=True)
    items = items.iloc[used]
    query, candidate = position[: len(query)], position[len(query) :]
    titles = [t if isinstance(t, str) else "" for t in items["title"].to_numpy(dtype=object)]
    features["title_word_jaccard"] = _jaccard(_token_sets(titles, "words"), query, candidate)
    features["title_char3_jaccard"] = _jaccard(_token_sets(titles, "char3"), query, candidate)
    shared, parts_a, parts_b = _shared(_token_sets(titles, "part_numbers"), query, candidate)
    features["part_numbers_shared"] = shared
    features["part_numbers_conflict"] = np.where((parts_a > 0) & (parts_b > 0), (shared == 0).astype(np.float32), np.nan).astype(np.float32)

    if "price" in items.columns:
        price = pd.to_numeric(items["price"], errors="coerce").where(lambda p: p > 0).to_numpy(dtype=np.float64)
        a, b = price[query], price[candidate]
        with np.errstate(invalid="ignore"):
            features["price_ratio"] = (np.minimum(a, b) / np.maximum(a, b)).astype(np.float32)
    for column, name in [("brand", "brand_equal"), *((a, f"same_{a}") for a in attributes)]:
        if column not in items.columns:
            continue
        values = items[column].map(lambda v: v.strip().lower() if isinstance(v, str) and v.strip() else None)
        # Equal values share a code; NULL is -1 and proves neither sameness nor difference.
        codes = pd.factorize(values, use_na_sentinel=True)[0]
        a, b = codes[query], codes[candidate]
        features[name] = np.where((a >= 0) & (b >= 0), (a == b).astype(np.float32), np.nan).astype(np.float32)
    return pd.DataFrame(features, index=index)
