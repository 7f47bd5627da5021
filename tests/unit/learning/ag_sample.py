"""A real Amazon–Google sample shared by the mining and folds tests: ~120 items and every true match among them."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pss_ops.features.lexical import char_ngram_vectors
from pss_ops.learning.pairs import PairSet
from tests.conftest import DATA


@dataclass(frozen=True)
class Sample:
    """~120 real catalog rows that are both sides of true matches, and every true match among them."""

    frame: pd.DataFrame
    ids: list[str]
    truth: PairSet
    vectors: np.ndarray


@functools.cache
def sample() -> Sample:
    """Every 25th match plus all matches of three items with several partners, with 128-dim char n-gram vectors."""
    catalog = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    matches = pd.read_csv(DATA / "matches.csv", dtype=str, keep_default_na=False)
    known = set(catalog["item_id"])
    matches = matches[matches["id_a"].isin(known) & matches["id_b"].isin(known)]
    multi = matches["id_a"].value_counts()
    multi_ids = sorted(multi[multi >= 2].index)[:3]
    picked = pd.concat([matches.iloc[::25], matches[matches["id_a"].isin(multi_ids)]])
    keep = set(picked["id_a"]) | set(picked["id_b"])
    truth = matches[matches["id_a"].isin(keep) & matches["id_b"].isin(keep)]
    frame = catalog[catalog["item_id"].isin(keep)].reset_index(drop=True)
    vectors = char_ngram_vectors(frame["title"].tolist(), ngram_min=3, ngram_max=5, dims=128)
    pairs = PairSet("matches", truth["id_a"].to_numpy(object), truth["id_b"].to_numpy(object), np.ones(len(truth), np.int8))
    return Sample(frame, frame["item_id"].tolist(), pairs, vectors)


def truth_keys(pairs: PairSet) -> set[frozenset[str]]:
    return {frozenset(p) for p in zip(pairs.id_a.tolist(), pairs.id_b.tolist())}
