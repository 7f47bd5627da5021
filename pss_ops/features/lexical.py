"""Hashed character n-grams: a stateless lexical feature, so model numbers like 'PSLX350H' count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from pss_ops.features.normalise import l2_normalise


def _unit_rows(sparse: Any) -> np.ndarray:
    """Dense float32 rows, L2-normalised; all-zero rows stay zero."""
    dense = sparse.toarray().astype(np.float32, copy=False)
    return l2_normalise(dense, out=dense)


def char_ngram_vectors(texts: Sequence[str], *, ngram_min: int, ngram_max: int, dims: int) -> np.ndarray:
    """Sublinear-tf hashed n-gram counts, L2-normalised, as dense float32 rows."""
    # Hashing (not a fitted vocabulary or IDF) keeps each item's vector independent of the
    # rest of the catalog, which is what lets the embedding cache key on the item alone.
    vectorizer = HashingVectorizer(
        analyzer="char",
        ngram_range=(ngram_min, ngram_max),
        n_features=dims,
        alternate_sign=False,
        norm=None,
        lowercase=True,
        dtype=np.float32,
    )
    counts = vectorizer.transform(list(texts)).tocsr()
    counts.data = 1.0 + np.log(counts.data)
    return _unit_rows(counts)


# A token is a run of word characters with at least one digit: "1tb", "hx426c15fb", "2007", "v11".
MODEL_TOKEN_PATTERN = r"(?u)\b\w*\d\w*\b"


def model_token_vectors(texts: Sequence[str], *, dims: int) -> np.ndarray:
    """Hashed presence of digit-bearing tokens, L2-normalised; rows without any such token are zero."""
    # Binary presence, not counts: a model number repeated in a noisy title is still one identity claim.
    vectorizer = HashingVectorizer(
        analyzer="word",
        token_pattern=MODEL_TOKEN_PATTERN,
        n_features=dims,
        alternate_sign=False,
        binary=True,
        norm=None,
        lowercase=True,
        dtype=np.float32,
    )
    return _unit_rows(vectorizer.transform(list(texts)))
