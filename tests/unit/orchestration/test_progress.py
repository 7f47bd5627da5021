"""What `pss run` prints while it works: bars in a terminal, a line per partition elsewhere, and no log chatter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pss_ops.cli import WAREHOUSE_ENV
from pss_ops.orchestration.run import _Stages
from tests.conftest import ROOT

CONFIG = """\
application: progress
features:
  - {type: char_ngram, name: grams, dims: 256}
k: 3
catalog: {partition_size: 40}
"""


def test_a_terminal_gets_a_bar_per_step_and_a_log_a_line_per_partition(capsys: pytest.CaptureFixture[str]) -> None:
    class Part:
        def __init__(self, name: str) -> None:
            self.name = name

    parts = [Part(f"part-{i:05d}") for i in range(3)]
    lines: list[str] = []
    assert _Stages(lines.append, bars=False)("embed", parts, lambda p: p.name) == [p.name for p in parts]
    assert lines == ["[embed] 1/3 part-00000", "[embed] 2/3 part-00001", "[embed] 3/3 part-00002"]

    lines.clear()
    stages = _Stages(lines.append, bars=True)
    assert stages("embed", parts, lambda p: p.name) == [p.name for p in parts]
    stages("plan_index", [None], lambda _: None)
    bar = capsys.readouterr().err
    assert "embed" in bar and "3/3" in bar and "partition" in bar
    assert lines == []  # the bar says it; a one-item step says nothing
    assert set(stages.wall) == {"embed", "plan_index"}


def test_pss_run_prints_its_progress_and_summary_and_no_log_lines(tmp_path: Path) -> None:
    """In its own process, as a user runs it: the logging set up by main() is what decides."""
    (tmp_path / "app.yaml").write_text(CONFIG, encoding="utf-8")
    catalog = tmp_path / "catalog.csv"
    pd.read_csv(ROOT / "data" / "amazon_google" / "catalog.csv", dtype=str, nrows=120).to_csv(catalog, index=False)
    argv = ["run", "--config", str(tmp_path / "app.yaml"), "--catalog", str(catalog), "--out", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k not in (WAREHOUSE_ENV, "PSS_DEBUG")}
    done = subprocess.run([sys.executable, "-m", "pss_ops.cli", *argv], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "published        360 rows for 120 queries" in done.stdout
    assert "[embed] 3/3 part-00002" in done.stderr
    assert not [line for line in done.stderr.splitlines() if " INFO " in line or " DEBUG " in line], done.stderr
    verbose = subprocess.run([sys.executable, "-m", "pss_ops.cli", "-v", *argv], capture_output=True, text=True, env=env, check=False)
    assert verbose.returncode == 0, verbose.stderr
    assert [line for line in verbose.stderr.splitlines() if " INFO pss_ops.steps.embed: embed part-00000" in line]
