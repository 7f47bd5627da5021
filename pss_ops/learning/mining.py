"""Training negatives and pair cleaning: hard and random negatives, per-feature blocks, clean_pairs (paper §3.1.3)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from pss_ops.config import AppConfig, feature_name
from pss_ops.features.normalise import l2_normalise
from pss_ops.learning.pairs import NEGATIVE, POSITIVE, PairSet, item_rows, rows_of
from pss_ops.search.filters import RowFilter

# Pairs whose per-block cosines are computed at once while cleaning (bounds the gathered rows' memory).
_CLEAN_CHUNK = 65_536


def feature_blocks(vectors: np.ndarray, config: AppConfig) -> dict[str, np.ndarray]:
    """Split compound rows into their per-feature blocks (config order), each row re-normalised; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != config.dim:
        raise ValueError(f"expected compound vectors of shape (n, {config.dim}), got {vectors.shape}")
    blocks: dict[str, np.ndarray] = {}
    start = 0
    for feature in config.features:
        block = vectors[:, start : start + feature.dim]
        start += feature.dim
        blocks[feature_name(feature)] = l2_normalise(block)
    return blocks


@dataclass(frozen=True, eq=False)
class FeatureBlocks:
    """Per-feature unit vectors of a set of items, looked up by item id (the input of clean_pairs)."""

    ids: tuple[str, ...]
    blocks: Mapping[str, np.ndarray]
    _row: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple(self.ids)
        if not self.blocks:
            raise ValueError("FeatureBlocks needs at least one block")
        for name, block in self.blocks.items():
            if block.ndim != 2 or block.shape[0] != len(ids):
                raise ValueError(f"block {name!r} has shape {block.shape}, expected ({len(ids)}, dim)")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_row", item_rows(ids))

    @classmethod
    def from_compound(cls, ids: Sequence[str], vectors: np.ndarray, config: AppConfig) -> FeatureBlocks:
        """The blocks of compound vectors (rows aligned with ids), split by the config's features."""
        return cls(tuple(ids), feature_blocks(vectors, config))

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of the ids; ValueError naming the first id without vectors."""
        return rows_of(self._row, ids)


def _partners(positives: PairSet) -> dict[str, set[str]]:
    """Every item's known similar items, in both directions."""
    partners: dict[str, set[str]] = {}
    for a, b in zip(positives.id_a.tolist(), positives.id_b.tolist()):
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    return partners


def _require_positive(positives: PairSet) -> None:
    if len(positives) and not (positives.label == POSITIVE).all():
        raise ValueError(f"task {positives.task!r}: negatives are mined from positives only; pass pairs.positives")


def hard_negatives(
    positives: PairSet,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    per_positive: int = 5,
    candidates: int = 50,
    listable: RowFilter | None = None,
) -> PairSet:
    """Negatives from each positive's id_a to its nearest items by inner product that are not known partners.

    An id_a with m positives gets up to m * per_positive negatives among its `candidates` nearest items (self excluded).
    With listable (search.filters.row_filter over rows aligned with ids) a neighbour is used only if the service's
    post-filter would let the query list it: a negative the service can never return teaches nothing.
    Ties are broken by item order and an unordered pair is emitted once, so the result is deterministic.
    """
    _require_positive(positives)
    if per_positive < 1 or candidates < 1:
        raise ValueError(f"per_positive and candidates must be at least 1, got {per_positive} and {candidates}")
    ids = list(ids)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"expected {len(ids)} vector rows (one per id), got shape {vectors.shape}")
    row = item_rows(ids)
    queries = list(dict.fromkeys(positives.id_a.tolist()))
    query_rows = rows_of(row, queries)
    if not len(queries):
        return PairSet.empty(positives.task)
    wanted = {q: 0 for q in queries}
    for a in positives.id_a.tolist():
        wanted[a] += per_positive
    partners = _partners(positives)

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    k = min(candidates + 1, len(ids))  # +1: the query itself is usually its own nearest neighbour
    scores, neighbours = index.search(vectors[query_rows], k)

    emitted: set[tuple[str, str]] = set()
    out: list[tuple[str, str, int]] = []
    for query, query_row, score_row, neighbour_row in zip(queries, query_rows, scores, neighbours):
        valid = neighbour_row >= 0
        score_row, neighbour_row = score_row[valid], neighbour_row[valid]
        # Highest score first, ties by catalog row: independent of faiss's tie order.
        order = np.lexsort((neighbour_row, -score_row))
        score_row, neighbour_row = score_row[order], neighbour_row[order]
        allowed = listable(query_row, neighbour_row, score_row) if listable is not None else np.ones(len(order), dtype=bool)
        known = partners.get(query, set())
        taken = 0
        for candidate_row, may_list in zip(neighbour_row.tolist(), allowed.tolist()):
            if taken == wanted[query]:
                break
            candidate = ids[candidate_row]
            if candidate_row == query_row or candidate in known or not may_list:
                continue
            key = (query, candidate) if query < candidate else (candidate, query)
            if key in emitted:
                continue
            emitted.add(key)
            out.append((query, candidate, NEGATIVE))
            taken += 1
    return PairSet.from_rows(positives.task, out)


