"""A small run of bench/matching_overhead.py on the subset: a matcher is trained and both runs are measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Subset

ROOT = Path(__file__).resolve().parents[2]


def test_overhead_bench_measures_both_runs(ag_subset: Subset, tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "matching_overhead.py"), "--catalog", str(ag_subset.catalog)]
    command += ["--truth", str(ag_subset.matches_path), "--repeats", "1", "--out", str(tmp_path / "result.txt")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    (first,) = result["rounds"]
    assert result["matcher_id"].startswith("matcher-") and first["duplicate_groups"] > 10
    assert first["query_seconds"] > 0 and first["matching_seconds"] > 0
    assert first["matching_over_query"] == round(first["matching_seconds"] / first["query_seconds"], 4)
    assert "median matching/query" in (tmp_path / "result.txt").read_text()
