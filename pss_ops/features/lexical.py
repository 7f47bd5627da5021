"""Lexical text features: hashed n-grams for the compound embedding, and the lexical retriever's TF-IDF."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

from pss_ops import storage
from pss_ops.config import LEXICAL_BUCKETS, LexicalRetriever
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


# --- the lexical retriever's weights: hashed sublinear term frequencies per item, IDF fitted per scope ----------


def term_frequencies(texts: Sequence[str], retriever: LexicalRetriever) -> sparse.csr_matrix:
    """Sublinear tf (1 + log count) of each text's hashed terms; depends on the item alone, like every embed output."""
    vectorizer = HashingVectorizer(
        analyzer=retriever.analyzer,
        ngram_range=(retriever.ngram_min, retriever.ngram_max),
        n_features=LEXICAL_BUCKETS,
        alternate_sign=False,
        norm=None,
        lowercase=True,
        dtype=np.float32,
    )
    counts = vectorizer.transform(list(texts)).tocsr()
    counts.data = (1.0 + np.log(counts.data)).astype(np.float32)
    counts.sort_indices()
    return counts


def document_frequencies(tf: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, number of rows holding it) for every bucket some row holds: what one partition adds to its scope's IDF."""
    buckets, counts = np.unique(tf.indices, return_counts=True)
    return buckets.astype(np.int64), counts.astype(np.int64)


def sum_document_frequencies(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The (bucket, count) pairs of several partitions summed per bucket, buckets sorted."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    buckets, inverse = np.unique(np.concatenate([b for b, _ in parts]), return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=np.concatenate([c for _, c in parts]), minlength=len(buckets))
    return buckets, np.rint(counts).astype(np.int64)


@dataclass(frozen=True)
class ScopeVocabulary:
    """The buckets a scope's items use, sorted, and each one's smooth IDF (scikit-learn's: ln((1 + n) / (1 + df)) + 1)."""

    buckets: np.ndarray
    idf: np.ndarray

    @classmethod
    def fitted(cls, documents: int, buckets: np.ndarray, counts: np.ndarray) -> ScopeVocabulary:
        idf = np.log((1.0 + documents) / (1.0 + counts.astype(np.float64))) + 1.0
        return cls(np.asarray(buckets, np.int64), idf.astype(np.float32))


def write_vocabulary(uri: str, documents: int, buckets: np.ndarray, counts: np.ndarray) -> None:
    """A scope's document frequencies, from which every step derives the same IDF."""
    storage.write_arrays(uri, documents=np.asarray(documents, np.int64), df_buckets=buckets, df_counts=counts)


def read_vocabulary(uri: str) -> ScopeVocabulary:
    arrays = storage.read_arrays(uri)
    return ScopeVocabulary.fitted(int(arrays["documents"]), arrays["df_buckets"], arrays["df_counts"])


def tfidf_rows(tf: sparse.csr_matrix, vocabulary: ScopeVocabulary) -> sparse.csr_matrix:
    """TF-IDF rows over the scope's buckets, L2-normalised, so a sparse dot product is the cosine; empty rows stay empty."""
    width = len(vocabulary.buckets)
    column = np.searchsorted(vocabulary.buckets, tf.indices)
    known = column < width
    known[known] = vocabulary.buckets[column[known]] == tf.indices[known]
    # Every term of the scope's own rows is in its vocabulary; a term outside it could match no row of it anyway.
    safe = np.where(known, column, 0)
    data = np.where(known, tf.data * (vocabulary.idf[safe] if width else 0), 0).astype(np.float32)
    weighted = sparse.csr_matrix((data, safe.astype(np.int32), tf.indptr), shape=(tf.shape[0], width))
    weighted.eliminate_zeros()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    scaled = (sparse.diags((1.0 / norms).astype(np.float32)) @ weighted).tocsr().astype(np.float32)
    scaled.sort_indices()
    return scaled


def write_sparse(uri: str, matrix: sparse.csr_matrix, **extra: np.ndarray) -> None:
    """A CSR matrix (and extra arrays) as .npz through the storage layer."""
    storage.write_arrays(
        uri,
        data=matrix.data,
        indices=matrix.indices,
        indptr=matrix.indptr,
        shape=np.asarray(matrix.shape, dtype=np.int64),
        **extra,
    )


def read_sparse(uri: str, start: int = 0, stop: int | None = None) -> tuple[sparse.csr_matrix, dict[str, np.ndarray]]:
    """Rows [start, stop) of a CSR matrix written by write_sparse, and its extra arrays."""
    arrays = storage.read_arrays(uri)
    shape = tuple(int(x) for x in arrays.pop("shape"))
    matrix = sparse.csr_matrix((arrays.pop("data"), arrays.pop("indices"), arrays.pop("indptr")), shape=shape)
    if start or (stop is not None and stop != shape[0]):
        matrix = matrix[start:stop]
    return matrix, arrays
