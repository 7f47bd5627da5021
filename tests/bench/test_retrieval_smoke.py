"""A small run of bench/retrieval.py on a few hundred Amazon–Google items: its table, its JSON line, its baselines' pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["pipeline", "pipeline:dense", "pipeline:lexical", "dense_only", "tfidf", "minilm"]


def small_catalog(tmp_path: Path, pairs: int = 150, distractors: int = 100) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """The items of the first true pairs plus unmatched items, in the catalog contract, and those pairs as the truth."""
    catalog = pd.read_csv(ROOT / "data/amazon_google/catalog.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(ROOT / "data/amazon_google/matches.csv", dtype=str, keep_default_na=False).iloc[:pairs]
    matched = catalog["item_id"].isin(set(truth["id_a"]) | set(truth["id_b"]))
    small = pd.concat([catalog[matched], catalog[~matched].iloc[:distractors]])
    small.to_csv(tmp_path / "catalog.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return tmp_path / "catalog.csv", tmp_path / "truth.csv", small, truth


@pytest.mark.model
def test_retrieval_bench_smoke(tmp_path: Path) -> None:
    catalog_path, truth_path, catalog, truth = small_catalog(tmp_path)
    work, saved = tmp_path / "work", tmp_path / "retrieval.txt"
    command = [sys.executable, str(ROOT / "bench" / "retrieval.py"), "--catalog", str(catalog_path), "--truth", str(truth_path)]
    command += ["--work-dir", str(work), "--out", str(saved)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert saved.read_text(encoding="utf-8") == done.stdout
    assert "pipeline (pss run, config as shipped)" in done.stdout and "exact TF-IDF char_wb 2-4 (titles)" in done.stdout

    assert result["bench"] == "retrieval" and result["k"] == 10 and result["config"] == "examples/near_identical.yaml"
    assert list(result["datasets"]) == ["catalog"]
    entry = result["datasets"]["catalog"]
    assert list(entry["methods"]) == METHODS
    for method, row in entry["methods"].items():
        assert row["true_pairs"] == len(truth) and row["items"] == len(catalog), method
        assert row["pairs_whose_query_has_no_results"] == 0, method
        assert 0.0 <= row["recall@1"] <= row["recall@5"] <= row["recall@10"] <= 1.0, (method, row)
        assert row["seconds"] > 0 and row["peak_rss_mib"] > 0, method
    tfidf = entry["methods"]["tfidf"]
    assert tfidf["recall@10"] >= tfidf["recall@1"] > 0
    # Titles of true Amazon–Google pairs are close: every method finds most of them in its top 10.
    assert all(row["recall@10"] > 0.5 for row in entry["methods"].values())
    pipeline = entry["methods"]["pipeline"]
    assert pipeline["counts"]["queries"] == len(catalog) and pipeline["counts"]["queries_short_of_k"] == 0
    assert entry["ratios"]["pipeline_over_tfidf_recall@1"] == round(pipeline["recall@1"] / tfidf["recall@1"], 3)

    # The baselines list what the config's post-filter allows: never the query itself, never its own seller, k each.
    seller = dict(zip(catalog["item_id"], catalog["seller"]))
    for method in ("tfidf", "minilm"):
        pairs = pd.read_parquet(work / "catalog" / f"{method}.parquet")
        assert (pairs["query_item_id"] != pairs["candidate_item_id"]).all()
        assert all(seller[q] != seller[c] for q, c in zip(pairs["query_item_id"], pairs["candidate_item_id"]))
        per_query = pairs.groupby("query_item_id")["rank"].agg(list)
        assert len(per_query) == len(catalog) and all(ranks == list(range(1, 11)) for ranks in per_query)
