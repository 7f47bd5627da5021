"""A small run of bench/embed.py: it finishes, prints its tables and one JSON line with every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.model
def test_embed_bench_smoke() -> None:
    command = [sys.executable, str(ROOT / "bench" / "embed.py"), "--n", "96", "--chunk", "48", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert "Title embedding" in done.stdout and "Warm cache lookups" in done.stdout and "Embed step" in done.stdout

    assert result["bench"] == "embed" and result["n"] == 96 and result["threads"] == 1
    variants = [row["variant"] for row in result["text"]]
    assert variants[0].startswith("st_encode") and {"ours_onnx", "ours_torch", "tried_ort_int8", "tried_torch_int8"} <= set(variants)
    for row in result["text"]:
        assert row["titles_per_s"] > 0 and row["seconds"] > 0 and row["load_s"] > 0
        assert -1.0 <= row["cos_min"] <= row["cos_mean"] <= 1.0 + 1e-6
    assert result["text"][0]["speedup"] == 1.0
    ours = {row["variant"]: row for row in result["text"]}
    # Float noise only: the kept paths must make the baseline's vectors (no timing asserted).
    assert ours["ours_onnx"]["cos_min"] > 0.9999 and ours["ours_torch"]["cos_min"] > 0.9999

    assert [row["backend"] for row in result["cache_lookup"]] == ["sqlite", "dynamodb (moto)"]
    assert all(row["vectors"] == 96 and row["vectors_per_s"] > 0 for row in result["cache_lookup"])
    assert [row["backend"] for row in result["embed_step"]] == ["sqlite", "dynamodb (moto)"]
    for row in result["embed_step"]:
        assert row["rows"] == 96 and row["cold_s"] > 0 and row["warm_s"] > 0
        assert row["warm_over_cold"] == row["cold_s"] / row["warm_s"]
    assert set(result["targets"]) == {"speedup", "cosine_min", "warm_over_cold_sqlite"}
    assert all(isinstance(t["met"], bool) for t in result["targets"].values())
