"""Label a run's candidate pairs from a list of known true pairs, for half of the catalog's items; hold out the rest.

For a catalog whose duplicates are already known (a benchmark, or a past manual merge list), this plays the
labeller: every published candidate pair between two items of the training half gets label 1 if it is a known
true pair, else 0. The other half is written out for evaluation. Items are split by connected component of the
true pairs, so no product has offers on both sides.

    python examples/labels_from_truth.py --pairs OUT/similar_items.parquet --truth matches.csv --out-dir LABELS

writes LABELS/train_pairs.csv (id_a,id_b,label: pss train-matcher --pairs), LABELS/test_items.csv (item_id: pss
evaluate --items) and LABELS/test_truth.csv (id_a,id_b: the held-out half's true pairs).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def split_items(items: list[str], truth: pd.DataFrame, seed: int) -> set[str]:
    """The training half: whole connected components of the true pairs, each drawn by a seeded hash of its first item."""
    row = {item: i for i, item in enumerate(items)}
    a = truth["id_a"].map(row).to_numpy()
    b = truth["id_b"].map(row).to_numpy()
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(items), len(items)))
    _, component = connected_components(graph, directed=False)
    first: dict[int, str] = {}
    for item, c in zip(items, component):
        first.setdefault(int(c), item)

    def in_train(c: int) -> bool:
        return hashlib.sha256(f"{seed}:{first[c]}".encode()).digest()[0] < 128

    return {item for item, c in zip(items, component) if in_train(int(c))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="similar_items.parquet of a pss run")
    parser.add_argument("--truth", required=True, help="CSV of known true pairs (id_a,id_b)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs = pq.read_table(args.pairs, columns=["query_item_id", "candidate_item_id"]).to_pandas()
    truth = pd.read_csv(args.truth, dtype=str, keep_default_na=False)[["id_a", "id_b"]]
    items = sorted(set(pairs["query_item_id"]) | set(pairs["candidate_item_id"]) | set(truth["id_a"]) | set(truth["id_b"]))
    train = split_items(items, truth, args.seed)

    a, b = pairs["query_item_id"].to_numpy(), pairs["candidate_item_id"].to_numpy()
    low, high = np.where(a < b, a, b), np.where(a < b, b, a)
    candidates = pd.DataFrame({"id_a": low, "id_b": high}).drop_duplicates()
    candidates = candidates[candidates["id_a"].isin(train) & candidates["id_b"].isin(train)]
    true_keys = {tuple(sorted(p)) for p in zip(truth["id_a"], truth["id_b"])}
    candidates["label"] = [int((x, y) in true_keys) for x, y in zip(candidates["id_a"], candidates["id_b"])]

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    candidates.sort_values(["id_a", "id_b"]).to_csv(out / "train_pairs.csv", index=False)
    test_items = sorted(set(items) - train)
    pd.DataFrame({"item_id": test_items}).to_csv(out / "test_items.csv", index=False)
    held = truth[~truth["id_a"].isin(train) & ~truth["id_b"].isin(train)]
    held.to_csv(out / "test_truth.csv", index=False)
    print(
        f"{len(candidates)} labelled candidate pairs ({int(candidates['label'].sum())} matches) over {len(train)} training items; "
        f"{len(test_items)} held-out items with {len(held)} true pairs -> {out}"
    )


if __name__ == "__main__":
    main()
