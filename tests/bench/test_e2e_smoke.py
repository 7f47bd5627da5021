"""A small run of bench/e2e.py: it runs `pss run` end to end and prints a table and one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_e2e_bench_smoke(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "bench/e2e.py", "--n", "3000", "--recall-sample", "50", "--work-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    payload = json.loads(lines[-1])
    assert "n=3,000" in lines[0] and any(line.startswith("peak RSS MiB") for line in lines)
    assert payload["bench"] == "e2e"
    assert set(payload["targets"]) >= {"wall_seconds", "wall_met", "peak_rss_gib", "rss_met"}
    (result,) = payload["results"]
    assert result["n"] == 3000 and result["dim"] == 128
    assert set(result["step_seconds"]) == {"plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report"}
    assert all(v is not None and v >= 0 for v in result["step_seconds"].values())
    assert result["peak_rss_mib"] > 0 and result["wall_seconds"] > 0 and result["cpu_seconds"] > 0
    # Every item was a query; the published rows are all in SQLite, k per query but for the few short of k.
    assert result["rows_published"] == result["sqlite_rows"]
    assert 3000 * 10 - result["rows_published"] <= result["queries_short_of_k"] * 10
    assert result["categories"] > 1 and 0.9 <= result["recall_at_k"] <= 1.0
    # Tuned as the example configs are: per category the family the tuner chose, recorded in the summary.
    assert result["indexes"] and result["tuning_seconds"] is not None and result["tuning_seconds"] >= 0
