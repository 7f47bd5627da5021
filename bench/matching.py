"""Match decisions on the candidate pairs of `pss run`: the matcher against other classifiers, cosine thresholds,
the SiameseNet embedding and splink, under 5-fold cross-validation by product; then duplicate groups.

Per dataset, `pss run --config CONFIG` (no matcher) runs once in its own process. Its query outputs (every
candidate pair either retriever found, both directions where both items list each other) are the pairs every
method scores. Each unordered candidate pair is labelled by the truth; true pairs the search never found still
count in every recall denominator (pss_ops.quality.matching.decision_report).

Folds: pss_ops.matching.model.pair_folds over the candidate pairs and the true pairs together, so each product
(a connected component of true pairs) is whole in one fold, and a non-match goes with its smaller id's product.
Each method is fitted on 4 folds and scores the 5th; its F1 threshold is chosen on the training folds, as a
user would choose it (for the trees: on their out-of-fold scores within the training folds, so the threshold
is not fitted to pairs the trees have memorised). "best F1" is the test fold's own best threshold: an oracle.

Methods (one process per family):
  trees    the matcher: LightGBM trees calibrated on their out-of-fold margins (pss_ops.matching.model.fit_matcher); the
           same features with scikit-learn's HistGradientBoostingClassifier and XGBoost, with the matcher's
           tree settings (learning rate, rounds, leaves, leaf size, L2, subsampling) mapped to theirs
  cosine   a threshold on each retriever's cosine, on the fused score and on each feature's own cosine
  siamese  the SiameseNet recipe of examples/training/siamese.yaml, trained per fold as `pss train` and
           bench/ablation.py train it (prepare_training_data: the training folds' true pairs, hard and random
           negatives mined from the compound, cleaned, plus part-number negatives; train_siamese), then a
           cosine threshold on its embedding
  splink   splink 5 on DuckDB, set up as a data engineer would for product offers: title (Jaro-Winkler
           levels), title words (Jaccard levels), digit-bearing title tokens (shared count), brand (exact,
           term-frequency adjusted), price (relative difference); u by random sampling, m from the training
           folds' true pairs (estimate_m_from_pairwise_labels); it scores exactly the candidate pairs
           (register_blocked_pairs_for_predict). Again with only the comparisons that backward elimination
           keeps by F1 on the training folds (a Fellegi-Sunter weight is a sum over comparisons, so this needs
           no refit), as a data engineer would prune a model on their labels
Seconds: fit + predict per fold, summed over the folds. The matcher's fit includes its own 5-fold calibration;
the SiameseNet's includes embedding the catalog (MiniLM) and mining; the out-of-fold scores the bench computes
only to choose the trees' thresholds are not counted (JSON: threshold_seconds).

Duplicate groups: from the matcher's out-of-fold probabilities of every candidate pair, at 0.5, 0.7 and 0.9:
pss_ops.matching.groups.linked_groups (the service's linkage; `comparable` counts the pairs the config's
post-filter allows, as publish does) against plain connected components (average_linkage=False), beside the
matcher's own pairwise figures at the same threshold. Group pairs are scored twice: every pair within a group,
and only the pairs the post-filter allows (Amazon–Google's truth lists cross-shop pairs only).

Datasets:
  amazon_google  data/amazon_google/catalog.csv (seller amazon / google), truth matches.csv (1,300 pairs)
  wdc            data/wdc_computers/products.csv in the catalog contract (bench/retrieval.py prepare_wdc: each
                 offer its own seller), truth every pair of offers sharing a cluster_id (933 pairs)
Prints a table per dataset, then one JSON line; --out X.json writes that line to X.json and the printed text
to X.txt.

    .venv/bin/python bench/matching.py --datasets amazon_google,wdc --out bench/results/matching.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = {
    "amazon_google": {"catalog": "data/amazon_google/catalog.csv", "truth": "data/amazon_google/matches.csv"},
    "wdc": {"products": "data/wdc_computers/products.csv"},
}
# Ditto (Li et al., "Deep Entity Matching with Pre-Trained Language Models", PVLDB 14(1), 2020): F1 75.58 on the
# DeepMatcher benchmark's Amazon–Google, a fixed set of 11,460 labelled candidate pairs split 3:1:1 into train,
# validation and test. Not our protocol: beside ours for scale, not as a like-for-like comparison.
PUBLISHED_F1 = {"amazon_google": {"Ditto": 0.756}}
METHODS = {
    "matcher": "matcher: LightGBM, calibrated (ours)",
    "hist_gradient_boosting": "HistGradientBoosting, same features",
    "xgboost": "XGBoost, same features",
    "cosine:score": "threshold on the fused score",
    "cosine:score_dense": "threshold on the dense cosine",
    "cosine:score_lexical": "threshold on the lexical cosine",
    "siamese": "SiameseNet (shipped recipe), cosine threshold",
    "splink": "splink (DuckDB), m from labels",
    "splink:selected": "splink, comparisons kept on training folds",
}
# The variants whose scores are match probabilities (the others are cosines or match weights).
PROBABILITIES = ("matcher", "hist_gradient_boosting", "xgboost", "splink")
# One worker process per family of methods.
FAMILIES = ("trees", "cosine", "siamese", "splink")
GROUP_THRESHOLDS = (0.5, 0.7, 0.9)
SIAMESE_RECIPE = ROOT / "examples" / "training" / "siamese.yaml"
# Random pairs splink draws to estimate u; 1e7 is within its docs' advice and takes seconds on DuckDB.
SPLINK_U_PAIRS = 1e7


# --- shared by the workers ------------------------------------------------------------------------------


def max_per_pair(keys: Any, values: Any, order: Any) -> Any:
    """The highest value of each unordered pair key (both directions of a pair), in the order of `order`."""
    import pandas as pd

    return pd.Series(values, index=keys).groupby(level=0).max().reindex(order).to_numpy()


def training_threshold(scores: Any, labels: Any, true_pairs: int) -> float:
    """The threshold with the best F1 on the training folds' pairs, recall over every true pair of those folds."""
    from pss_ops.quality.metrics import best_decisions

    return float(best_decisions(scores, labels, total_positives=true_pairs).threshold)


