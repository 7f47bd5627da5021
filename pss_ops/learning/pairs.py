"""Training pairs for the SiameseNet: reading, mining, cleaning and splitting (paper §3.1.3, §5.1.2)."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import pandas as pd

from pss_ops import storage
from pss_ops.config import AppConfig, feature_name

POSITIVE = 1
NEGATIVE = 0
# Pairs whose per-block cosines are computed at once while cleaning (bounds the gathered rows' memory).
_CLEAN_CHUNK = 65_536


@dataclass(frozen=True, eq=False)
class PairSet:
    """One task's labelled pairs: id_a, id_b (str object arrays) and label (int8, 1 similar, 0 dissimilar)."""

    task: str
    id_a: np.ndarray
    id_b: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("a PairSet needs a non-empty task name")
        id_a = _id_array(self.id_a)
        id_b = _id_array(self.id_b)
        label = np.asarray(self.label)
        if not (len(id_a) == len(id_b) == len(label)) or label.ndim != 1:
            raise ValueError(
                f"task {self.task!r}: id_a, id_b and label must be 1-d of one length, got {len(id_a)}, {len(id_b)}, {label.shape}"
            )
        if len(label) and not np.isin(label, (NEGATIVE, POSITIVE)).all():
            bad = label[~np.isin(label, (NEGATIVE, POSITIVE))][0]
            raise ValueError(f"task {self.task!r}: labels must be 0 or 1, got {bad!r}")
        object.__setattr__(self, "id_a", id_a)
        object.__setattr__(self, "id_b", id_b)
        object.__setattr__(self, "label", label.astype(np.int8))

    @classmethod
    def empty(cls, task: str) -> PairSet:
        """A task with no pairs."""
        return cls(task, np.empty(0, dtype=object), np.empty(0, dtype=object), np.empty(0, dtype=np.int8))

    @classmethod
    def from_rows(cls, task: str, rows: Iterable[tuple[str, str, int]]) -> PairSet:
        """Pairs from (id_a, id_b, label) tuples."""
        rows = list(rows)
        if not rows:
            return cls.empty(task)
        a, b, y = zip(*rows)
        return cls(task, np.asarray(a, dtype=object), np.asarray(b, dtype=object), np.asarray(y, dtype=np.int8))

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray) -> PairSet:
        """The pairs selected by a boolean mask or an index array, in that order."""
        return PairSet(self.task, self.id_a[rows], self.id_b[rows], self.label[rows])

    def concat(self, *others: PairSet) -> PairSet:
        """This task's pairs followed by the others' (which must be of the same task)."""
        for other in others:
            if other.task != self.task:
                raise ValueError(f"cannot concatenate pairs of task {other.task!r} to task {self.task!r}")
        parts = (self, *others)
        return PairSet(
            self.task,
            np.concatenate([p.id_a for p in parts]),
            np.concatenate([p.id_b for p in parts]),
            np.concatenate([p.label for p in parts]),
        )

    @property
    def positives(self) -> PairSet:
        """The similar pairs."""
        return self.take(self.label == POSITIVE)

    @property
    def negatives(self) -> PairSet:
        """The dissimilar pairs."""
        return self.take(self.label == NEGATIVE)

    def rows(self) -> list[tuple[str, str, str, int]]:
        """(task, id_a, id_b, label) tuples, in order."""
        return [(self.task, a, b, int(y)) for a, b, y in zip(self.id_a.tolist(), self.id_b.tolist(), self.label.tolist())]

    def fingerprint(self) -> str:
        """sha256 hex of the sorted (task, id_a, id_b, label) rows: independent of row order."""
        return pairs_fingerprint([self])


def pairs_fingerprint(pair_sets: Iterable[PairSet]) -> str:
    """sha256 hex over the sorted (task, id_a, id_b, label) rows of all the sets (the spec's training_data)."""
    rows = sorted(row for pairs in pair_sets for row in pairs.rows())
    digest = hashlib.sha256(b"pairs/v1\n")
    for task, a, b, y in rows:
        # Length-prefixed fields: no id can forge a row boundary, whatever characters it holds.
        for text in (task, a, b):
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        digest.update(bytes([y]))
    return digest.hexdigest()


def _id_array(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=object).reshape(-1) if len(values) else np.empty(0, dtype=object)
    for value in array:
        if not isinstance(value, str):
            raise ValueError(f"pair ids must be strings, got {value!r} ({type(value).__name__})")
    return array


