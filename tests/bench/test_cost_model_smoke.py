"""A small run of bench/cost_model.py on two small bench/e2e.py runs: it checks each run against a fit on the
other, predicts Batch runs, and prints one JSON line with every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cost_model_bench_smoke(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    e2e = [sys.executable, "bench/e2e.py", "--n", "3000,6000", "--recall-sample", "50", "--work-dir", str(runs)]
    done = subprocess.run(e2e, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    model = [sys.executable, "bench/cost_model.py", "--runs", str(runs), "--predict", "10000000,100000000", "--queue-vcpus", "64"]
    done = subprocess.run(model, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert result["bench"] == "cost_model" and result["tolerance"] == 0.25
    # Each measured run is predicted from a fit on the other only.
    assert [(c["n"], c["fitted_on"]) for c in result["check"]] == [(3000, [6000]), (6000, [3000])]
    for checked in result["check"]:
        assert checked["measured_seconds"] > 0 and checked["predicted_seconds"] > 0
        steps = {"plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report"}
        assert set(checked["steps_predicted"]) == steps
    assert isinstance(result["all_within_tolerance"], bool)
    small, large = result["predictions"]
    assert (small["n"], large["n"]) == (10_000_000, 100_000_000)
    for prediction in (small, large):
        assert prediction["wall_hours"] > 0 and prediction["vcpu_hours"] > 0 and prediction["indexes"]
        # One query task per catalog partition of 100,000 rows, handed to array jobs of 100.
        assert prediction["arrays"]["query"]["tasks"] == prediction["catalog_partitions"]
        assert prediction["arrays"]["query"]["array_jobs"] == -(-prediction["catalog_partitions"] // 100)
    assert large["catalog_partitions"] >= 9 * small["catalog_partitions"] and large["vcpu_hours"] > small["vcpu_hours"]
    assert "paper Table 5" in done.stdout


def test_cost_model_needs_two_measured_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/cost_model.py", "--runs", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0 and "needs at least 2" in done.stderr
