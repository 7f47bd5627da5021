"""`pss label-queue`: the published pairs most worth a human label, in the labelled-pairs format with an empty label.

With a matcher, the pairs it is least sure of (probability nearest 0.5), as dedupe and Zingg ask: a label there
moves the decision boundary most. Without one (the first round), pairs spread evenly over the fused score's
range, so the first labels hold both matches and non-matches. Either way the pairs are dealt across categories in
turn, so a large category does not take the whole queue, and pairs already labelled are left out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pss_ops import layout, storage
from pss_ops.manifests import CatalogPlan
from pss_ops.quality.matching import pair_keys

QUEUE_COLUMNS = ("id_a", "id_b", "label", "category", "match_probability", "score", "title_a", "title_b")


def _published(run: str) -> tuple[str, str | None]:
    """The similar_items Parquet of an output folder or a run directory, and the run directory when known."""
    in_run = storage.join(run, "publish", "similar_items.parquet")
    if storage.exists(in_run):
        return in_run, run
    top = storage.join(run, "similar_items.parquet")
    if not storage.exists(top):
        raise FileNotFoundError(f"no similar_items.parquet in {run} (give a pss run --out folder or a run directory)")
    summary = storage.join(run, "run_summary.json")
    run_uri = storage.read_json(summary).get("run_uri") if storage.exists(summary) else None
    return top, run_uri


def _titles(run_uri: str | None, ids: set[str]) -> dict[str, str]:
    if run_uri is None or not storage.exists(layout.plan_manifest(run_uri)):
        return {}
    titles: dict[str, str] = {}
    for partition in CatalogPlan.read(layout.plan_manifest(run_uri)).partitions:
        if not storage.exists(partition.uri):
            return {}
        rows = storage.read_parquet(partition.uri, columns=["item_id", "title"]).to_pandas()
        rows = rows[rows["item_id"].isin(ids)]
        titles.update(zip(rows["item_id"], rows["title"]))
    return titles


def _labelled_keys(uris: Sequence[str]) -> set[str]:
    keys: set[str] = set()
    for uri in uris:
        frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
        if not {"id_a", "id_b"} <= set(frame.columns):
            raise ValueError(f"{uri} has no id_a,id_b columns; --exclude takes labelled-pairs files")
        keys.update(pair_keys(frame["id_a"], frame["id_b"]).tolist())
    return keys


def _spread(frame: pd.DataFrame, n: int, uncertain: bool) -> pd.DataFrame:
    """n pairs dealt across categories in turn; within one, by uncertainty or evenly over the score range."""
    if frame.empty:  # a run that published no pairs, or every pair already labelled: an empty queue, not an error
        return frame
    categories = frame.groupby("category", sort=True)
    # A category's fair share: spread evenly, its first share of pairs spans its whole score range.
    share = -(-n // max(categories.ngroups, 1))
    picked = []
    for _, rows in categories:
        if uncertain:
            rows = rows.assign(_order=(rows["match_probability"] - 0.5).abs()).sort_values(["_order", "key"], kind="stable")
        else:
            rows = rows.sort_values(["score", "key"], ascending=[False, True], kind="stable")
            spaced = np.unique(np.linspace(0, len(rows) - 1, num=min(share, len(rows))).round().astype(int))
            rows = pd.concat([rows.iloc[spaced], rows.drop(rows.index[spaced])])
        picked.append(rows.assign(_turn=np.arange(len(rows))))
    dealt = pd.concat(picked).sort_values(["_turn", "category"], kind="stable")
    return dealt.head(n)


def label_queue(run: str, n: int, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """The queue as a frame with QUEUE_COLUMNS (label empty)."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    parquet, run_uri = _published(run)
    columns = ["category", "query_item_id", "candidate_item_id", "score", "match_probability"]
    pairs = storage.read_parquet(parquet, columns=columns).to_pandas()
    pairs = pairs.rename(columns={"query_item_id": "id_a", "candidate_item_id": "id_b"})
    pairs["key"] = pair_keys(pairs["id_a"], pairs["id_b"])
    uncertain = bool(pairs["match_probability"].notna().any())
    # One row per unordered pair: the direction with the higher probability (else score) speaks for it.
    pairs = pairs.sort_values(["match_probability" if uncertain else "score", "key"], ascending=[False, True], kind="stable")
    pairs = pairs.drop_duplicates("key")
    pairs = pairs[~pairs["key"].isin(_labelled_keys(exclude))]
    queue = _spread(pairs, n, uncertain)
    titles = _titles(run_uri, set(queue["id_a"]) | set(queue["id_b"]))
    queue = queue.assign(label="", title_a=queue["id_a"].map(titles), title_b=queue["id_b"].map(titles))
    return queue.loc[:, list(QUEUE_COLUMNS)].reset_index(drop=True)


def write_queue(queue: pd.DataFrame, out: str) -> None:
    """The queue as CSV (local or s3://), written atomically."""
    if not storage.is_s3(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(out, queue.to_csv(index=False).encode("utf-8"))
