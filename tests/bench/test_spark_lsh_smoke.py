"""A small run of bench/spark_lsh.py (Spark local[2], offline): one JSON line with recall and time ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_spark_lsh_bench_smoke() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "spark_lsh.py"),
        "--n", "1500", "--dim", "16", "--k", "5", "--queries", "300", "--spark", "0.05x3,0.2x2", "--spark-memory", "1g",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert "spark LSH bucket=0.05 tables=3" in done.stdout and "exact (IndexFlatIP)" in done.stdout

    assert result["bench"] == "spark_lsh" and (result["n"], result["dim"], result["k"], result["queries"]) == (1500, 16, 5, 300)
    assert 0.9 <= result["ours"]["recall"] <= 1.0  # HNSW on 1,500 items is all but exact
    assert result["ours"]["all_items_seconds"] >= result["ours"]["build_seconds"] > 0 and result["exact_seconds"] > 0
    assert result["ours"]["seconds"] >= result["ours"]["build_seconds"]
    assert [(r["bucket_length"], r["hash_tables"]) for r in result["spark"]] == [(0.05, 3), (0.2, 2)]
    for row in result["spark"]:
        assert 0.0 < row["recall"] <= 1.0 and 0.0 < row["answered_fraction"] <= 1.0 and row["seconds"] > 0
        assert abs(row["our_recall_over_spark"] - result["ours"]["recall"] / row["recall"]) < 1e-9
        assert abs(row["our_time_over_spark"] - result["ours"]["seconds"] / row["seconds"]) < 1e-9
        # 300 of 1,500 items queried: Spark's time for all of them is an estimate, never below a fixed cost > 0.
        assert row["all_items_measured"] is False and row["all_items_seconds_estimate"] > 0
        assert abs(row["our_time_over_spark_all_items"] - result["ours"]["all_items_seconds"] / row["all_items_seconds_estimate"]) < 1e-9
    assert result["best_spark"]["recall"] == max(r["recall"] for r in result["spark"])
    assert result["our_recall_over_spark"] == result["best_spark"]["our_recall_over_spark"]
    assert result["our_time_over_spark_all_items"] == result["best_spark"]["our_time_over_spark_all_items"]
    assert 0.0 < result["threshold"] <= 2.0
