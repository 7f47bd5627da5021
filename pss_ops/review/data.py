"""What the review page shows: a run's published pairs, the items of the pairs on screen, the search and the queue.

The pairs are held in memory (the columns the page shows; `pss label-queue` reads the same file whole). Item
details are read from the run's plan partitions for the items of one response only, never the whole catalog.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import layout, storage
from pss_ops.config import VECTOR_COLUMNS
from pss_ops.manifests import CatalogPlan
from pss_ops.matching.label_queue import _published, label_queue
from pss_ops.quality.matching import pair_keys
from pss_ops.review.labels import LabelStore, ReviewError

PAIR_COLUMNS = ("category", "query_item_id", "candidate_item_id", "rank", "score", "found_by", "retriever_scores", "match_probability")
SEARCH_LIMIT = 20
QUERY_MAX_CHARS = 200
# A long description is cut for the page; the catalog keeps it whole.
VALUE_MAX_CHARS = 400
# First in this order, then the catalog's other columns as they come.
SHOWN_FIRST = ("brand", "price", "category", "seller", "description")
ITEM_CACHE = 2048


class Unknown(LookupError):
    """A request names an item or pair the run does not have; the message is fixed text, safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Item:
    """One catalog item as the page shows it: its title and its other columns, in order."""

    item_id: str
    title: str | None
    fields: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.item_id, "title": self.title, "fields": [list(f) for f in self.fields]}


def _finite(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_MAX_CHARS else text[: VALUE_MAX_CHARS - 1] + "…"


def _retriever_scores(text: Any) -> dict[str, float]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): float(v) for k, v in parsed.items() if isinstance(v, (int, float)) and math.isfinite(v)}