class Folds:
    """The unordered candidate pairs (key, id_a, id_b, label, fold) and the true pairs (key, id_a, id_b, fold)."""

    def __init__(self, work: Path) -> None:
        import pandas as pd

        self.pairs = pd.read_parquet(work / "pairs.parquet")
        self.truth = pd.read_parquet(work / "truth.parquet")
        self.meta = json.loads((work / "candidates.json").read_text(encoding="utf-8"))
        self.count = int(self.meta["folds"])

    def training(self, fold: int) -> tuple[Any, int]:
        """Mask of the pairs of the other folds and how many true pairs those folds hold."""
        return (self.pairs["fold"] != fold).to_numpy(), int((self.truth["fold"] != fold).sum())

    def threshold(self, scores: Any, fold: int) -> float:
        """The training threshold of fold's model, from scores aligned with self.pairs."""
        train, true_pairs = self.training(fold)
        return training_threshold(scores[train], self.pairs["label"].to_numpy()[train], true_pairs)


def save_scores(work: Path, family: str, pairs: Any, scores: dict[str, Any], runs: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Each variant's out-of-fold score per unordered pair (aligned with pairs.parquet) and its per-fold thresholds and times."""
    import pandas as pd

    frame = pd.DataFrame({"key": pairs["key"].to_numpy(), **scores})
    frame.to_parquet(work / f"scores-{family}.parquet", index=False)
    (work / f"scores-{family}.json").write_text(json.dumps(runs), encoding="utf-8")
    return {
        variant: {k: [round(v, 6) if isinstance(v, float) else v for v in values] for k, values in run.items()}
        for variant, run in runs.items()
    }


def strict(value: Any) -> Any:
    """The value with every NaN float as None: the JSON line is strict JSON (a threshold that accepts nothing has no precision)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def new_run() -> dict[str, list[float]]:
    return {"threshold": [], "fit_seconds": [], "predict_seconds": [], "threshold_seconds": []}


# --- workers: one process each -------------------------------------------------------------------------


def prepare_wdc_catalog(out_dir: Path) -> dict[str, str]:
    """WDC computers in the catalog contract (one seller per offer, as bench/retrieval.py) and every same-cluster pair."""
    import itertools

    import pandas as pd

    from bench.retrieval import prepare_wdc

    products = ROOT / DATASETS["wdc"]["products"]
    made = prepare_wdc(str(products), str(products.parent / "pairs.csv"), out_dir)
    offers = pd.read_csv(products, dtype=str, keep_default_na=False)
    # Offers sharing a cluster_id are one product: every pair of them is a true pair, not only the 300 labelled ones.
    pairs = [pair for _, ids in offers.groupby("cluster_id")["id"] for pair in itertools.combinations(sorted(ids), 2)]
    pd.DataFrame(pairs, columns=["id_a", "id_b"]).to_csv(out_dir / "truth.csv", index=False)
    return {"catalog": made["catalog"], "truth": str(out_dir / "truth.csv")}


def build_candidates(config_path: str, run_out: str, truth_path: str, work: Path, folds: int, seed: int) -> dict[str, Any]:
    """Label the run's candidate rows, deal pairs and products to folds, and write rows/pairs/truth Parquet files."""
    import numpy as np
    import pandas as pd

    from pss_ops import layout
    from pss_ops.config import load_config
    from pss_ops.manifests import CatalogPlan, QueriedPartition
    from pss_ops.matching.model import pair_folds
    from pss_ops.matching.training import labelled_candidates
    from pss_ops.quality.matching import pair_keys
    from pss_ops.storage import read_parquet

    config = load_config(config_path)
    run_uri = json.loads((Path(run_out) / "run_summary.json").read_text(encoding="utf-8"))["run_uri"]
    plan = CatalogPlan.read(layout.plan_manifest(run_uri))
    queried = [QueriedPartition.read(layout.query_manifest(run_uri, p.name)) for p in plan.partitions]
    raw = pd.concat([read_parquet(q.uri).to_pandas() for q in queried], ignore_index=True)
    score_columns = ["score", *(c for c in raw.columns if c.startswith(("score_", "cos_")))]

    truth = pd.read_csv(truth_path, dtype=str, keep_default_na=False)[["id_a", "id_b"]]
    truth_keys = pd.unique(pair_keys(truth["id_a"], truth["id_b"]))
    candidate_keys = pd.unique(pair_keys(raw["query_item_id"], raw["candidate_item_id"]))
    is_true = set(truth_keys.tolist())
    labelled = pd.DataFrame({"key": candidate_keys, "label": [int(k in is_true) for k in candidate_keys]})
    rows = labelled_candidates(config, run_uri, queried, labelled)
    features = [c for c in rows.columns if c not in ("id_a", "id_b", "key", "label")]
    raw = raw.rename(columns={"query_item_id": "id_a", "candidate_item_id": "id_b"})
    rows = rows.merge(raw[["id_a", "id_b", *score_columns]], on=["id_a", "id_b"], how="left", validate="one_to_one")

    # Products whole: folds over the candidate pairs and every true pair (a missed true pair still has a fold).
    every_key = pd.unique(np.concatenate([candidate_keys, truth_keys]))
    ends = pd.Series(every_key).str.split("\0", n=1, expand=True)
    every = pd.DataFrame({"key": every_key, "id_a": ends[0].to_numpy(), "id_b": ends[1].to_numpy()})
    every["label"] = every["key"].isin(is_true).astype(np.int64)
    every["fold"] = pair_folds(every["id_a"].to_numpy(), every["id_b"].to_numpy(), every["label"].to_numpy(), folds, seed)
    fold_of = every.set_index("key")["fold"]
    pairs = every[every["key"].isin(set(candidate_keys.tolist()))].reset_index(drop=True)
    true_pairs = every[every["label"] == 1].reset_index(drop=True).drop(columns="label")
    true_pairs["found"] = true_pairs["key"].isin(set(candidate_keys.tolist()))
    rows["fold"] = fold_of.reindex(rows["key"]).to_numpy()

    rows.to_parquet(work / "rows.parquet", index=False)
    pairs.to_parquet(work / "pairs.parquet", index=False)
    true_pairs.to_parquet(work / "truth.parquet", index=False)
    meta = {
        "run_uri": run_uri,
        "folds": folds,
        "seed": seed,
        "features": features,
        "score_columns": score_columns,
        "candidate_rows": len(rows),
        "candidate_pairs": len(pairs),
        "true_pairs": len(true_pairs),
        "true_pairs_among_candidates": int(true_pairs["found"].sum()),
        "pairs_per_fold": pairs.groupby("fold").size().astype(int).tolist(),
        "true_pairs_per_fold": true_pairs.groupby("fold").size().astype(int).tolist(),
    }
    (work / "candidates.json").write_text(json.dumps(meta), encoding="utf-8")
    return meta


class WithoutEmptyColumns:
    """A classifier fitted on the columns that hold some value: scikit-learn 1.9's HistGradientBoosting fails to bin
    a column that is NaN on every training row (price_ratio or part_numbers_conflict of a small catalog), where the
    other libraries ignore it. Such a column carries nothing to learn, so leaving it out changes no prediction."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, x: Any, y: Any) -> WithoutEmptyColumns:
        import numpy as np

        self.kept = ~np.isnan(x).all(axis=0)
        self.model.fit(x[:, self.kept], y)
        return self

    def predict_proba(self, x: Any) -> Any:
        return self.model.predict_proba(x[:, self.kept])


def tree_models(seed: int) -> dict[str, Any]:
    """The other two libraries' classifiers with the matcher's tree settings (pss_ops.matching.model.TREE_PARAMS)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from xgboost import XGBClassifier

    from pss_ops.matching.model import BOOSTING_ROUNDS, TREE_PARAMS
    from pss_ops.resources import usable_cpus

    def hist_gradient_boosting() -> Any:
        # No row subsampling in scikit-learn's trees; max_features samples columns per split, not per tree.
        return WithoutEmptyColumns(
            HistGradientBoostingClassifier(
                learning_rate=TREE_PARAMS["learning_rate"],
                max_iter=BOOSTING_ROUNDS,
                max_leaf_nodes=TREE_PARAMS["num_leaves"],
                min_samples_leaf=TREE_PARAMS["min_data_in_leaf"],
                l2_regularization=TREE_PARAMS["lambda_l2"],
                max_features=TREE_PARAMS["feature_fraction"],
                early_stopping=False,
                random_state=seed,
            )
        )

    def xgboost() -> Any:
        # Leaf-wise growth with a leaf cap is LightGBM's; XGBoost's "lossguide" policy grows trees the same way.
        return XGBClassifier(
            n_estimators=BOOSTING_ROUNDS,
            learning_rate=TREE_PARAMS["learning_rate"],
            grow_policy="lossguide",
            max_leaves=TREE_PARAMS["num_leaves"],
            max_depth=0,
            subsample=TREE_PARAMS["bagging_fraction"],
            colsample_bytree=TREE_PARAMS["feature_fraction"],
            reg_lambda=TREE_PARAMS["lambda_l2"],
            tree_method="hist",
            n_jobs=usable_cpus(),
            random_state=seed,
        )

    return {"hist_gradient_boosting": hist_gradient_boosting, "xgboost": xgboost}


def run_trees(work: Path, seed: int) -> dict[str, Any]:
    """The matcher, HistGradientBoosting and XGBoost, each fitted on 4 folds' candidate rows and scoring the 5th."""
    import numpy as np
    import pandas as pd

    from pss_ops.matching.model import CALIBRATION_FOLDS, fit_matcher, out_of_fold_scores, pair_folds

    folds = Folds(work)
    rows = pd.read_parquet(work / "rows.parquet")
    features = folds.meta["features"]
    matrix = rows[features].to_numpy(dtype=np.float32)
    labels = rows["label"].to_numpy(dtype=np.int64)
    makers = tree_models(seed)
    variants = ("matcher", *makers)
    directed = {v: np.full(len(rows), np.nan) for v in variants}
    runs = {v: new_run() for v in variants}
    train_scores: dict[str, np.ndarray] = {}

    def out_of_fold(make: Any, train: np.ndarray) -> np.ndarray:
        """Scores of the training rows from models fitted without their fold (the matcher's calibration folds)."""
        inner = pair_folds(rows["id_a"].to_numpy()[train], rows["id_b"].to_numpy()[train], labels[train], CALIBRATION_FOLDS, seed)
        x, y = matrix[train], labels[train]
        scores = np.empty(len(y))
        for part in np.unique(inner):
            held = inner == part
            scores[held] = make().fit(x[~held], y[~held]).predict_proba(x[held])[:, 1]
        return scores

    for fold in range(folds.count):
        train = (rows["fold"] != fold).to_numpy()
        print(f"  trees fold {fold}: {int(train.sum())} training rows", file=sys.stderr, flush=True)
        started = time.perf_counter()
        matcher = fit_matcher(rows.loc[train, features], labels[train], rows.loc[train, ["id_a", "id_b"]], seed)
        fitted = time.perf_counter()
        directed["matcher"][~train] = matcher.probabilities(rows.loc[~train, features])
        predicted = time.perf_counter()
        # The calibration fit_matcher fitted maps these same out-of-fold margins (same folds, same seed).
        train_scores["matcher"] = matcher.calibration(
            out_of_fold_scores(matrix[train], labels[train], rows.loc[train, ["id_a", "id_b"]], seed)
        )
        chosen = time.perf_counter()
        runs["matcher"]["fit_seconds"].append(fitted - started)
        runs["matcher"]["predict_seconds"].append(predicted - fitted)
        runs["matcher"]["threshold_seconds"].append(chosen - predicted)
        for name, make in makers.items():
            started = time.perf_counter()
            model = make().fit(matrix[train], labels[train])
            fitted = time.perf_counter()
            directed[name][~train] = model.predict_proba(matrix[~train])[:, 1]
            predicted = time.perf_counter()
            train_scores[name] = out_of_fold(make, train)
            chosen = time.perf_counter()
            runs[name]["fit_seconds"].append(fitted - started)
            runs[name]["predict_seconds"].append(predicted - fitted)
            runs[name]["threshold_seconds"].append(chosen - predicted)
        training_pairs, true_pairs = folds.training(fold)
        for name in variants:
            scores = max_per_pair(rows.loc[train, "key"].to_numpy(), train_scores[name], folds.pairs["key"][training_pairs])
            runs[name]["threshold"].append(training_threshold(scores, folds.pairs["label"].to_numpy()[training_pairs], true_pairs))
    scores = {name: max_per_pair(rows["key"].to_numpy(), directed[name], folds.pairs["key"]) for name in variants}
    return save_scores(work, "trees", folds.pairs, scores, runs)


def run_cosine(work: Path) -> dict[str, Any]:
    """A threshold on each cosine column of the candidate tables, chosen on the training folds."""
    import pandas as pd

    folds = Folds(work)
    rows = pd.read_parquet(work / "rows.parquet", columns=["key", *folds.meta["score_columns"]])
    scores, runs = {}, {}
    for column in folds.meta["score_columns"]:
        variant = f"cosine:{column}"
        if rows[column].isna().any():
            raise RuntimeError(
                f"{column} is missing on {int(rows[column].isna().sum())} candidate rows; a threshold needs every pair scored"
            )
        scores[variant] = max_per_pair(rows["key"].to_numpy(), rows[column].to_numpy(dtype=float), folds.pairs["key"])
        runs[variant] = new_run()
        for fold in range(folds.count):
            started = time.perf_counter()
            runs[variant]["threshold"].append(folds.threshold(scores[variant], fold))
            runs[variant]["fit_seconds"].append(time.perf_counter() - started)
            runs[variant]["predict_seconds"].append(0.0)  # the cosines come with the run's candidates
            runs[variant]["threshold_seconds"].append(0.0)
    return save_scores(work, "cosine", folds.pairs, scores, runs)


def run_siamese(work: Path, config_path: str, catalog: str, epochs: int | None) -> dict[str, Any]:
    """The shipped SiameseNet recipe trained per fold on the training folds' true pairs, as `pss train` trains it."""
    import numpy as np

    from pss_ops.config import load_config
    from pss_ops.learning.pipeline import prepare_training_data
    from pss_ops.learning.settings import read_training_config
    from pss_ops.learning.train import train_siamese

    folds = Folds(work)
    config = load_config(config_path)
    pairs = folds.pairs
    scores = np.full(len(pairs), np.nan)
    run = new_run()
    for fold in range(folds.count):
        # One seed per fold, as bench/ablation.py: the mining and training of a fold are reproducible.
        training = read_training_config(str(SIAMESE_RECIPE), epochs=epochs, seed=fold)
        source = work / f"siamese-fold{fold}-pairs.csv"
        folds.truth.loc[folds.truth["fold"] != fold, ["id_a", "id_b"]].to_csv(source, index=False)
        print(f"  siamese fold {fold}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        # Every training pair is for training: the held-out evaluation is the bench's own test fold.
        data = prepare_training_data(
            config,
            catalog_uri=catalog,
            pair_sources=[(str(source), "labelled")],
            holdout_fraction=0.0,
            seed=training.seed,
            part_number_negatives=training.part_number_negatives,
        )
        ids, vectors = data.training_vectors()
        model, _ = train_siamese(vectors, ids, data.train, training, feature_widths=[f.dim for f in config.features])
        fitted = time.perf_counter()
        embedded = model.embed(data.compound)
        row = data.row
        a = np.fromiter((row[i] for i in pairs["id_a"]), dtype=np.int64, count=len(pairs))
        b = np.fromiter((row[i] for i in pairs["id_b"]), dtype=np.int64, count=len(pairs))
        cosine = np.einsum("ij,ij->i", embedded[a], embedded[b])
        predicted = time.perf_counter()
        # The model trained on these folds' positives: its training threshold is chosen on pairs it has seen.
        run["threshold"].append(folds.threshold(cosine, fold))
        test = (pairs["fold"] == fold).to_numpy()
        scores[test] = cosine[test]
        run["fit_seconds"].append(fitted - started)
        run["predict_seconds"].append(predicted - fitted)
        run["threshold_seconds"].append(time.perf_counter() - predicted)
    return save_scores(work, "siamese", pairs, {"siamese": scores}, {"siamese": run})


def parse_price(text: Any) -> float | None:
    """A price from catalog text: "19.99", or WDC's "usd 95 95" / "124 74 cad cad" (units, then two-digit cents)."""
    numbers = re.findall(r"\d+", text if isinstance(text, str) else "")
    if not numbers:
        return None
    value = float(f"{numbers[0]}.{numbers[1]}") if len(numbers) > 1 and len(numbers[1]) == 2 else float(numbers[0])
    return value if value > 0 else None


def splink_records(catalog: str, config_path: str) -> Any:
    """The accepted catalog as splink input: cleaned title, its words and digit-bearing tokens, brand, numeric price."""
    import pandas as pd

    from pss_ops.catalog.validate import read_catalog, validate_catalog
    from pss_ops.config import load_config

    accepted = validate_catalog(read_catalog(catalog), load_config(config_path)).accepted

    def text(column: str) -> pd.Series:
        values = accepted[column] if column in accepted.columns else pd.Series([None] * len(accepted), index=accepted.index)
        cleaned = values.map(lambda v: " ".join(v.lower().split()) if isinstance(v, str) else "")
        return cleaned.where(cleaned != "", None)

    title = text("title")
    words = title.map(lambda t: sorted(set(re.findall(r"\w+", t))) if t else None)
    return pd.DataFrame(
        {
            "unique_id": accepted["item_id"].to_numpy(),
            "title": title.to_numpy(),
            "title_words": words.to_numpy(),
            # Model numbers, capacities and versions: a product's identity lives in its digit-bearing tokens.
            "title_numbers": words.map(lambda w: [t for t in w if any(c.isdigit() for c in t)] or None if w else None).to_numpy(),
            "brand": text("brand").to_numpy(),
            "price": (accepted["price"] if "price" in accepted.columns else pd.Series(dtype=object)).map(parse_price).to_numpy(),
        }
    )


def splink_settings(prior: float) -> Any:
    """A product-offer linkage model: the comparisons a data engineer would write for titles, brand and price."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    def word_jaccard(at_least: float) -> Any:
        sql = (
            "len(list_intersect(title_words_l, title_words_r)) "
            f"/ len(list_distinct(list_concat(title_words_l, title_words_r))) >= {at_least}"
        )
        return cll.CustomLevel(sql, label_for_charts=f"title word Jaccard >= {at_least}")

    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.JaroWinklerAtThresholds("title", [0.95, 0.9, 0.8]),
            cl.CustomComparison(
                [cll.NullLevel("title_words"), *(word_jaccard(x) for x in (0.8, 0.6, 0.4, 0.2)), cll.ElseLevel()],
                output_column_name="title_words",
            ),
            cl.CustomComparison(
                [
                    cll.NullLevel("title_numbers"),
                    cll.ArrayIntersectLevel("title_numbers", 2),
                    cll.ArrayIntersectLevel("title_numbers", 1),
                    cll.ElseLevel(),
                ],
                output_column_name="title_numbers",
            ),
            cl.ExactMatch("brand").configure(term_frequency_adjustments=True),
            cl.CustomComparison(
                [
                    cll.NullLevel("price"),
                    cll.PercentageDifferenceLevel("price", 0.1),
                    cll.PercentageDifferenceLevel("price", 0.3),
                    cll.PercentageDifferenceLevel("price", 0.6),
                    cll.ElseLevel(),
                ],
                output_column_name="price",
            ),
        ],
        # Never used: predict scores the registered candidate pairs instead (settings need a rule).
        blocking_rules_to_generate_predictions=[block_on("brand")],
        probability_two_random_records_match=prior,
        # Each comparison's match weight (mw_<name>) in the predictions: backward_elimination sums subsets of them.
        retain_intermediate_calculation_columns=True,
    )


def backward_elimination(weights: dict[str, Any], folds: Folds, fold: int) -> list[str]:
    """The comparisons a data engineer keeps on their labels: drop, one at a time, the comparison whose removal most
    raises the best F1 on the training folds' pairs, while some removal raises it.

    A Fellegi-Sunter match weight is the prior's plus one per comparison (splink's mw_ columns), each with m and u
    estimated on its own, so leaving a comparison out is the same model as fitting without it.
    """
    train, true_pairs = folds.training(fold)
    labels = folds.pairs["label"].to_numpy()[train]

    def training_f1(kept: list[str]) -> float:
        from pss_ops.quality.metrics import best_decisions

        return best_decisions(sum(weights[c][train] for c in kept), labels, total_positives=true_pairs).f1

    kept = list(weights)
    best = training_f1(kept)
    while len(kept) > 1:
        tried = {c: training_f1([k for k in kept if k != c]) for c in kept}
        drop = max(tried, key=lambda c: tried[c])
        if tried[drop] <= best:
            break
        best = tried[drop]
        kept.remove(drop)
    return kept


def run_splink(work: Path, config_path: str, catalog: str, seed: int) -> dict[str, Any]:
    """splink per fold: u from random pairs, m from the training folds' true pairs, scoring exactly the candidate pairs;
    with every comparison, and with the comparisons backward elimination keeps on the training folds."""
    import numpy as np
    from splink import DuckDBAPI, Linker

    from pss_ops.quality.matching import pair_keys

    folds = Folds(work)
    records = splink_records(catalog, config_path)
    pairs = folds.pairs
    # splink's dedupe joins put the smaller id on the left, as pairs.parquet does.
    blocked = pairs.loc[:, ["id_a", "id_b"]].rename(columns={"id_a": "join_key_l", "id_b": "join_key_r"})
    blocked.insert(0, "match_key", "0")
    variants = ("splink", "splink:selected")
    scores = {v: np.full(len(pairs), np.nan) for v in variants}
    runs: dict[str, dict[str, list[Any]]] = {v: new_run() for v in variants}
    runs["splink:selected"]["comparisons"] = []
    all_pairs = len(records) * (len(records) - 1) / 2
    for fold in range(folds.count):
        print(f"  splink fold {fold}", file=sys.stderr, flush=True)
        labels = folds.truth.loc[folds.truth["fold"] != fold, ["id_a", "id_b"]]
        started = time.perf_counter()
        db = DuckDBAPI()
        offers = db.register(records, table_name="offers")
        # The prior only shifts every match weight alike; from the labels, scaled up to the whole catalog.
        prior = len(labels) * folds.count / (folds.count - 1) / all_pairs
        linker = Linker(offers, splink_settings(prior), log_level=None)
        linker.training.estimate_u_using_random_sampling(max_pairs=SPLINK_U_PAIRS, seed=seed)
        linker.table_management.compute_tf_table("brand")
        labelled = db.register(labels.rename(columns={"id_a": "unique_id_l", "id_b": "unique_id_r"}), table_name="labels")
        linker.training.estimate_m_from_pairwise_labels(labelled)
        fitted = time.perf_counter()
        linker.table_management.register_blocked_pairs_for_predict(db.register(blocked, table_name="candidates"))
        found = linker.inference.predict().as_pandas_dataframe()
        predicted = time.perf_counter()
        found = found.assign(key=pair_keys(found["unique_id_l"], found["unique_id_r"])).set_index("key").reindex(pairs["key"])
        if found["match_probability"].isna().any():
            raise RuntimeError(f"splink left {int(found['match_probability'].isna().sum())} candidate pairs unscored in fold {fold}")
        probability = found["match_probability"].to_numpy(dtype=float)
        runs["splink"]["threshold"].append(folds.threshold(probability, fold))
        test = (pairs["fold"] == fold).to_numpy()
        scores["splink"][test] = probability[test]
        runs["splink"]["fit_seconds"].append(fitted - started)
        runs["splink"]["predict_seconds"].append(predicted - fitted)
        runs["splink"]["threshold_seconds"].append(time.perf_counter() - predicted)

        selecting = time.perf_counter()
        # Each comparison's weight, its term-frequency adjustment (mw_tf_adj_<column>) included.
        weights = {}
        for column in (c for c in found.columns if c.startswith("mw_") and not c.startswith("mw_tf_adj_")):
            name = column.removeprefix("mw_")
            adjustment = found[f"mw_tf_adj_{name}"].to_numpy(dtype=float) if f"mw_tf_adj_{name}" in found.columns else 0.0
            weights[name] = found[column].to_numpy(dtype=float) + adjustment
        kept = backward_elimination(weights, folds, fold)
        weight = sum(weights[c] for c in kept)
        selected = runs["splink:selected"]
        selected["comparisons"].append(kept)
        selected["threshold"].append(folds.threshold(weight, fold))
        scores["splink:selected"][test] = weight[test]
        # The same fit and prediction, plus the selection.
        selected["fit_seconds"].append(runs["splink"]["fit_seconds"][-1] + time.perf_counter() - selecting)
        selected["predict_seconds"].append(runs["splink"]["predict_seconds"][-1])
        selected["threshold_seconds"].append(0.0)
    return save_scores(work, "splink", pairs, scores, runs)


class PostFilterPairs:
    """Which pairs of items the config's post-filter lets a query list, by the service's own attribute rules
    (pss_ops.search.filters); called with two item sets it is linked_groups' `comparable`, as publish counts it."""

    def __init__(self, catalog: str, config_path: str) -> None:
        from pss_ops.catalog.validate import read_catalog, validate_catalog
        from pss_ops.config import load_config
        from pss_ops.search.filters import attribute_rules

        config = load_config(config_path)
        self.rules = list(attribute_rules(config.post_filter))
        accepted = validate_catalog(read_catalog(catalog), config).accepted.set_index("item_id")
        self.values = {attribute: accepted[attribute].to_dict() for _, attribute, _ in self.rules}

    def allowed(self, a: Any, b: Any) -> Any:
        """The (len(a), len(b)) verdicts: True where every attribute rule lets the pair be listed."""
        import numpy as np

        from pss_ops.search.filters import attribute_verdict

        verdict = np.ones((len(a), len(b)), dtype=bool)
        for _, attribute, same in self.rules:
            left = np.asarray([self.values[attribute][i] for i in a], dtype=object)[:, None]
            right = np.asarray([self.values[attribute][i] for i in b], dtype=object)[None, :]
            verdict &= attribute_verdict(left, right, same=same)
        return verdict

    def __call__(self, a: Any, b: Any) -> int:
        return int(self.allowed(a, b).sum())

    def allowed_keys(self, keys: Any) -> set[str]:
        """The unordered pair keys (ids NUL-joined) whose pair the post-filter allows."""
        return {key for key in keys if bool(self.allowed(*([part] for part in key.split("\0", 1)))[0, 0])}


def fold_figures(folds: Folds, scores: Any, thresholds: list[float], probabilities: bool) -> list[dict[str, Any]]:
    """decision_report of each test fold at its training threshold (recall over every true pair of the fold)."""
    import pandas as pd

    from pss_ops.quality.matching import CALIBRATION_LEVELS, decision_report

    out = []
    for fold in range(folds.count):
        test = (folds.pairs["fold"] == fold).to_numpy()
        scored = pd.DataFrame({"id_a": folds.pairs["id_a"][test], "id_b": folds.pairs["id_b"][test], "probability": scores[test]})
        truth = folds.truth[folds.truth["fold"] == fold]
        report = decision_report(scored, truth, thresholds[fold])
        out.append({k: report[k] for k in ("true_pairs", "true_pairs_scored", "pairs_scored", "R@P80", "R@P90", "R@P95")})
        # Calibration on unseen pairs, for methods whose scores are probabilities: how many test pairs score at
        # least a level, and how many of them are matches.
        labels = folds.pairs["label"].to_numpy()[test]
        for level in CALIBRATION_LEVELS if probabilities else ():
            sure = scores[test] >= level
            out[-1][f"pairs_at_p{level:g}"] = int(sure.sum())
            out[-1][f"matches_at_p{level:g}"] = int(labels[sure].sum())
        out[-1].update(
            {
                "threshold": round(thresholds[fold], 6),
                "precision": report["precision@threshold"],
                "recall": report["recall@threshold"],
                "f1": report["f1@threshold"],
                "best_f1_oracle": report["best_f1"],
            }
        )
    return out


def summarise(per_fold: list[dict[str, Any]], run: dict[str, list[float]]) -> dict[str, Any]:
    """Means over the folds (NaN precision, where a threshold accepts nothing, counts as 0), and the summed time."""
    import numpy as np

    def mean(key: str) -> float:
        return round(float(np.mean([0.0 if math.isnan(f[key]) else f[key] for f in per_fold])), 4)

    f1 = [f["f1"] for f in per_fold]
    return {
        "f1": mean("f1"),
        "f1_sd": round(float(np.std(f1, ddof=1)) if len(f1) > 1 else 0.0, 4),
        "f1_min": min(f1),
        "f1_max": max(f1),
        "precision": mean("precision"),
        "recall": mean("recall"),
        "R@P90": mean("R@P90"),
        "best_f1_oracle": mean("best_f1_oracle"),
        "seconds": round(sum(run["fit_seconds"]) + sum(run["predict_seconds"]), 2),
        "fit_seconds": round(sum(run["fit_seconds"]), 2),
        "predict_seconds": round(sum(run["predict_seconds"]), 2),
        "threshold_seconds": round(sum(run["threshold_seconds"]), 2),
        "thresholds": [round(t, 4) for t in run["threshold"]],
        **{key: sum(f[key] for f in per_fold) for key in per_fold[0] if key.startswith(("pairs_at_p", "matches_at_p"))},
        **({"comparisons": run["comparisons"]} if "comparisons" in run else {}),
        "folds": per_fold,
    }


def group_figures(folds: Folds, probability: Any, catalog: str, config_path: str, work: Path) -> dict[str, Any]:
    """linked_groups against connected components on the matcher's out-of-fold probabilities, beside its pairwise figures."""
    import pandas as pd

    from pss_ops.matching.groups import linked_groups
    from pss_ops.quality.matching import decision_report, group_pairs, group_report

    comparable = PostFilterPairs(catalog, config_path)
    pairs = pd.DataFrame({"id_a": folds.pairs["id_a"], "id_b": folds.pairs["id_b"], "probability": probability})
    pairs.to_parquet(work / "matcher-oof.parquet", index=False)
    truth = folds.truth

    true_allowed = comparable.allowed_keys(truth["key"])

    def scored(groups: pd.DataFrame) -> dict[str, Any]:
        every = group_report(groups, truth)
        claimed = comparable.allowed_keys(group_pairs(groups).tolist())
        hits = len(claimed & true_allowed)
        denominator = len(claimed) + len(true_allowed)
        return {
            **every,
            "allowed_group_pairs": len(claimed),
            "allowed_precision": round(hits / len(claimed), 4) if claimed else float("nan"),
            "allowed_recall": round(hits / len(true_allowed), 4) if true_allowed else float("nan"),
            "allowed_f1": round(2 * hits / denominator, 4) if denominator else float("nan"),
        }

    out: dict[str, Any] = {"true_pairs": len(truth), "true_pairs_allowed": len(true_allowed)}
    for threshold in GROUP_THRESHOLDS:
        decisions = decision_report(pairs, truth, threshold)
        started = time.perf_counter()
        linked = linked_groups(pairs, threshold, comparable=comparable)
        linked_seconds = time.perf_counter() - started
        components = linked_groups(pairs, threshold, average_linkage=False)
        linked.to_parquet(work / f"groups-linked-{threshold:g}.parquet", index=False)
        out[f"{threshold:g}"] = {
            "matcher_pairs": {
                "pairs_accepted": int((probability >= threshold).sum()),
                "precision": decisions["precision@threshold"],
                "recall": decisions["recall@threshold"],
                "f1": decisions["f1@threshold"],
            },
            "linked_groups": {**scored(linked), "seconds": round(linked_seconds, 3)},
            "connected_components": scored(components),
        }
    return out


def report(work: Path, catalog: str, config_path: str) -> dict[str, Any]:
    """Every method's figures per fold and summed up, and the duplicate groups', from the score files present."""
    import pandas as pd

    folds = Folds(work)
    methods: dict[str, Any] = {}
    matcher_probability = None
    for family in FAMILIES:
        path = work / f"scores-{family}.parquet"
        if not path.exists():
            continue
        scores = pd.read_parquet(path)
        if not scores["key"].equals(folds.pairs["key"]):
            raise RuntimeError(f"{path} is not aligned with pairs.parquet")
        runs = json.loads((work / f"scores-{family}.json").read_text(encoding="utf-8"))
        for variant, run in runs.items():
            values = scores[variant].to_numpy(dtype=float)
            methods[variant] = summarise(fold_figures(folds, values, run["threshold"], variant in PROBABILITIES), run)
            if variant == "matcher":
                matcher_probability = values
    groups = group_figures(folds, matcher_probability, catalog, config_path, work) if matcher_probability is not None else None
    return {"candidates": folds.meta, "methods": methods, "groups": groups}


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    if args.worker == "prepare_wdc":
        return prepare_wdc_catalog(work)
    if args.worker == "candidates":
        return build_candidates(args.config, args.run_out, args.truth, work, args.folds, args.seed)
    if args.worker == "trees":
        return run_trees(work, args.seed)
    if args.worker == "cosine":
        return run_cosine(work)
    if args.worker == "siamese":
        return run_siamese(work, args.config, args.catalog, args.siamese_epochs)
    if args.worker == "splink":
        return run_splink(work, args.config, args.catalog, args.seed)
    if args.worker == "report":
        return report(work, args.catalog, args.config)
    raise ValueError(f"unknown worker {args.worker}")


# --- the parent: runs the children, prints the tables --------------------------------------------------


def run_child(command: list[str], log: Path, *, passive_threads: bool = True) -> tuple[float, str]:
    """Run one process to the end: its wall seconds and its last stdout line (stderr to log).

    passive_threads: OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE) in the bench's own workers.
    On 2 cores shared with other jobs, LightGBM's spinning threads took 171 s for a 300-round fit on 6k pairs that
    takes 0.3 s on one thread and 0.4 s on two passive ones; the wait policy is the same for all three tree libraries.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if passive_threads:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    with open(log, "w+", encoding="utf-8") as err, tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        code = subprocess.run(command, stdout=out, stderr=err, text=True, cwd=ROOT, env=env).returncode
        seconds = time.perf_counter() - started
        out.seek(0)
        lines = out.read().strip().splitlines()
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{err.read()[-4000:]}")
    return seconds, lines[-1] if lines else ""


def pss_command() -> list[str]:
    """The `pss` console script beside this interpreter (as a user runs it), else the same CLI as a module."""
    script = Path(sys.executable).parent / "pss"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pss_ops.cli"]


def worker_command(args: argparse.Namespace, worker: str, work: Path, **options: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--workdir", str(work)]
    command += ["--config", args.config, "--folds", str(args.folds), "--seed", str(args.seed)]
    if args.siamese_epochs is not None:
        command += ["--siamese-epochs", str(args.siamese_epochs)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", value]
    return command


def measure(args: argparse.Namespace, name: str, catalog: str, truth: str, work: Path) -> dict[str, Any]:
    """pss run once, the candidates labelled and dealt to folds, each method family, then the figures."""
    print(f"[{name}] pss run", file=sys.stderr, flush=True)
    out = work / "run"
    command = [*pss_command(), "run", "--config", args.config, "--catalog", catalog, "--out", str(out)]
    # As a user runs it: the pipeline keeps the environment's thread settings.
    run_seconds, _ = run_child(command, work / "pss-run.log", passive_threads=False)
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    run_child(worker_command(args, "candidates", work, run_out=str(out), truth=truth), work / "candidates.log")
    families: dict[str, float] = {}
    for family in args.methods:
        print(f"[{name}] {family}", file=sys.stderr, flush=True)
        families[family], _ = run_child(worker_command(args, family, work, catalog=catalog), work / f"{family}.log")
    _, line = run_child(worker_command(args, "report", work, catalog=catalog), work / "report.log")
    result = json.loads(line)
    result["pss_run"] = {
        "seconds": round(run_seconds, 1),
        "items": summary["counts"]["rows_accepted"],
        "step_seconds": summary["step_seconds"],
    }
    result["process_seconds"] = {family: round(seconds, 1) for family, seconds in families.items()}
    return result


def label(method: str) -> str:
    if method in METHODS:
        return METHODS[method]
    return f"threshold on {method.removeprefix('cosine:cos_')} cosine" if method.startswith("cosine:cos_") else method


def method_table(name: str, entry: dict[str, Any]) -> str:
    """One dataset's methods: F1 at the training threshold, its spread, P, R, R@P90, the oracle F1 and seconds."""
    meta = entry["candidates"]
    lines = [
        f"{name}: {entry['pss_run']['items']} items, {meta['true_pairs']} true pairs ({meta['true_pairs_among_candidates']} among "
        f"{meta['candidate_pairs']} candidate pairs of {meta['candidate_rows']} rows), {meta['folds']} folds by product; "
        f"pss run {entry['pss_run']['seconds']:.1f} s",
        f"{'method':<48}{'F1':>8}{'± sd':>8}{'precision':>11}{'recall':>8}{'R@P90':>8}{'best F1*':>10}{'seconds':>9}",
    ]
    for method, row in entry["methods"].items():
        lines.append(
            f"{label(method):<48}{row['f1']:>8.4f}{row['f1_sd']:>8.4f}{row['precision']:>11.4f}{row['recall']:>8.4f}"
            f"{row['R@P90']:>8.4f}{row['best_f1_oracle']:>10.4f}{row['seconds']:>9.1f}"
        )
    for source, f1 in PUBLISHED_F1.get(name, {}).items():
        lines.append(f"{source + ' (published; its own split and protocol)':<48}{f1:>8.4f}")
        if "matcher" in entry["methods"]:
            ours = entry["methods"]["matcher"]["f1"]
            lines.append(f"  the matcher's F1 is {ours / f1:.3f} of {source}'s ({100 * (ours - f1):+.1f} points)")
    lines.append("F1, precision, recall: each test fold at the threshold chosen on its training folds, mean over folds.")
    lines.append("* best F1: the test fold's own best threshold, an oracle figure. seconds: fit + predict, all folds.")
    for method in ("matcher", "splink"):
        row = entry["methods"].get(method)
        if row:
            shares = [
                f"p >= {level:g}: {row[f'matches_at_p{level:g}']} matches of {row[f'pairs_at_p{level:g}']} test pairs"
                + (f" ({row[f'matches_at_p{level:g}'] / row[f'pairs_at_p{level:g}']:.3f})" if row[f"pairs_at_p{level:g}"] else "")
                for level in (0.5, 0.9)
            ]
            lines.append(f"calibration of {method}, all test folds: " + "; ".join(shares))
    return "\n".join(lines)


def group_table(entry: dict[str, Any]) -> str:
    """Pairwise F1 of the matcher, of linked_groups and of connected components, per threshold."""
    groups = entry["groups"]
    lines = [
        "duplicate groups from the matcher's out-of-fold probabilities (pairwise against the true pairs)",
        f"{'threshold':>9}{'matcher F1':>12}{'linked F1':>11}{'allowed':>9}{'groups':>8}{'largest':>9}"
        f"{'components F1':>15}{'allowed':>9}{'groups':>8}{'largest':>9}",
    ]
    for threshold in GROUP_THRESHOLDS:
        row = groups[f"{threshold:g}"]
        linked, components = row["linked_groups"], row["connected_components"]
        lines.append(
            f"{threshold:>9g}{row['matcher_pairs']['f1']:>12.4f}"
            f"{linked['group_pair_f1']:>11.4f}{linked['allowed_f1']:>9.4f}{linked['duplicate_groups']:>8}{linked['largest_group']:>9}"
            f"{components['group_pair_f1']:>15.4f}{components['allowed_f1']:>9.4f}{components['duplicate_groups']:>8}"
            f"{components['largest_group']:>9}"
        )
    lines.append("F1 over every pair within a group; 'allowed': only the pairs the config's post-filter lets a query list.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="amazon_google,wdc", help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--catalog", help="instead of --datasets: one catalog in the contract (with --truth)")
    parser.add_argument("--truth", help="true pairs (id_a,id_b) for --catalog")
    parser.add_argument("--config", default="examples/near_identical.yaml")
    parser.add_argument("--methods", default=",".join(FAMILIES), help=f"comma-separated families, of {', '.join(FAMILIES)}")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--siamese-epochs", type=int, help="override the recipe's epochs (a quick run)")
    parser.add_argument("--out", help="write the JSON line to this file and the printed text beside it (.txt)")
    parser.add_argument("--work-dir", help="keep the runs and score files here (default: a temp dir, removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--run-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(strict(_worker(args))))
        return 0

    args.config = str(Path(args.config).resolve())
    args.methods = [m for m in args.methods.split(",") if m]
    if not args.methods or any(m not in FAMILIES for m in args.methods):
        parser.error(f"--methods: use {', '.join(FAMILIES)}")
    if bool(args.catalog) != bool(args.truth):
        parser.error("--catalog and --truth go together")
    names = ["catalog"] if args.catalog else [d for d in args.datasets.split(",") if d]
    if any(d not in DATASETS for d in names if d != "catalog"):
        parser.error(f"--datasets: use {', '.join(DATASETS)}")

    root = Path(args.work_dir or tempfile.mkdtemp(prefix="pss-bench-matching-"))
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict[str, Any] = {}
    try:
        for name in names:
            work = root / name
            work.mkdir(parents=True, exist_ok=True)
            if name == "catalog":
                catalog, truth = str(Path(args.catalog).resolve()), str(Path(args.truth).resolve())
            elif name == "wdc":
                made = json.loads(run_child(worker_command(args, "prepare_wdc", work), work / "prepare.log")[1])
                catalog, truth = made["catalog"], made["truth"]
            else:
                catalog, truth = str(ROOT / DATASETS[name]["catalog"]), str(ROOT / DATASETS[name]["truth"])
            results[name] = measure(args, name, catalog, truth, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    text = io.StringIO()
    with redirect_stdout(text):
        print(
            f"Match decisions, {args.folds}-fold cross-validation by product, config {os.path.relpath(args.config, ROOT)}; "
            f"started {started}, 1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        )
        for name, entry in results.items():
            print()
            print(method_table(name, entry))
            if entry["groups"]:
                print()
                print(group_table(entry))
        line = json.dumps(
            strict(
                {
                    "bench": "matching",
                    "config": os.path.relpath(args.config, ROOT),
                    "folds": args.folds,
                    "seed": args.seed,
                    "siamese_epochs": args.siamese_epochs,
                    "started": started,
                    "load_average": {"before": load_before[0], "after": load_after[0]},
                    "published_f1": PUBLISHED_F1,
                    "datasets": results,
                }
            )
        )
        print(line)
    print(text.getvalue(), end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n", encoding="utf-8")
        out.with_suffix(".txt").write_text(text.getvalue(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
