"""The paper's Tables 1–3 in our terms: one row per embedding, all scored on the same held-out pairs.

Rows: title-only (MiniLM), lexical-only (hashed char n-grams), the compound of both, SiameseNet on the
compound with 1–4 layers of 256 (single task: the labelled pairs), and the 4-layer net trained multi-task
(labelled pairs + a weaker second task, pairs of items sharing a brand). Columns: candidate recall@1/10
and recall at precision 80/90/95% on held-out Amazon–Google queries (split by query item; never trained
on), and R@P90 on the WDC computers labelled pairs (a catalog no model saw).

    .venv/bin/python bench/ablation.py [--epochs 30] [--seed 0] [--layers 1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pss_ops.config import load_config
from pss_ops.features.compound import compound_vectors
from pss_ops.learning.pairs import FeatureBlocks, group_pairs, random_negatives
from pss_ops.learning.pipeline import evaluate_holdout, prepare_training_data
from pss_ops.learning.train import TrainingConfig, train_siamese
from pss_ops.metrics import recall_at_precision

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "wdc_computers"


def wdc_compound(config: object) -> tuple[list[str], np.ndarray]:
    """WDC computers offers embedded with the config's compound features (titles only)."""
    products = pd.read_csv(SHARED / "products.csv", dtype=str, keep_default_na=False)
    frame = pd.DataFrame({"item_id": products["id"], "title": products["title"]})
    return frame["item_id"].tolist(), compound_vectors(frame, config)  # type: ignore[arg-type]


def wdc_r_at_p90(vectors: np.ndarray, ids: list[str]) -> float:
    """R@P90 over WDC's labelled pairs (test split when present), from the offers' vectors."""
    pairs = pd.read_csv(SHARED / "pairs.csv", dtype=str, keep_default_na=False)
    if "split" in pairs.columns and (pairs["split"] == "test").any():
        pairs = pairs[pairs["split"] == "test"]
    row = {item: i for i, item in enumerate(ids)}
    known = pairs["id_a"].isin(row) & pairs["id_b"].isin(row)
    a = vectors[[row[i] for i in pairs.loc[known, "id_a"]]]
    b = vectors[[row[i] for i in pairs.loc[known, "id_b"]]]
    return recall_at_precision(np.sum(a * b, axis=1), pairs.loc[known, "label"].astype(int).to_numpy())["R@P90"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "near_identical.yaml"))
    parser.add_argument("--catalog", default=str(ROOT / "data" / "amazon_google" / "catalog.csv"))
    parser.add_argument("--pairs", default=str(ROOT / "data" / "amazon_google" / "matches.csv"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", default="1,2,3,4")
    args = parser.parse_args()

    config = load_config(args.config)
    data = prepare_training_data(config, catalog_uri=args.catalog, pair_sources=[(args.pairs, "labelled")], seed=args.seed)
    blocks = FeatureBlocks.from_compound(data.ids, data.compound, config)
    wdc_ids, wdc = wdc_compound(config)
    rows: list[dict[str, object]] = []

    def add(name: str, vectors: np.ndarray, embed: Callable[[np.ndarray], np.ndarray], seconds: float) -> None:
        scores = evaluate_holdout(vectors, data)["labelled"]
        rows.append(
            {
                "embedding": name,
                **{k: scores[k] for k in ("recall@1", "recall@10", "R@P80", "R@P90", "R@P95")},
                "wdc R@P90": round(wdc_r_at_p90(embed(wdc), wdc_ids), 4),
                "seconds": round(seconds, 1),
            }
        )

    for feature in config.features:
        name = feature.name or feature.type
        index = [f.name or f.type for f in config.features].index(name)
        start = sum(f.dim for f in config.features[:index])

        def only(x: np.ndarray, start: int = start, width: int = feature.dim) -> np.ndarray:
            block = x[:, start : start + width]
            return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)

        add(f"{name} only", blocks.blocks[name], only, 0.0)
    add("compound", data.compound, lambda x: x, 0.0)

    catalog = pd.read_csv(args.catalog, dtype=str, keep_default_na=False)
    brand_positives = group_pairs(catalog["item_id"].tolist(), catalog["brand"].to_numpy(dtype=object), task="same_brand", seed=args.seed)
    # A weak behaviour-like signal (paper's V2P stands in): same brand vs random items.
    brand_task = brand_positives.concat(random_negatives(brand_positives, data.ids, ratio=1.0, seed=args.seed))
    labelled = {"labelled": data.train["labelled"]}
    variants = [(f"SiameseNet {n}x256, labelled", (256,) * n, 0.0, labelled) for n in map(int, args.layers.split(","))]
    # The spike's best recipe (docs/experiments/2026-11-21-siamese-spike.md): one layer, compound kept as a skip.
    variants.append(("SiameseNet 1x256 + compound skip, labelled", (256,), 1.0, labelled))
    variants.append(("SiameseNet 4x256, labelled + same brand", (256,) * 4, 0.0, {**labelled, "same_brand": brand_task}))
    for name, widths, skip_weight, tasks in variants:
        started = time.perf_counter()
        training = TrainingConfig(
            widths=widths,
            skip_weight=skip_weight,
            epochs=args.epochs,
            seed=args.seed,
            task_weights={t: (1.0 if t == "labelled" else 0.2) for t in tasks},
        )
        model, _ = train_siamese(data.compound, data.ids, tasks, training)
        add(name, model.embed(data.compound), model.embed, time.perf_counter() - started)

    print(pd.DataFrame(rows).to_string(index=False))
    print(json.dumps({"bench": "ablation", "seed": args.seed, "epochs": args.epochs, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
