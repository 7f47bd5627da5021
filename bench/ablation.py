"""The paper's Tables 1–3 in our terms: one row per embedding, all scored on the same held-out pairs.

Rows: each raw feature alone (title MiniLM, hashed char n-grams, model-number tokens), their compound,
SiameseNet on the compound with 1–4 layers of 256 (single task: the labelled Amazon–Google pairs), 1×256 with
the compound kept as a skip and learned per-feature weights, and multi-task variants: + a weak same-brand
task, + the WDC computers pairs of the other folds (no skip), and the recipe we ship: + synthetic part-number
negatives made from the Amazon–Google catalog's part numbers (pss_ops.learning.part_numbers). Two hand-reweighted
compounds (model-token block ×2, ×4) show the trade-off between the two data sets without any training.

Columns: candidate recall@1/10 and recall at precision 80/90/95% on held-out Amazon–Google queries (split
by query item with the fold's seed; never trained on), R@P90 again with the held-out negatives whose two
items have identical inputs set aside ("separable": duplicate listings with byte-identical titles that the
labels call different, which every embedding scores 1), R@P90 / average precision on the held-out fold of
the WDC computers labelled pairs, and R@P90 on all 1,100 WDC pairs for embeddings that never saw WDC.
WDC folds are connected components of pairs and clusters, so no offer and no product of a held-out pair is
ever trained on. Every row of a fold is scored on the same pairs.

    .venv/bin/python bench/ablation.py [--folds 0,1,2] [--epochs 40] [--layers 1,2,3,4]
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
from sklearn.metrics import average_precision_score

from pss_ops.config import AppConfig, PostFilterConfig, feature_name, load_config
from pss_ops.features.compound import compound_vectors
from pss_ops.features.normalise import l2_normalise
from pss_ops.learning.folds import component_folds, group_pairs
from pss_ops.learning.mining import hard_negatives, random_negatives
from pss_ops.learning.pairs import PairSet
from pss_ops.learning.pipeline import TrainingData, evaluate_holdout, prepare_training_data, with_part_number_negatives
from pss_ops.learning.train import TrainingConfig, train_siamese
from pss_ops.quality.metrics import recall_at_precision
from pss_ops.search.filters import row_filter

ROOT = Path(__file__).resolve().parents[1]
WDC_FOLDS = 3
# alpha_t of the auxiliary tasks (eq. 2); tasks not listed weigh 1.
TASK_WEIGHTS = {"same_brand": 0.2}
AG_COLUMNS = ("recall@1", "recall@10", "R@P80", "R@P90", "R@P95", "R@P90 separable")


class Wdc:
    """WDC computers offers embedded with the config's compound, their labelled pairs and folds."""

    def __init__(self, directory: Path, config: AppConfig) -> None:
        products = pd.read_csv(directory / "products.csv", dtype=str, keep_default_na=False)
        pairs = pd.read_csv(directory / "pairs.csv", dtype=str, keep_default_na=False)
        self.ids: list[str] = products["id"].tolist()
        self.row = {item: i for i, item in enumerate(self.ids)}
        self.cluster = dict(zip(products["id"], products["cluster_id"]))
        # Titles only, like the Amazon–Google catalog the features were chosen on.
        self.vectors = compound_vectors(pd.DataFrame({"item_id": self.ids, "title": products["title"]}), config)
        self.pairs = PairSet(
            "wdc", pairs["id_a"].to_numpy(object), pairs["id_b"].to_numpy(object), pairs["label"].astype(np.int8).to_numpy()
        )
        self.pair_fold, self.item_fold = component_folds(self.pairs, folds=WDC_FOLDS, groups=self.cluster)

    def held_out(self, fold: int) -> PairSet:
        return self.pairs.take(self.pair_fold == fold)

    def training_task(self, fold: int, seed: int) -> PairSet:
        """The other folds' labelled pairs, same-cluster positives, and mined hard and random negatives."""
        labelled = self.pairs.take(self.pair_fold != fold)
        ids = [item for item in self.ids if self.item_fold[item] != fold]
        clusters = np.asarray([self.cluster[item] for item in ids], dtype=object)
        same_cluster = group_pairs(ids, clusters.tolist(), task="wdc", max_pairs_per_group=20, seed=seed)
        positives = labelled.positives.concat(same_cluster)
        vectors = self.vectors[[self.row[item] for item in ids]]
        # Cluster as a "different" rule: an offer of the same product is never mined as a negative.
        other_products = row_filter(PostFilterConfig(different=("cluster",)), {"cluster": clusters})
        mined = hard_negatives(positives, ids, vectors, per_positive=3, listable=other_products)
        return labelled.concat(same_cluster, mined, random_negatives(positives, ids, ratio=3, seed=seed))

    def scores(self, vectors: np.ndarray, fold: int, trained_on_wdc: bool) -> dict[str, float | None]:
        """R@P90 and AP on the held-out fold; R@P90 on all 1,100 pairs too, for embeddings that never saw WDC."""

        def cosine(pairs: PairSet) -> np.ndarray:
            a = vectors[[self.row[i] for i in pairs.id_a]]
            b = vectors[[self.row[i] for i in pairs.id_b]]
            return np.sum(a * b, axis=1)

        held = self.held_out(fold)
        scores = cosine(held)
        # None (null in the JSON line) where the embedding trained on the other folds' pairs.
        every = None if trained_on_wdc else round(recall_at_precision(cosine(self.pairs), self.pairs.label)["R@P90"], 4)
        return {
            "wdc R@P90": round(recall_at_precision(scores, held.label)["R@P90"], 4),
            "wdc AP": round(float(average_precision_score(held.label, scores)), 4),
            "wdc all R@P90": every,
        }