class Items:
    """Item details off the plan partitions, read per partition for the ids asked and kept in a small cache."""

    def __init__(self, run_uri: str | None) -> None:
        self.partitions: list[str] = []
        if run_uri is not None and storage.exists(layout.plan_manifest(run_uri)):
            uris = [p.uri for p in CatalogPlan.read(layout.plan_manifest(run_uri)).partitions]
            # A run whose partitions were cleaned up still shows its pairs, by id.
            self.partitions = uris if all(storage.exists(u) for u in uris) else []
        self._cache: OrderedDict[str, Item] = OrderedDict()

    def _columns(self, uri: str) -> list[str]:
        schema = storage.open_parquet(uri).schema_arrow
        names = [f.name for f in schema if f.name not in VECTOR_COLUMNS and not pa.types.is_nested(f.type)]
        rest = [n for n in names if n not in ("item_id", "title", *SHOWN_FIRST)]
        return ["item_id", *[n for n in ("title", *SHOWN_FIRST) if n in names], *rest]

    def get(self, ids: list[str]) -> dict[str, Item]:
        """The items of ids (an id not in the plan comes back with no title and no fields)."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self._cache]
        found: dict[str, Item] = {}
        for uri in self.partitions if wanted else ():
            table = storage.read_parquet(uri, columns=self._columns(uri))
            table = table.filter(pc.is_in(table.column("item_id"), value_set=pa.array(wanted, pa.string())))
            for row in table.to_pylist():
                title = row.pop("title", None)
                item_id = row.pop("item_id")
                fields = tuple((k, _cut(str(v))) for k, v in row.items() if v not in (None, ""))
                found[item_id] = Item(item_id, title, fields)
            if len(found) == len(wanted):
                break
        for item_id in wanted:
            self._cache[item_id] = found.get(item_id, Item(item_id, None, ()))
        while len(self._cache) > ITEM_CACHE:
            self._cache.popitem(last=False)
        return {i: self._cache[i] for i in ids}

    def search(self, text: str, among: pa.Array, limit: int) -> tuple[list[tuple[str, str | None]], bool]:
        """Items of `among` whose id or title holds text (any case): up to limit (id, title), and whether more matched."""
        hits: list[tuple[str, str | None]] = []
        if not self.partitions:
            ids = among.filter(pc.match_substring(among, text, ignore_case=True))
            return [(i, None) for i in ids.to_pylist()[:limit]], len(ids) > limit
        for uri in self.partitions:
            table = storage.read_parquet(uri, columns=["item_id", "title"])
            ids, titles = table.column("item_id"), table.column("title")
            matched = pc.or_kleene(pc.match_substring(ids, text, ignore_case=True), pc.match_substring(titles, text, ignore_case=True))
            table = table.filter(pc.and_kleene(matched, pc.is_in(ids, value_set=among)))
            hits += zip(table.column("item_id").to_pylist(), table.column("title").to_pylist())
            if len(hits) > limit:
                break
        return hits[:limit], len(hits) > limit


class ReviewData:
    """A run's pairs, its items, its label queue and the labels file, as the page's JSON."""

    def __init__(self, run: str, labels: LabelStore, queue_size: int = 200) -> None:
        parquet, run_uri = _published(run)
        names = storage.open_parquet(parquet).schema_arrow.names
        pairs = storage.read_parquet(parquet, columns=[c for c in PAIR_COLUMNS if c in names]).to_pandas()
        if pairs.empty:
            raise ReviewError(f"{parquet} holds no pairs: nothing to review (did the run publish any rows?)")
        for column in PAIR_COLUMNS:
            if column not in pairs.columns:
                pairs[column] = None  # rows published before retrievers or matchers were recorded
        self.pairs = pairs.sort_values(["query_item_id", "rank"], kind="stable").reset_index(drop=True)
        self.by_query: dict[str, np.ndarray] = self.pairs.groupby("query_item_id", sort=False).indices
        self.query_ids = pa.array(sorted(self.by_query), pa.string())
        self.keys = set(pair_keys(self.pairs["query_item_id"], self.pairs["candidate_item_id"]).tolist())
        self.labels = labels
        self.items = Items(run_uri)
        context = layout.context(run_uri) if run_uri else None
        self.run_id = str(storage.read_json(context).get("run_id", "")) if context and storage.exists(context) else ""
        self.with_probability = bool(self.pairs["match_probability"].notna().any())
        exclude = [labels.uri] if len(labels) else []
        queue = label_queue(run, queue_size, exclude)
        self.queue: list[tuple[str, str]] = list(zip(queue["id_a"], queue["id_b"]))

    def _pair(self, row: pd.Series) -> dict[str, Any]:
        return {
            "id_a": row["query_item_id"],
            "id_b": row["candidate_item_id"],
            "category": row["category"],
            "rank": int(row["rank"]),
            "score": _finite(row["score"]),
            "found_by": [r for r in str(row["found_by"] or "").split(",") if r],
            "retriever_scores": _retriever_scores(row["retriever_scores"]),
            "match_probability": _finite(row["match_probability"]),
            "label": self.labels.get(row["query_item_id"], row["candidate_item_id"]),
        }

    def summary(self) -> dict[str, Any]:
        """What the page's header says: the run, the counts, the labels file."""
        return {
            "run_id": self.run_id,
            "pairs": len(self.keys),
            "queries": len(self.by_query),
            "labelled": len(self.labels),
            "labels_uri": self.labels.uri,
            "match_probability": self.with_probability,
            "queue": len(self.queue),
        }

    def search(self, text: str) -> dict[str, Any]:
        """Query items whose id or title holds text, capped at SEARCH_LIMIT."""
        text = text.strip()[:QUERY_MAX_CHARS]
        if not text:
            return {"items": [], "more": False}
        hits, more = self.items.search(text, self.query_ids, SEARCH_LIMIT)
        return {"items": [{"id": i, "title": t, "candidates": len(self.by_query[i])} for i, t in hits], "more": more}

    def query(self, item_id: str) -> dict[str, Any]:
        """A query item and its published candidates in rank order."""
        if item_id not in self.by_query:
            raise Unknown("not a query item of this run")
        rows = self.pairs.iloc[self.by_query[item_id]]
        items = self.items.get([item_id, *rows["candidate_item_id"]])
        return {
            "query": items[item_id].as_json(),
            "pairs": [self._pair(row) | {"b": items[row["candidate_item_id"]].as_json()} for _, row in rows.iterrows()],
        }

    def _queue_entry(self, position: int) -> dict[str, Any]:
        id_a, id_b = self.queue[position]
        rows = self.pairs.iloc[self.by_query[id_a]]
        row = rows[rows["candidate_item_id"] == id_b].iloc[0]
        items = self.items.get([id_a, id_b])
        return {"position": position, "pair": self._pair(row), "a": items[id_a].as_json(), "b": items[id_b].as_json()}

    def queue_at(self, position: int, *, unlabelled: bool) -> dict[str, Any]:
        """The queue's pair at position, or (unlabelled) the first pair at or after it without a label."""
        labelled = self.labels.keys()
        keys = pair_keys([a for a, _ in self.queue], [b for _, b in self.queue]).tolist() if self.queue else []
        left = sum(k not in labelled for k in keys)
        position = max(position, 0)
        if unlabelled:
            position = next((i for i in range(position, len(keys)) if keys[i] not in labelled), len(keys))
        entry = self._queue_entry(position) if position < len(keys) else {"position": position, "pair": None}
        return entry | {"total": len(keys), "left": left}

    def label(self, id_a: str, id_b: str, label: int) -> dict[str, Any]:
        """Record a label for a published pair of this run."""
        if pair_keys([id_a], [id_b])[0] not in self.keys:
            raise Unknown("not a published pair of this run")
        self.labels.set(id_a, id_b, label)
        return {"id_a": id_a, "id_b": id_b, "label": label, "labelled": len(self.labels)}