def random_negatives(positives: PairSet, ids: Sequence[str], *, ratio: float = 5.0, seed: int) -> PairSet:
    """round(ratio * len(positives)) negatives anchored on the positives' id_a, partners uniform over ids.

    Every positive anchors floor(ratio) negatives, a seeded random subset one more; a partner is never the anchor,
    one of its known partners (either direction) or a pair already drawn (in either order).
    """
    _require_positive(positives)
    if not (ratio >= 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a finite non-negative number, got {ratio}")
    ids = list(ids)
    row = item_rows(ids)
    rows_of(row, positives.id_a.tolist())  # every anchor must be a known item
    total = round(ratio * len(positives))
    if total == 0:
        return PairSet.empty(positives.task)
    rng = np.random.default_rng(seed)
    per_row = np.full(len(positives), total // len(positives), dtype=np.int64)
    per_row[rng.permutation(len(positives))[: total % len(positives)]] += 1
    partners = _partners(positives)
    drawn: dict[str, set[str]] = {}
    out: list[tuple[str, str, int]] = []
    for anchor, count in zip(positives.id_a.tolist(), per_row.tolist()):
        excluded = partners.get(anchor, set()) | drawn.get(anchor, set()) | {anchor}
        available = len(ids) - sum(1 for item in excluded if item in row)
        if count > available:
            raise ValueError(f"task {positives.task!r}: item {anchor!r} has only {available} possible random negatives, {count} wanted")
        for _ in range(count):
            while True:
                candidate = ids[int(rng.integers(len(ids)))]
                if candidate not in excluded:
                    break
            excluded.add(candidate)
            drawn.setdefault(anchor, set()).add(candidate)
            drawn.setdefault(candidate, set()).add(anchor)
            out.append((anchor, candidate, NEGATIVE))
    return PairSet.from_rows(positives.task, out)


@dataclass(frozen=True)
class CleaningReport:
    """What clean_pairs kept and dropped, per label, and the thresholds it used."""

    task: str
    positive_min: float
    negative_max: float
    positives_kept: int
    positives_dropped: int
    negatives_kept: int
    negatives_dropped: int

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return dict(self.__dict__)


def pair_cosines(pairs: PairSet, blocks_by_id: FeatureBlocks) -> dict[str, np.ndarray]:
    """Per feature block, the cosine of each pair's two items (0 when either has no such feature)."""
    rows_a = blocks_by_id.rows_of(pairs.id_a)
    rows_b = blocks_by_id.rows_of(pairs.id_b)
    cosines: dict[str, np.ndarray] = {}
    for name, block in blocks_by_id.blocks.items():
        out = np.empty(len(pairs), dtype=np.float64)
        for start in range(0, len(pairs), _CLEAN_CHUNK):
            a = block[rows_a[start : start + _CLEAN_CHUNK]].astype(np.float64)
            b = block[rows_b[start : start + _CLEAN_CHUNK]].astype(np.float64)
            out[start : start + len(a)] = np.einsum("ij,ij->i", a, b)
        cosines[name] = out
    return cosines


def clean_pairs(
    pairs: PairSet,
    blocks_by_id: FeatureBlocks,
    *,
    positive_min: float = 0.6,
    negative_max: float = 0.8,
) -> tuple[PairSet, CleaningReport]:
    """Paper §3.1.3: drop positives with cosine < positive_min on every block and negatives > negative_max on every block.

    A positive similar on at least one feature (say the title, not the image) is kept, and so is a negative that
    differs on at least one. A missing feature (zero block) has cosine 0. Any id without vectors raises ValueError.
    """
    for name, value in (("positive_min", positive_min), ("negative_max", negative_max)):
        if not -1.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a cosine in [-1, 1], got {value}")
    if not len(pairs):
        return pairs, CleaningReport(pairs.task, positive_min, negative_max, 0, 0, 0, 0)
    cosines = np.stack(list(pair_cosines(pairs, blocks_by_id).values()), axis=1)
    positive = pairs.label == POSITIVE
    drop = np.where(positive, (cosines < positive_min).all(axis=1), (cosines > negative_max).all(axis=1))
    report = CleaningReport(
        task=pairs.task,
        positive_min=float(positive_min),
        negative_max=float(negative_max),
        positives_kept=int((positive & ~drop).sum()),
        positives_dropped=int((positive & drop).sum()),
        negatives_kept=int((~positive & ~drop).sum()),
        negatives_dropped=int((~positive & drop).sum()),
    )
    return pairs.take(~drop), report
