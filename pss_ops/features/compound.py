"""The compound embedding: each feature L2-normalised, weighted, concatenated, then normalised."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops.config import AppConfig, CharNgramFeature, ModelTokenFeature, PrecomputedVectorFeature, TextEmbeddingFeature
from pss_ops.features.lexical import char_ngram_vectors, model_token_vectors
from pss_ops.features.normalise import l2_normalise
from pss_ops.features.text.encode import encode_texts


def _missing(value: Any) -> bool:
    # pandas reads a NULL text cell as NaN (its string dtype), not None: either is no text, never the word "nan".
    return value is None or (isinstance(value, float) and math.isnan(value))


def feature_text(frame: pd.DataFrame, fields: tuple[str, ...], max_chars: int | None = None) -> list[str]:
    """The text a feature reads: its fields joined by a space, NULLs skipped."""
    columns = [frame[f].tolist() if f in frame.columns else [None] * len(frame) for f in fields]
    texts = [" ".join(str(v) for v in values if not _missing(v) and str(v).strip()) for values in zip(*columns)]
    return [t[:max_chars] for t in texts] if max_chars else texts


def input_columns(config: AppConfig) -> tuple[str, ...]:
    """Catalog columns the embedding depends on; the cache hashes exactly these."""
    columns: list[str] = []
    for feature in config.features:
        if isinstance(feature, PrecomputedVectorFeature):
            columns.append(feature.column)
        else:
            columns.extend(feature.fields)
    return tuple(dict.fromkeys(columns))


def content_hashes(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[str]:
    """A hash per row of the embedding's inputs, so a changed title is re-embedded."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.astype(np.float32).tobytes().hex()
        # NULL hashes as null however pandas holds it. Items cached while a NaN field was embedded as "nan" hash
        # differently now, so they are embedded again from their real text.
        return None if _missing(value) else value

    hashes = []
    for values in zip(*(frame[c].tolist() if c in frame.columns else [None] * len(frame) for c in columns)):
        payload = json.dumps([plain(v) for v in values], ensure_ascii=False, default=str)
        hashes.append(hashlib.blake2b(payload.encode(), digest_size=16).hexdigest())
    return hashes


def compound_vectors(frame: pd.DataFrame, config: AppConfig, *, device: str = "cpu") -> np.ndarray:
    """Embed rows with every configured feature and combine them into one unit vector per row."""
    blocks = []
    for feature in config.features:
        if isinstance(feature, TextEmbeddingFeature):
            texts = feature_text(frame, feature.fields, feature.max_chars)
            block = encode_texts(texts, model=feature.model, batch_size=feature.batch_size, device=device)
        elif isinstance(feature, CharNgramFeature):
            texts = feature_text(frame, feature.fields)
            block = char_ngram_vectors(texts, ngram_min=feature.ngram_min, ngram_max=feature.ngram_max, dims=feature.dims)
        elif isinstance(feature, ModelTokenFeature):
            block = model_token_vectors(feature_text(frame, feature.fields), dims=feature.dims)
        else:
            block = np.stack(frame[feature.column].tolist()).astype(np.float32) if len(frame) else np.zeros((0, feature.dim), np.float32)
        blocks.append(l2_normalise(block) * np.float32(feature.weight))
    combined = np.hstack(blocks) if blocks else np.zeros((len(frame), 0), np.float32)
    return np.ascontiguousarray(l2_normalise(combined), dtype=np.float32)


def direct_vectors(table: pa.Table, config: AppConfig) -> np.ndarray | None:
    """The vectors straight from the Arrow columns when every feature is a precomputed vector and no learned model
    maps them; None otherwise, or when a vector is missing (its block is then zero, as compound_vectors makes it).

    Normalising and weighting stored vectors costs less than hashing them for the embedding cache and looking them
    up (76 s of a 1M-item run went to that), so such runs skip the cache.
    """
    if config.embedding_model is not None or not all(isinstance(f, PrecomputedVectorFeature) for f in config.features):
        return None
    blocks = []
    for feature in config.features:
        assert isinstance(feature, PrecomputedVectorFeature)
        column = table.column(feature.column).combine_chunks()
        if column.null_count or not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
            return None
        if len(column) and not pc.all(pc.equal(pc.list_value_length(column), feature.dim)).as_py():
            return None
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, feature.dim)
        blocks.append(l2_normalise(values) * np.float32(feature.weight))
    combined = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
    return np.ascontiguousarray(l2_normalise(combined), dtype=np.float32)


def item_vectors(frame: pd.DataFrame, config: AppConfig, *, device: str = "cpu") -> np.ndarray:
    """The vectors the config's model id names: the compound, passed through the learned model if one is set."""
    compound = compound_vectors(frame, config, device=device)
    if config.embedding_model is None:
        return compound
    from pss_ops.learning.registry import load_model_cached

    model, spec = load_model_cached(config.embedding_model.registry_uri, config.embedding_model.model_id, config.embedding_model.device)
    if spec.compound_model_id != config.compound_model_id:
        raise ValueError(
            f"model {config.embedding_model.model_id} was trained on compound features {spec.compound_model_id}, "
            f"but the config's features make {config.compound_model_id}; use the features it was trained on"
        )
    return model.embed(compound, device=config.embedding_model.device)
