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
    assert "pipeline" in done.stdout and "monolithic" in done.stdout and "HNSW32" in done.stdout and "IVF" in done.stdout

    assert result["bench"] == "index_query" and result["args"]["target_recall"] == 0.995
    assert [s["n"] for s in result["sizes"]] == [2000, 4000]
    families = ("ivf_flat", "ivf_graph", "hnsw32")
    for size in result["sizes"]:
        for method in ("pipeline", *families):
            assert 0.0 <= size[method]["recall"] <= 1.0, (method, size[method])
            assert size[method]["seconds"] > 0 and size[method]["peak_rss_mib"] > 0
        for family in families:  # each baseline was calibrated to the target on its own built index
            assert size[family]["calibration_met_target"] and size[family]["recall"] >= 0.99
        assert size["exact"]["seconds"] >= size["exact"]["seconds_sample"] > 0
        assert set(size["pipeline"]["steps"]) == {"plan_index", "build_index", "query"}
        assert all(step["peak_rss_mib"] > 0 for step in size["pipeline"]["steps"].values())
        tuning = size["tuning"]
        assert tuning["target_recall"] == 0.995 and tuning["sample_rows"] == size["n"]
        assert {f["index"]["family"] for f in tuning["families"]} >= {"flat", "ivf"}
        assert size["pipeline"]["indexes"] == sorted({b["index"] for b in size["built"]})
        assert size["load_average_before"] >= 0 and size["load_average_after"] >= 0
    assert set(result["time_exponent"]) == {"exact", "pipeline", *families}
    for n in ("2000", "4000"):
        figures = result["by_n"][n]
        assert set(figures) >= {"pipeline_recall", "pipeline_over_best_monolithic", "exact_over_pipeline"}
        assert figures["pipeline_recall"] >= 0.995 and figures["pipeline_over_best_monolithic"] > 0 and figures["exact_over_pipeline"] > 0
    assert len(result["targets"]) == 4 and all(isinstance(t["met"], bool) for t in result["targets"].values())
