"""A small run of bench/warehouse_ingest.py: every variant publishes the same rows, and the table and JSON line say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("sqlite_pss", "sqlite_executemany", "sqlite_adbc_stage", "postgresql_pss", "postgresql_adbc", "duckdb", "duckdb_no_key")


@pytest.mark.postgres
def test_warehouse_ingest_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    command = [sys.executable, str(ROOT / "bench" / "warehouse_ingest.py"), "--rows", "3000", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    payload = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert lines[0].startswith("# .venv/bin/python bench/warehouse_ingest.py --rows 3000") and "rows=3,000" in lines[1]
    assert [line.split()[0] for line in lines[2:-1]] == list(VARIANTS)
    assert out.read_text().strip().splitlines() == lines

    assert payload["bench"] == "warehouse_ingest" and payload["rows"] == 3000
    assert len(payload["categories"]) == 16 and sum(payload["categories"].values()) == 3000
    assert set(payload["results"]) == set(VARIANTS) and payload["fastest"] in VARIANTS
    for variant, result in payload["results"].items():
        assert result["rows"] == 3000, variant  # every variant left every row, and only once
        assert result["seconds"] > 0 and result["peak_rss_mib"] > 0 and result["rows_per_second"] > 0
        assert len(result["load_average"]) == 2
        assert (result["file_mib"] is None) == variant.startswith("postgresql")
    assert set(payload["target"]["met"]) == set(VARIANTS)
