"""A small run of bench/index_query.py: it finishes, prints its table and one JSON line with every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_index_query_bench_smoke() -> None:
    command = [sys.executable, str(ROOT / "bench" / "index_query.py"), "--n", "2000,4000", "--dim", "16", "--k", "10", "--queries", "200"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert "pipeline tuned" in done.stdout and "pipeline P=4" in done.stdout and "monolithic HNSW" in done.stdout

    assert result["bench"] == "index_query" and result["args"]["target_recall"] == 0.995
    assert [s["n"] for s in result["sizes"]] == [2000, 4000]
    for size in result["sizes"]:
        for method in ("monolithic", "tuned", "p4"):
            assert 0.0 <= size[method]["recall"] <= 1.0, (method, size[method])
            assert size[method]["seconds"] > 0 and size[method]["peak_rss_mib"] > 0
        assert size["brute"]["seconds"] >= size["brute"]["seconds_sample"] > 0
        for variant in ("tuned", "p4"):
            assert set(size[variant]["steps"]) == {"plan_index", "build_index", "query"}
            assert all(step["peak_rss_mib"] > 0 for step in size[variant]["steps"].values())
        assert size["p4"]["partitions"] == 4
        tuning = size["tuning"]
        assert tuning["target_recall"] == 0.995 and tuning["sample_rows"] == size["n"]
        assert tuning["partition_size"] >= size["n"] // size["tuned"]["partitions"]
        assert 0.0 <= tuning["measured_recall"] <= 1.0
    assert set(result["time_exponent"]) == {"brute", "monolithic", "tuned", "p4"}
    assert set(result["ratios_by_n"]) == {"2000", "4000"}
    assert len(result["targets"]) == 4 and all(isinstance(t["met"], bool) for t in result["targets"].values())
