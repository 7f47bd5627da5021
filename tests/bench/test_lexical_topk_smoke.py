"""A small run of bench/lexical_topk.py, PSS's own method only (never needs sparse_dot_topn): exact on every query."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lexical_topk_bench_smoke(tmp_path: Path) -> None:
    saved = tmp_path / "lexical_topk.txt"
    command = [sys.executable, str(ROOT / "bench" / "lexical_topk.py"), "--catalogs", "wdc,dominated", "--items", "800"]
    command += ["--methods", "scipy_masked", "--out", str(saved)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])  # exactly one JSON line, last
    assert saved.read_text(encoding="utf-8") == done.stdout
    assert "scipy_masked: PSS masked search (scipy, masked)" in done.stdout and "sdt_postfilter" not in done.stdout

    assert result["bench"] == "lexical_topk" and result["fetch"] == 41
    assert list(result["catalogs"]) == ["wdc", "dominated"]
    wdc, dominated = result["catalogs"]["wdc"], result["catalogs"]["dominated"]
    # WDC: every offer its own shop; the dominated catalog: two sellers, ~90% "big".
    assert wdc["items"] == wdc["distinct_sellers"] == 1263
    assert wdc["queries_short_of_fetch"] == 0 and wdc["reference_rows"] == 41 * 1263  # only the query itself is excluded
    assert dominated["items"] == 800 and dominated["distinct_sellers"] == 2
    assert dominated["sellers"] == {"big": 720, "small": 80}
    for name, entry in result["catalogs"].items():
        # Both are small enough to be checked in full against brute force.
        assert entry["reference"] == f"brute force, all {entry['items']} queries", name
        assert entry["queries_checked"] == entry["items"] and 0 <= entry["queries_short_of_fetch"] < entry["items"] // 10, name
        assert list(entry["methods"]) == ["scipy_masked"]
        row = entry["methods"]["scipy_masked"]
        assert row["exact"] == 1.0, (name, row)  # the masked search is exact on every query
        assert row["invalid"] == 0 and row["returned"] == entry["reference_rows"], (name, row)
        assert row["seconds"] > 0 and row["peak_rss_mib"] >= entry["load_only_peak_rss_mib"] > 0, (name, row)
