"""pss review in chromium: walk the label queue of a run with a trained matcher, label two pairs by clicking, check the CSV."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pss_ops.matching.training import read_labelled_pairs
from pss_ops.review.server import ReviewServer, open_review
from tests.browser.conftest import PageWatch


@pytest.fixture
def review(matched_run: Path, tmp_path: Path) -> Iterator[ReviewServer]:
    server = open_review(str(matched_run), str(tmp_path / "labelled.csv"), port=0, queue_size=50)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def shown_pair(watch: PageWatch) -> tuple[str, str]:
    ids = watch.page.locator("#queue-card .pair .item .id").all_text_contents()
    return ids[0], ids[1]


def test_walk_the_queue_and_label_two_pairs(review: ReviewServer, watched_page: PageWatch, artifacts: Path) -> None:
    page = watched_page.page
    page.goto(review.url)
    progress = page.locator("#queue-progress")
    progress.filter(has_text="pair 1 of 50").wait_for()
    assert page.locator("#pair-count").text_content().endswith("queue: least sure first")  # type: ignore[union-attr]
    first = shown_pair(watched_page)
    assert (first[0], first[1]) == review.data.queue[0]
    assert "match probability 0." in page.locator("#queue-card .meta").text_content()  # type: ignore[operator]

    page.get_by_role("button", name="Match (1)").click()
    progress.filter(has_text="pair 2 of 50 · 49 without a label").wait_for()
    second = shown_pair(watched_page)
    assert second == review.data.queue[1]
    page.get_by_role("button", name="Not a match (0)").click()
    progress.filter(has_text="pair 3 of 50 · 48 without a label").wait_for()
    assert page.locator("#labelled").text_content() == "2"

    page.keyboard.press("ArrowLeft")  # back to the pair just labelled: shown as such
    progress.filter(has_text="pair 2 of 50").wait_for()
    assert page.locator("#queue-card .badge").text_content() == "labelled: not a match"
    assert page.locator("#queue-card .no").get_attribute("aria-pressed") == "true"
    page.screenshot(path=str(artifacts / "review_queue.png"), full_page=True)

    labelled = read_labelled_pairs(review.data.labels.uri)
    assert list(zip(labelled["id_a"], labelled["id_b"], labelled["label"])) == [(*first, 1), (*second, 0)]
    assert pd.read_csv(review.data.labels.uri).columns.tolist() == ["id_a", "id_b", "label"]

    # Find an item by words of its title and see its candidates, the labelled pair among them.
    title = page.locator("#queue-card .item h3").first.text_content() or ""
    page.get_by_role("tab", name="Find an item").click()
    page.locator("#q").fill(title[:60])
    page.locator("#q").press("Enter")
    page.locator("#results button").first.wait_for()
    page.locator("#results li", has_text=second[0]).locator("button").click()
    page.locator("#query-view .pair").first.wait_for()
    assert page.locator("#query-view .pair").count() == len(review.data.query(second[0])["pairs"])
    assert page.locator("#query-view .pair.labelled-0").count() == 1
    page.screenshot(path=str(artifacts / "review_query.png"), full_page=True)

    assert watched_page.console_errors == []
    assert all(url.startswith(review.url) for url in watched_page.requests), watched_page.requests