def block_columns(config: AppConfig, name: str) -> slice:
    """The compound columns one feature fills."""
    names = [feature_name(f) for f in config.features]
    start = sum(f.dim for f in config.features[: names.index(name)])
    return slice(start, start + config.features[names.index(name)].dim)


def feature_only(config: AppConfig, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The slice of the compound that one feature fills, renormalised."""
    columns = block_columns(config, name)

    def only(x: np.ndarray) -> np.ndarray:
        block = x[:, columns]
        return l2_normalise(block)

    return only


def scaled(config: AppConfig, name: str, factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """The compound with one feature block's weight multiplied by factor, renormalised (a hand-set reweighting)."""
    columns = block_columns(config, name)

    def reweight(x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[:, columns] *= factor
        return l2_normalise(out, out=out)

    return reweight


def run_fold(args: argparse.Namespace, config: AppConfig, wdc: Wdc, fold: int) -> list[dict[str, object]]:
    data: TrainingData = prepare_training_data(config, catalog_uri=args.catalog, pair_sources=[(args.pairs, "labelled")], seed=fold)
    rows: list[dict[str, object]] = []

    def add(name: str, embed: Callable[[np.ndarray], np.ndarray], seconds: float = 0.0, trained_on_wdc: bool = False) -> None:
        scores = evaluate_holdout(embed(data.compound), data)["labelled"]
        wdc_scores = wdc.scores(embed(wdc.vectors), fold, trained_on_wdc)
        rows.append({"fold": fold, "embedding": name, **{k: scores[k] for k in AG_COLUMNS}, **wdc_scores, "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    for feature in config.features:
        add(f"{feature.name or feature.type} only", feature_only(config, feature.name or feature.type))
    add("compound", lambda x: x)
    # The hand-set trade-off a learned model would have to beat on both data sets at once.
    for factor in (2.0, 4.0):
        add(f"compound, model_tokens weight x{factor:g}", scaled(config, "model_tokens", factor))

    catalog = pd.read_csv(args.catalog, dtype=str, keep_default_na=False)
    brand_positives = group_pairs(catalog["item_id"].tolist(), catalog["brand"].tolist(), task="same_brand", seed=fold)
    # A weak behaviour-like signal (the paper's V2P stands in): same brand vs random items.
    brand_task = brand_positives.concat(random_negatives(brand_positives, data.ids, ratio=1.0, seed=fold))
    labelled = {"labelled": data.train["labelled"]}
    shipped = {"widths": (256,), "skip_weight": 1.0, "learn_feature_weights": True}
    variants: list[tuple[str, dict[str, object], dict[str, PairSet]]] = [
        (f"SiameseNet {n}x256, labelled", {"widths": (256,) * n}, labelled) for n in map(int, args.layers.split(","))
    ]
    variants += [
        ("SiameseNet 1x256 + skip, labelled", {"widths": (256,), "skip_weight": 1.0}, labelled),
        ("SiameseNet 1x256 + skip + feature weights, labelled", shipped, labelled),
        ("SiameseNet 4x256, labelled + same brand", {"widths": (256,) * 4}, {**labelled, "same_brand": brand_task}),
        # Without the skip: with it, the compound half keeps WDC's same-title-but-other-model negatives on top.
        (
            "SiameseNet 1x256 + feature weights, labelled + WDC",
            {"widths": (256,), "learn_feature_weights": True},
            {**labelled, "wdc": wdc.training_task(fold, fold)},
        ),
    ]
    ids = data.ids + wdc.ids
    vectors = np.vstack([data.compound, wdc.vectors])
    part_numbers = "SiameseNet 1x256 + skip + feature weights, labelled + part-number negatives"
    if selected(args, part_numbers):
        # The shipped recipe (examples/training/siamese.yaml): the same pairs plus one synthetic negative per catalog
        # item with a part number, built exactly as `pss train` builds them.
        with_synthetic = with_part_number_negatives(data, catalog, config, per_item=1, seed=fold)
        ids += with_synthetic.synthetic_ids
        vectors = np.vstack([vectors, with_synthetic.synthetic_compound])
        variants.append((part_numbers, shipped, {**labelled, "part_numbers": with_synthetic.train["part_numbers"]}))
    widths = [f.dim for f in config.features]
    for name, architecture, tasks in variants:
        if not selected(args, name):
            continue
        started = time.perf_counter()
        training = TrainingConfig(
            **architecture,  # type: ignore[arg-type]
            epochs=args.epochs,
            patience=6,
            validation_fraction=0.15,
            seed=fold,
            task_weights={t: TASK_WEIGHTS.get(t, 1.0) for t in tasks},
        )
        model, _ = train_siamese(vectors, ids, tasks, training, feature_widths=widths)
        add(name, model.embed, time.perf_counter() - started, trained_on_wdc="wdc" in tasks)
    return rows


def selected(args: argparse.Namespace, name: str) -> bool:
    """Whether --only lets this variant train."""
    return not args.only or any(part in name for part in args.only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "bench" / "configs" / "learned_embeddings.yaml"))
    parser.add_argument("--catalog", default=str(ROOT / "data" / "amazon_google" / "catalog.csv"))
    parser.add_argument("--pairs", default=str(ROOT / "data" / "amazon_google" / "matches.csv"))
    parser.add_argument("--wdc", default=str(ROOT / "data" / "wdc_computers"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--folds", default="0", help="comma-separated folds out of 0,1,2 (Amazon–Google seed and WDC held-out fold)")
    parser.add_argument("--layers", default="1,2,3,4")
    parser.add_argument("--only", action="append", help="train only variants whose name contains this (repeatable)")
    args = parser.parse_args()

    config = load_config(args.config)
    wdc = Wdc(Path(args.wdc), config)
    rows = [row for fold in map(int, args.folds.split(",")) for row in run_fold(args, config, wdc, fold)]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    mean = table.drop(columns="fold").groupby("embedding", sort=False).mean().round(4)
    print(f"\nmean over folds {args.folds}:")
    print(mean.to_string())
    print(json.dumps({"bench": "ablation", "folds": args.folds, "epochs": args.epochs, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
