"""A small run of bench/matching.py on a few hundred Amazon–Google items, 2 folds, one SiameseNet epoch; and its WDC truth."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDS = 2
METHODS = [
    "matcher",
    "hist_gradient_boosting",
    "xgboost",
    "cosine:score",
    "cosine:score_dense",
    "cosine:score_lexical",
    "cosine:cos_title_embedding",
    "siamese",
    "splink",
    "splink:selected",
]


def bench_module() -> ModuleType:
    """bench/matching.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_matching", ROOT / "bench" / "matching.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_catalog(tmp_path: Path, pairs: int = 100, distractors: int = 60) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """The items of the first true pairs plus unmatched items, in the catalog contract, and those pairs as the truth."""
    catalog = pd.read_csv(ROOT / "data/amazon_google/catalog.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(ROOT / "data/amazon_google/matches.csv", dtype=str, keep_default_na=False).iloc[:pairs]
    matched = catalog["item_id"].isin(set(truth["id_a"]) | set(truth["id_b"]))
    small = pd.concat([catalog[matched], catalog[~matched].iloc[:distractors]])
    small.to_csv(tmp_path / "catalog.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return tmp_path / "catalog.csv", tmp_path / "truth.csv", small, truth


@pytest.mark.model
def test_matching_bench_smoke(tmp_path: Path) -> None:
    catalog_path, truth_path, catalog, truth = small_catalog(tmp_path)
    work, saved = tmp_path / "work", tmp_path / "matching.json"
    command = [sys.executable, str(ROOT / "bench" / "matching.py"), "--catalog", str(catalog_path), "--truth", str(truth_path)]
    command += ["--folds", str(FOLDS), "--siamese-epochs", "1", "--work-dir", str(work), "--out", str(saved)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert saved.read_text(encoding="utf-8") == lines[-1] + "\n"
    assert saved.with_suffix(".txt").read_text(encoding="utf-8") == done.stdout
    assert "matcher: LightGBM, calibrated (ours)" in done.stdout and "splink (DuckDB), m from labels" in done.stdout

    assert result["bench"] == "matching" and result["folds"] == FOLDS and result["config"] == "examples/near_identical.yaml"
    entry = result["datasets"]["catalog"]
    candidates = entry["candidates"]
    assert candidates["true_pairs"] == len(truth) and sum(candidates["true_pairs_per_fold"]) == len(truth)
    assert 0.9 * len(truth) <= candidates["true_pairs_among_candidates"] <= len(truth)
    assert entry["pss_run"]["items"] == len(catalog)

    methods = entry["methods"]
    assert list(methods) == METHODS
    for name, row in methods.items():
        assert len(row["folds"]) == FOLDS and len(row["thresholds"]) == FOLDS, name
        assert math.isfinite(row["f1"]) and 0.0 <= row["f1"] <= 1.0, (name, row["f1"])
        assert 0.0 <= row["R@P90"] <= 1.0 and row["seconds"] >= 0, name
        for fold in row["folds"]:
            # The oracle is the test fold's best threshold: no training threshold beats it.
            assert fold["f1"] <= fold["best_f1_oracle"] + 1e-4, (name, fold)
            assert fold["R@P95"] <= fold["R@P90"] <= fold["R@P80"], (name, fold)
        # Every fold is scored against all its true pairs, found by the search or not.
        assert [f["true_pairs"] for f in row["folds"]] == candidates["true_pairs_per_fold"], name
    worst_cosine = min(row["f1"] for name, row in methods.items() if name.startswith("cosine:"))
    assert methods["matcher"]["f1"] > worst_cosine
    assert methods["matcher"]["R@P90"] > methods["cosine:score_dense"]["R@P90"]

    # Folds keep products whole: every item of a true pair has one fold.
    true_pairs = pd.read_parquet(work / "catalog" / "truth.parquet")
    item_folds = pd.concat(
        [true_pairs[["id_a", "fold"]].set_axis(["item", "fold"], axis=1), true_pairs[["id_b", "fold"]].set_axis(["item", "fold"], axis=1)]
    )
    assert (item_folds.groupby("item")["fold"].nunique() == 1).all()
    pairs = pd.read_parquet(work / "catalog" / "pairs.parquet")
    assert len(pairs) == candidates["candidate_pairs"] and pairs["key"].is_unique and (pairs["id_a"] < pairs["id_b"]).all()

    groups = entry["groups"]
    seller = dict(zip(catalog["item_id"], catalog["seller"]))
    assert groups["true_pairs_allowed"] == sum(seller[a] != seller[b] for a, b in zip(truth["id_a"], truth["id_b"]))
    for threshold in ("0.5", "0.7", "0.9"):
        linked, components = groups[threshold]["linked_groups"], groups[threshold]["connected_components"]
        assert math.isfinite(linked["group_pair_f1"]) and math.isfinite(linked["allowed_f1"])
        # Average linkage only ever refuses merges that connected components make.
        assert linked["largest_group"] <= components["largest_group"] and linked["group_pairs"] <= components["group_pairs"]
        assert linked["allowed_group_pairs"] <= linked["group_pairs"]

    # Group ids are stable: the same probabilities in another order and direction give the same groups and ids.
    bench = bench_module()
    from pss_ops.matching.groups import linked_groups

    scored = pd.read_parquet(work / "catalog" / "matcher-oof.parquet")
    shuffled = scored.sample(frac=1.0, random_state=7).rename(columns={"id_a": "id_b", "id_b": "id_a"})
    comparable = bench.PostFilterPairs(str(catalog_path), str(ROOT / "examples" / "near_identical.yaml"))
    again = linked_groups(shuffled, 0.5, comparable=comparable)
    before = pd.read_parquet(work / "catalog" / "groups-linked-0.5.parquet")
    assert len(before)
    pd.testing.assert_frame_equal(again, before, check_dtype=False)
    # Same-seller pairs are never allowed under `different: [seller]`.
    ids = catalog["item_id"].tolist()
    allowed = comparable.allowed(ids, ids)
    sellers = catalog["seller"].to_numpy()
    assert np.array_equal(allowed, sellers[:, None] != sellers[None, :])


def test_wdc_truth_is_every_same_cluster_pair(tmp_path: Path) -> None:
    made = bench_module().prepare_wdc_catalog(tmp_path)
    offers = pd.read_csv(ROOT / "data/wdc_computers/products.csv", dtype=str, keep_default_na=False)
    cluster = dict(zip(offers["id"], offers["cluster_id"]))
    truth = pd.read_csv(made["truth"], dtype=str)
    sizes = offers.groupby("cluster_id").size()
    assert len(truth) == int((sizes * (sizes - 1) // 2).sum()) == 933
    assert all(cluster[a] == cluster[b] for a, b in zip(truth["id_a"], truth["id_b"]))
    catalog = pd.read_csv(made["catalog"], dtype=str, keep_default_na=False)
    assert len(catalog) == len(offers) and (catalog["seller"] == catalog["item_id"]).all()