def read_pairs(uri: str, task: str) -> PairSet:
    """Read id_a,id_b[,label] CSV (local or s3://); without a label column every pair is a positive."""
    try:
        frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{uri}: not a readable pairs CSV: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in ("id_a", "id_b"):
        if column not in frame.columns:
            raise ValueError(f"{uri}: missing column {column!r} (columns: {', '.join(frame.columns)})")
    id_a = frame["id_a"].str.strip()
    id_b = frame["id_b"].str.strip()
    # Data rows are numbered from 1; the header is not counted.
    for column, values in (("id_a", id_a), ("id_b", id_b)):
        empty = np.flatnonzero((values == "").to_numpy())
        if len(empty):
            raise ValueError(f"{uri}: column {column!r} is empty in data row {empty[0] + 1}")
    same = np.flatnonzero((id_a == id_b).to_numpy())
    if len(same):
        raise ValueError(f"{uri}: data row {same[0] + 1} pairs item {id_a.iloc[same[0]]!r} with itself")
    if "label" in frame.columns:
        raw = frame["label"].str.strip()
        valid = raw.isin(("0", "1")).to_numpy()
        if not valid.all():
            row = int(np.flatnonzero(~valid)[0])
            raise ValueError(f"{uri}: column 'label' must be 0 or 1, got {raw.iloc[row]!r} in data row {row + 1}")
        label = (raw == "1").to_numpy().astype(np.int8)
    else:
        label = np.ones(len(frame), dtype=np.int8)
    return PairSet(task, id_a.to_numpy(dtype=object), id_b.to_numpy(dtype=object), label)


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
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        blocks[feature_name(feature)] = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
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
        object.__setattr__(self, "_row", _row_lookup(ids))

    @classmethod
    def from_compound(cls, ids: Sequence[str], vectors: np.ndarray, config: AppConfig) -> FeatureBlocks:
        """The blocks of compound vectors (rows aligned with ids), split by the config's features."""
        return cls(tuple(ids), feature_blocks(vectors, config))

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of the ids; ValueError naming the first id without vectors."""
        return _rows_of(self._row, ids)


def _row_lookup(ids: Sequence[str]) -> dict[str, int]:
    row: dict[str, int] = {}
    for index, item in enumerate(ids):
        if row.setdefault(item, index) != index:
            raise ValueError(f"item ids must be unique, {item!r} is repeated")
    return row


def _rows_of(row: Mapping[str, int], ids: Iterable[str]) -> np.ndarray:
    out = []
    for item in ids:
        index = row.get(item)
        if index is None:
            raise ValueError(f"no vector for item {item!r}")
        out.append(index)
    return np.asarray(out, dtype=np.int64)


def _partners(positives: PairSet) -> dict[str, set[str]]:
    """Every item's known similar items, in both directions."""
    partners: dict[str, set[str]] = {}
    for a, b in zip(positives.id_a.tolist(), positives.id_b.tolist()):
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    return partners


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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
    exclude_same: np.ndarray | None = None,
) -> PairSet:
    """Negatives from each positive's id_a to its nearest items by inner product that are not known partners.

    An id_a with m positives gets up to m * per_positive negatives among its `candidates` nearest items (self excluded).
    With exclude_same (an attribute per item, aligned with ids) a neighbour is used only if both values are known and
    differ, as post_filter.different would let it through; a negative the service can never return teaches nothing.
    Ties are broken by item order and an unordered pair is emitted once, so the result is deterministic.
    """
    _require_positive(positives)
    if per_positive < 1 or candidates < 1:
        raise ValueError(f"per_positive and candidates must be at least 1, got {per_positive} and {candidates}")
    ids = list(ids)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"expected {len(ids)} vector rows (one per id), got shape {vectors.shape}")
    if exclude_same is not None and len(exclude_same) != len(ids):
        raise ValueError(f"exclude_same has {len(exclude_same)} values for {len(ids)} ids")
    row = _row_lookup(ids)
    queries = list(dict.fromkeys(positives.id_a.tolist()))
    query_rows = _rows_of(row, queries)
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
    attribute = None if exclude_same is None else np.asarray(exclude_same, dtype=object)

    emitted: set[tuple[str, str]] = set()
    out: list[tuple[str, str, int]] = []
    for query, query_row, score_row, neighbour_row in zip(queries, query_rows, scores, neighbours):
        valid = neighbour_row >= 0
        score_row, neighbour_row = score_row[valid], neighbour_row[valid]
        # Highest score first, ties by catalog row: independent of faiss's tie order.
        order = np.lexsort((neighbour_row, -score_row))
        known = partners.get(query, set())
        taken = 0
        for candidate_row in neighbour_row[order].tolist():
            if taken == wanted[query]:
                break
            candidate = ids[candidate_row]
            if candidate_row == query_row or candidate in known:
                continue
            if attribute is not None:
                mine, theirs = attribute[query_row], attribute[candidate_row]
                if _is_null(mine) or _is_null(theirs) or mine == theirs:
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
    row = _row_lookup(ids)
    _rows_of(row, positives.id_a.tolist())  # every anchor must be a known item
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


