"""A small run of bench/fusion_weights.py on a few hundred Amazon–Google items: its table and its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_retrieval_smoke import small_catalog

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.model
def test_fusion_weights_bench_smoke(tmp_path: Path) -> None:
    catalog_path, truth_path, catalog, truth = small_catalog(tmp_path)
    command = [sys.executable, str(ROOT / "bench" / "fusion_weights.py"), "--catalog", str(catalog_path), "--truth", str(truth_path)]
    done = subprocess.run(command + ["--out", str(tmp_path / "out.txt")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == done.stdout
    entry = result["datasets"]["catalog"]
    assert entry["items"] == len(catalog) and entry["true_pairs"] == len(truth)
    assert list(entry["weights"]) == ["0.0", "0.3", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]
    for row in entry["weights"].values():
        assert 0.0 < row["recall@1"] <= row["recall@10"] <= 1.0
    # The shipped weight (0.7) ranks at least as well at 10 as either retriever alone on these close titles.
    shipped = entry["weights"]["0.7"]["recall@10"]
    assert shipped >= min(entry["weights"]["0.0"]["recall@10"], entry["weights"]["1.0"]["recall@10"])
