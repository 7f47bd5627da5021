"""A small run of bench/seller_dominated.py (1,200 items, 90% one seller): its catalog, its table, its JSON line, its run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "seller_dominated.py"
CONTRACT = ["item_id", "title", "description", "brand", "price", "seller", "category"]


def source_titles() -> set[str]:
    amazon_google = pd.read_csv(ROOT / "data/amazon_google/catalog.csv", dtype=str, keep_default_na=False)["title"]
    wdc = pd.read_csv(ROOT / "data/wdc_computers/products.csv", dtype=str, keep_default_na=False)["title"]
    return set(amazon_google.str.strip()) | set(wdc.str.strip())


def build(out: Path, items: int, seed: int) -> dict:
    command = [sys.executable, str(SCRIPT), "--worker", "build", "--items", str(items), "--big-share", "0.9", "--seed", str(seed)]
    done = subprocess.run([*command, "--catalog-out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_catalog_is_deterministic_and_distinct(tmp_path: Path) -> None:
    first, again, other = (build(tmp_path / f"{name}.csv", 3000, seed) for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    assert {k: v for k, v in first.items() if k != "path"} == {k: v for k, v in again.items() if k != "path"}
    assert other["items"] == 3000
    catalog = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False)
    assert list(catalog.columns) == CONTRACT and len(catalog) == 3000
    assert catalog["item_id"].is_unique and catalog["title"].is_unique and (catalog["title"] != "").all()
    # The full-size mix: ~22% real titles, the rest variants of them.
    assert first["real_titles"] + first["variant_titles"] == 3000 and 600 <= first["real_titles"] <= 730
    assert catalog["title"].isin(source_titles()).sum() >= first["real_titles"]


@pytest.mark.model
def test_seller_dominated_bench_smoke(tmp_path: Path) -> None:
    work, saved = tmp_path / "work", tmp_path / "seller_dominated.txt"
    command = [sys.executable, str(SCRIPT), "--items", "1200", "--big-share", "0.9", "--seed", "3"]
    done = subprocess.run([*command, "--work-dir", str(work), "--out", str(saved)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert saved.read_text(encoding="utf-8") == done.stdout
    assert "verdicts:" in done.stdout and "query_over_embed" in done.stdout

    assert result["bench"] == "seller_dominated" and result["config"] == "examples/near_identical.yaml"
    assert result["catalog"]["items"] == 1200 and result["catalog"]["sellers"] == {"big": 1080, "small": 120}

    # The catalog as written: the contract's columns, the requested size and shares, one category, distinct rows.
    catalog = pd.read_csv(work / "catalog.csv", dtype=str, keep_default_na=False)
    assert list(catalog.columns) == CONTRACT and len(catalog) == 1200
    assert catalog["seller"].value_counts().to_dict() == {"big": 1080, "small": 120}
    assert set(catalog["category"]) == {"electronics"}
    assert catalog["item_id"].is_unique and catalog["title"].is_unique

    # The run: cold cache, every query answered with k candidates, the search as good as exact.
    assert result["cache"]["hits"] == 0 and result["cache"]["misses"] == 1200
    counts = result["counts"]
    assert counts["rows_accepted"] == 1200 and counts["queries"] == 1200 and counts["rows_published"] == 12000
    assert counts["queries_short_of_k"] == 0 and result["verdicts"]["queries_short_of_k"]["met"]
    recalls = result["search"]["recall_by_retriever"]
    assert set(recalls) == {"dense", "lexical"} and all(value >= 0.99 for value in recalls.values()), recalls
    assert all(result["verdicts"][f"recall_{name}"]["met"] for name in recalls)
    assert result["search"]["queries_without_candidates"] == 0
    assert result["step_seconds"]["embed"] > 0 and result["step_seconds"]["query"] > 0 and result["peak_rss_mib"] > 0
    assert result["query_over_embed"] == round(result["step_seconds"]["query"] / result["step_seconds"]["embed"], 4)

    # What it published obeys the config's seller rule: a big-seller item's candidates are all small-seller items.
    pairs = pd.read_parquet(work / "run" / "similar_items.parquet", columns=["query_item_id", "candidate_item_id"])
    seller = dict(zip(catalog["item_id"], catalog["seller"]))
    assert len(pairs) == 12000 and pairs.groupby("query_item_id").size().eq(10).all()
    assert all(seller[q] != seller[c] for q, c in zip(pairs["query_item_id"], pairs["candidate_item_id"]))