def _triangle_pair(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode indices of the strict upper triangle of a size x size matrix (row-major) into (i, j), i < j."""
    index = index.astype(np.int64)
    n = np.int64(size)
    i = n - 2 - np.floor(np.sqrt(-8 * index + 4 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    # Float rounding can land one row off for huge groups; nudge to the row whose range holds the index.
    for _ in range(2):
        start = i * (2 * n - i - 1) // 2
        i = np.where(index < start, i - 1, np.where(index >= start + (n - 1 - i), i + 1, i))
    start = i * (2 * n - i - 1) // 2
    j = index - start + i + 1
    return i, j


def group_pairs(
    ids: Sequence[str],
    groups: Sequence[Hashable | None],
    *,
    task: str,
    max_pairs_per_group: int = 100,
    seed: int = 0,
) -> PairSet:
    """Positives between members of one group (e.g. a WDC cluster_id or a catalog's product-group column).

    Items whose group is null (None/NaN/"") pair with nobody. A group with more than max_pairs_per_group member pairs
    contributes a seeded uniform sample of them. id_a precedes id_b in ids order; groups come in order of first member.
    """
    if max_pairs_per_group < 1:
        raise ValueError(f"max_pairs_per_group must be at least 1, got {max_pairs_per_group}")
    ids = list(ids)
    if len(groups) != len(ids):
        raise ValueError(f"got {len(groups)} groups for {len(ids)} ids")
    _row_lookup(ids)
    members: dict[Hashable, list[int]] = {}
    for position, group in enumerate(groups):
        if _is_null(group) or group == "":
            continue
        members.setdefault(group, []).append(position)
    rng = np.random.default_rng(seed)
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    for rows in members.values():
        size = len(rows)
        count = size * (size - 1) // 2
        if count == 0:
            continue
        if count <= max_pairs_per_group:
            i, j = np.triu_indices(size, k=1)
        else:
            i, j = _triangle_pair(np.sort(rng.choice(count, size=max_pairs_per_group, replace=False)), size)
        member_rows = np.asarray(rows, dtype=np.int64)
        a_parts.append(member_rows[i])
        b_parts.append(member_rows[j])
    if not a_parts:
        return PairSet.empty(task)
    id_array = np.asarray(ids, dtype=object)
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    return PairSet(task, id_array[a], id_array[b], np.ones(len(a), dtype=np.int8))


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


def holdout_queries(queries: Iterable[str], *, holdout_fraction: float, seed: int) -> set[str]:
    """A seeded random round(fraction * n) of the distinct queries (at least one, never all, when 0 < fraction and n > 1)."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    distinct = sorted(set(queries))  # sorted: the split does not depend on row order
    if holdout_fraction == 0 or len(distinct) < 2:
        return set()
    count = min(max(1, round(holdout_fraction * len(distinct))), len(distinct) - 1)
    order = np.random.default_rng(seed).permutation(len(distinct))[:count]
    return {distinct[i] for i in order.tolist()}


def split_by_query(pairs: PairSet, *, holdout_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """(train, holdout) split by id_a: every pair of a query item lands on one side; row order is kept."""
    held = holdout_queries(pairs.id_a.tolist(), holdout_fraction=holdout_fraction, seed=seed)
    mask = np.fromiter((a in held for a in pairs.id_a.tolist()), dtype=bool, count=len(pairs))
    return pairs.take(~mask), pairs.take(mask)


def component_folds(
    pairs: PairSet, *, folds: int, groups: Mapping[str, Hashable | None] | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Cross-validation folds in which no item, and no group (e.g. WDC cluster_id), appears in two folds.

    Items joined by any pair, or sharing a non-null group, form one connected component; components are dealt,
    largest first, to the fold with the fewest pairs so far. Splitting by query item alone would leak: in WDC
    every offer of a product is paired with several others, so a held-out pair's items would also be in training.
    Returns each pair's fold and each item's fold (items only in groups included).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in zip(pairs.id_a.tolist(), pairs.id_b.tolist()):
        parent[find(a)] = find(b)
    first_of_group: dict[Hashable, str] = {}
    for item, group in (groups or {}).items():
        find(item)
        if _is_null(group) or group == "":
            continue
        if group in first_of_group:
            parent[find(item)] = find(first_of_group[group])
        else:
            first_of_group[group] = item
    component_of_pair = [find(a) for a in pairs.id_a.tolist()]
    sizes: dict[str, int] = {}
    for component in component_of_pair:
        sizes[component] = sizes.get(component, 0) + 1
    for item in list(parent):
        sizes.setdefault(find(item), 0)
    if len(sizes) < folds:
        raise ValueError(f"only {len(sizes)} connected components, fewer than {folds} folds")
    load = [0] * folds
    fold_of_component: dict[str, int] = {}
    # Largest first, ties by component id: deterministic for the same pairs.
    for component, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        target = min(range(folds), key=lambda f: (load[f], f))
        fold_of_component[component] = target
        load[target] += size
    pair_fold = np.array([fold_of_component[c] for c in component_of_pair], dtype=np.int64)
    item_fold = {item: fold_of_component[find(item)] for item in parent}
    return pair_fold, item_fold
