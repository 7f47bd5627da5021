"""The run report in chromium, opened from disk: every chart renders, nothing is fetched, nothing logs an error,
and a title holding markup shows as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pss_ops import layout
from pss_ops.orchestration.evaluation import record_evaluation
from pss_ops.quality.evaluate import evaluate, evaluate_matching
from tests.browser.conftest import PageWatch
from tests.conftest import Subset
from tests.report_runs import copy_out, out_run_folder, rewrite_titles

HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)>"
# With a matcher and labels: seconds per step; the score and probability histograms; the overlap; the precision–recall
# curve, calibration, duplicate-group sizes and the scores by label.
CHARTS = 8


@pytest.fixture(scope="module")
def report_out(matched_run: Path, ag_subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the matched run's OUT, a hostile title on its most confident pair, evaluated against the true pairs."""
    out = copy_out(matched_run, tmp_path_factory.mktemp("report_page") / "out")
    run_uri = out_run_folder(out).name
    run_folder = out / "runs" / run_uri
    pairs = pd.read_parquet(layout.similar_items(str(run_folder))).sort_values("match_probability", ascending=False)
    rewrite_titles(run_folder, {pairs["query_item_id"].iloc[0]: HOSTILE})
    pairs_uri, truth = str(out / "similar_items.parquet"), str(ag_subset.matches_path)
    figures = {
        **evaluate(pairs_uri, truth),
        **evaluate_matching(pairs_uri, truth, threshold=0.5, groups_uri=str(out / "duplicate_groups.parquet")),
    }
    assert record_evaluation(pairs_uri, truth, figures).page_uri is not None
    return out


def test_the_report_renders_offline_with_every_chart(report_out: Path, watched_page: PageWatch, artifacts: Path) -> None:
    page = watched_page.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    url = (report_out / "report.html").resolve().as_uri()
    page.goto(url)
    page.wait_for_load_state("load")

    charts = page.locator("figure.chart svg")
    assert charts.count() == CHARTS
    for index in range(CHARTS):
        chart = charts.nth(index)
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 150 and box["height"] > 100, (index, box)
        # Drawn: bars, lines and text inside, not an empty frame.
        assert chart.locator("path").count() > 5 and chart.locator("text").count() > 3
    assert page.locator("section#labels figure.chart svg").count() == 4

    shown = page.locator("table.pairs td", has_text="<script>alert(1)</script>")
    assert shown.count() >= 1 and HOSTILE in shown.first.inner_text()
    assert page.locator("table.pairs img, table.pairs script").count() == 0 and dialogs == []

    page.screenshot(path=str(artifacts / "report_page.png"), full_page=True)
    assert watched_page.console_errors == []
    assert watched_page.requests == [url]
