"""A short run of bench/ablation.py: one fold, one epoch, the shipped recipe and its variant without synthetic negatives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.model
def test_ablation_bench_smoke() -> None:
    recipe = "SiameseNet 1x256 + skip + feature weights, labelled"
    command = [sys.executable, str(ROOT / "bench" / "ablation.py"), "--folds", "1", "--epochs", "1", "--only", recipe]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert "mean over folds 1:" in done.stdout

    rows = {row["embedding"]: row for row in result["rows"]}
    reweighted = ["compound, model_tokens weight x2", "compound, model_tokens weight x4"]
    # --only matches by substring: the shipped variant's name extends this one's, so both train.
    shipped = f"{recipe} + part-number negatives"
    assert list(rows) == ["title_embedding only", "lexical only", "model_tokens only", "compound", *reweighted, recipe, shipped]
    for row in rows.values():
        assert row["fold"] == 1
        for column in ("recall@1", "recall@10", "R@P80", "R@P90", "R@P95", "R@P90 separable", "wdc R@P90", "wdc AP", "wdc all R@P90"):
            assert 0.0 <= row[column] <= 1.0, (row["embedding"], column, row[column])
        assert row["recall@1"] <= row["recall@10"] and row["R@P95"] <= row["R@P90"] <= row["R@P80"]
        # Setting same-input negatives aside can only raise the precision of every threshold.
        assert row["R@P90 separable"] >= row["R@P90"]
    # The compound is what every feature-only row is a slice of: on ranking it is at least as good as the worst slice.
    assert rows["compound"]["recall@1"] >= min(rows[f"{f} only"]["recall@1"] for f in ("title_embedding", "lexical", "model_tokens"))
    assert rows["compound"]["seconds"] == 0.0 and rows[recipe]["seconds"] > 0
    # The reweighted compounds trade Amazon–Google ranking away as the model-token block grows.
    assert rows["compound"]["recall@1"] >= rows[reweighted[0]]["recall@1"] >= rows[reweighted[1]]["recall@1"]
    # Trained on Amazon–Google only (the synthetic negatives are made from its items): scored on every WDC pair.
    assert rows[recipe]["wdc all R@P90"] is not None and rows[shipped]["wdc all R@P90"] is not None
