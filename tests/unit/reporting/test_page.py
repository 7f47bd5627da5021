"""The run report page on real runs of the Amazon–Google subset: what it shows agrees with the run's files, every
catalog value is escaped, and nothing in it points outside the file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pss_ops import layout, reporting, storage
from pss_ops.quality.matching import pair_keys
from pss_ops.reporting.page import NAVIGATION, render_page
from pss_ops.reporting.published import retriever_score_columns
from tests.conftest import Run, Subset
from tests.report_runs import copy_run, rewrite_titles, run_folder
from tests.unit.reporting.conftest import as_dicts, number, read_page

ANCHORS = [anchor for anchor, _ in NAVIGATION]


def published(run_uri: Path) -> pd.DataFrame:
    return pd.read_parquet(layout.similar_items(str(run_uri)))


def test_pss_run_shows_the_report_at_the_top_of_out(ag_run: Run) -> None:
    page = ag_run.out_dir / "report.html"
    written = Path(reporting.page_uri(str(run_folder(ag_run))))
    assert os.readlink(page) == "current/report.html"
    # Through OUT/current, the run's own file: gathered as a hard link, not a copy.
    assert os.path.samefile(page, written) and ag_run.summary["report_page"] == str(written)


def test_sections_charts_and_counts_of_a_run_without_a_matcher(ag_run: Run, ag_subset: Subset, tmp_path: Path) -> None:
    # The page as the report step drew it, before any label: other tests run pss evaluate on ag_run's pairs, which
    # records its figures with the run and redraws the page (test_labels.py covers that).
    run = copy_run(run_folder(ag_run), tmp_path / "run")
    Path(reporting.evaluation_uri(str(run))).unlink(missing_ok=True)
    summary = storage.read_json(layout.run_summary(str(run)))  # as the report step had it (no time of its own yet)
    (tmp_path / "report.html").write_text(render_page(str(run), summary), encoding="utf-8")
    sections = read_page(tmp_path / "report.html")
    assert list(sections) == ANCHORS
    # Time per step, the score histograms, the retrievers' overlap; no matcher, no labels yet.
    assert {name: s.charts for name, s in sections.items() if s.charts} == {"steps": 1, "scores": 1, "overlap": 1}
    assert "pss evaluate --pairs" in sections["labels"].text

    counts = dict(row for row in sections["steps"].tables[0][1:])
    assert number(counts["rows published"]) == ag_run.summary["counts"]["rows_published"] == len(published(run_folder(ag_run)))
    steps = [row[0] for row in sections["steps"].tables[1][1:]]
    assert steps == ["plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish"]
    rejects = sections["rejects"]
    assert f"0 of {len(ag_subset.frame):,} rows rejected" in rejects.text and ag_run.summary["rejects"]["file"] in rejects.text


def test_per_category_table_agrees_with_the_parquet(ag_run: Run, ag_subset: Subset) -> None:
    rows = published(run_folder(ag_run))
    k = ag_run.summary["search"]["k"]
    table = as_dicts(read_page(ag_run.out_dir / "report.html")["categories"].tables[0])
    by_category = {row["category"]: row for row in table}
    accepted = ag_subset.frame.groupby("category").size()
    for category, listed in rows.groupby("category"):
        shown = by_category[str(category)]
        per_query = listed.groupby("query_item_id").size()
        assert number(shown["rows published"]) == len(listed)
        assert number(shown["accepted rows (queries)"]) == accepted[category]
        assert number(shown["queries with results"]) == len(per_query)
        assert number(shown["queries short of k"]) == accepted[category] - int((per_query == k).sum())
    assert number(by_category["all"]["rows published"]) == len(rows)


def test_overlap_and_confident_pairs_agree_with_the_parquet(ag_run: Run, ag_subset: Subset) -> None:
    rows = published(run_folder(ag_run))
    sections = read_page(ag_run.out_dir / "report.html")
    overlap = {row["found by"]: number(row["published pairs"]) for row in as_dicts(sections["overlap"].tables[0])}
    assert overlap == rows["found_by"].value_counts().to_dict()

    most, least = (as_dicts(table) for table in sections["pairs"].tables)
    assert len(most) == len(least) == 20
    # Each unordered pair once, by fused score (no matcher).
    best = rows.assign(pair=pair_keys(rows["query_item_id"], rows["candidate_item_id"])).sort_values("score", ascending=False)
    best = best.drop_duplicates("pair")
    assert [number(row["score"]) for row in most] == pytest.approx(best["score"].head(20).tolist(), abs=5e-4)
    assert [number(row["score"]) for row in least] == pytest.approx(best["score"].tail(20)[::-1].tolist(), abs=5e-4)
    titles = ag_subset.frame.set_index("item_id")["title"]
    for row in most + least:
        for side in ("query item", "candidate item"):
            item = row[side].rsplit(" ", 1)[-1]
            assert row[side] == f"{' '.join(titles[item].split())} {item}"


def test_a_run_with_a_matcher_shows_probabilities_and_groups(with_matcher: Path) -> None:
    rows = published(with_matcher)
    sections = read_page(Path(reporting.page_uri(str(with_matcher))))
    assert {name: s.charts for name, s in sections.items() if s.charts} == {"steps": 1, "scores": 2, "overlap": 1}
    groups = pd.read_parquet(layout.duplicate_groups(str(with_matcher)))
    summary = storage.read_json(layout.run_summary(str(with_matcher)))
    by_category = {row["category"]: row for row in as_dicts(sections["categories"].tables[0])}
    for category, members in groups.groupby("category"):
        shown = by_category[str(category)]
        assert number(shown["duplicate groups"]) == members["group_id"].nunique()
        assert number(shown["items in groups"]) == len(members)
        matched = rows[(rows["category"] == category) & (rows["match_probability"] >= summary["matching"]["match_threshold"])]
        assert number(shown["pairs at or above the threshold"]) == len(matched)
    most = as_dicts(sections["pairs"].tables[0])
    probabilities = [number(row["match probability"]) for row in most]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] == pytest.approx(rows["match_probability"].max(), abs=5e-4)


def test_titles_are_escaped(ag_run: Run, tmp_path: Path) -> None:
    run_uri = copy_run(run_folder(ag_run), tmp_path / "run")
    rows = published(run_uri).sort_values("score", ascending=False)
    query, candidate = rows.iloc[0][["query_item_id", "candidate_item_id"]]
    hostile = {query: "<script>alert(1)</script>", candidate: '"><img src=x onerror=alert(2)> & <b>bold</b>'}
    rewrite_titles(run_uri, hostile)
    page = render_page(str(run_uri), storage.read_json(layout.run_summary(str(run_uri))))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script" not in page and "<img" not in page and "<b>bold" not in page


def test_the_page_points_at_nothing_outside_itself(ag_run: Run, with_matcher: Path) -> None:
    for page in (ag_run.out_dir / "report.html", Path(reporting.page_uri(str(with_matcher)))):
        text = page.read_text(encoding="utf-8")
        assert re.search(r"<(script|link|img|iframe|object|embed)\b", text, re.IGNORECASE) is None
        assert re.search(r"\ssrc\s*=", text, re.IGNORECASE) is None and "@import" not in text
        # In-page anchors and the charts' own ids only; item ids that are URLs appear as text, never as a link.
        assert {href[0] for href in re.findall(r'href\s*=\s*"([^"]*)"', text)} == {"#"}
        assert re.findall(r"url\(\s*(.)", text) and set(re.findall(r"url\(\s*(.)", text)) == {"#"}
        assert "default-src 'none'" in text


def test_retriever_scores_are_parsed_with_nulls_integers_and_unknown_names() -> None:
    column = pa.array(['{"dense": 0.5, "lexical": 1}', None, '{"lexical": 0, "image": 0.3}', '{"dense": -0.25}'], pa.string())
    parsed = retriever_score_columns(column, ["dense", "lexical"])
    np.testing.assert_array_equal(parsed["dense"], [0.5, np.nan, np.nan, -0.25])
    np.testing.assert_array_equal(parsed["lexical"], [1.0, np.nan, 0.0, np.nan])
    assert retriever_score_columns(pa.array([], pa.string()), ["dense"])["dense"].shape == (0,)
