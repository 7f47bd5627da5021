"""pss evaluate on a run's pairs: evaluation.json kept in the run, and its report page drawn again with a labels section."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pss_ops import layout, reporting, storage
from pss_ops.cli import main
from pss_ops.orchestration.evaluation import record_evaluation
from pss_ops.quality.evaluate import evaluate
from pss_ops.reporting.page import run_evaluation, write_page
from tests.conftest import Run, Subset
from tests.report_runs import copy_out, copy_run, run_folder
from tests.unit.reporting.conftest import as_dicts, number, read_page


def evaluated(pairs: Path, truth: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    """pss evaluate's report, as its --json line prints it (unchanged by the labels section)."""
    assert main(["evaluate", "--pairs", str(pairs), "--truth", str(truth), "--json"]) == 0
    report: dict[str, float] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return report


def test_evaluate_on_a_matched_run_adds_curves_calibration_and_groups(
    with_matcher: Path, ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_uri = copy_run(with_matcher, tmp_path / with_matcher.name)
    pairs = Path(layout.similar_items(str(run_uri)))
    figures = evaluated(pairs, ag_subset.matches_path, capsys)
    recorded = record_evaluation(str(pairs), str(ag_subset.matches_path), figures)
    assert recorded.evaluation_uri == reporting.evaluation_uri(str(run_uri)) and recorded.page_uri == reporting.page_uri(str(run_uri))
    assert recorded.describe().startswith(f"report  {recorded.page_uri} now has a labels section")

    kept = storage.read_json(recorded.evaluation_uri)
    assert kept["run_id"] == run_uri.name and kept["figures"] == figures
    curves = {curve["name"]: curve for curve in kept["precision_recall"]}
    assert list(curves) == ["match_probability", "score", "dense", "lexical"]
    # The curves' last point accepts every published pair: recall is the share of true pairs the run published at all.
    assert curves["match_probability"]["recall"][-1] == pytest.approx(
        figures["true_pairs_scored"] / figures["true_pairs_in_recall"], abs=1e-4
    )
    assert sum(b["pairs"] for b in kept["calibration"]) == figures["pairs_scored"]
    assert sum(size["groups"] for size in kept["group_sizes"]) == figures["duplicate_groups"]

    sections = read_page(Path(recorded.page_uri))
    # The precision–recall curve, calibration, group sizes, and the scores of true matches against the rest.
    assert sections["labels"].charts == 4 and sum(s.charts for s in sections.values()) == 8
    listed = {row["pss evaluate figure"]: row["value"] for row in as_dicts(sections["labels"].tables[-1])}
    assert number(listed["recall@10"]) == pytest.approx(figures["recall@10"], abs=1e-4)
    assert str(ag_subset.matches_path) in sections["labels"].text


def test_evaluate_through_out_redraws_the_page_out_shows(
    ag_run: Run, ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_out(ag_run.out_dir, tmp_path / "out")
    run_uri = out / "runs" / run_folder(ag_run).name
    before = (ag_run.out_dir / "report.html").read_text(encoding="utf-8")
    figures = evaluated(out / "similar_items.parquet", ag_subset.matches_path, capsys)
    recorded = record_evaluation(str(out / "similar_items.parquet"), str(ag_subset.matches_path), figures)
    assert recorded.page_uri == reporting.page_uri(str(run_uri))
    # OUT/report.html leads, through OUT/current, to the run's gathered page: linked anew to the redrawn file.
    assert os.path.samefile(out / "report.html", recorded.page_uri)
    sections = read_page(out / "report.html")
    # Without a matcher: the precision–recall curves and the scores by label.
    assert sections["labels"].charts == 2 and "No labels yet" not in sections["labels"].text
    assert (ag_run.out_dir / "report.html").read_text(encoding="utf-8") == before


def test_the_report_step_keeps_the_labels_and_ignores_another_runs(
    with_matcher: Path, ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_uri = copy_run(with_matcher, tmp_path / "run")
    pairs = layout.similar_items(str(run_uri))
    record_evaluation(pairs, str(ag_subset.matches_path), evaluated(Path(pairs), ag_subset.matches_path, capsys))
    # A report step run again (an Airflow retry) draws the labels it finds.
    assert read_page(Path(write_page(str(run_uri), storage.read_json(layout.run_summary(str(run_uri))))))["labels"].charts == 4
    # Another run's evaluation.json (a run folder copied under a new id) is not this run's.
    assert run_evaluation(str(run_uri), with_matcher.name) is not None and run_evaluation(str(run_uri), "run-other") is None


def test_pairs_of_no_run_get_their_evaluation_beside_them(
    ag_run: Run, ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = tmp_path / "loose" / "pairs.parquet"
    loose.parent.mkdir()
    shutil.copy(ag_run.out_dir / "similar_items.parquet", loose)
    recorded = record_evaluation(str(loose), str(ag_subset.matches_path), evaluate(str(loose), str(ag_subset.matches_path)))
    assert recorded.page_uri is None and recorded.evaluation_uri == str(loose.parent / "evaluation.json")
    assert storage.read_json(recorded.evaluation_uri)["run_id"] is None
    assert "no run's" in recorded.describe()
