"""pss label-queue on the subset run: pairs spread over categories and scores, labels empty, labelled pairs left out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pss_ops.matching.label_queue import QUEUE_COLUMNS, label_queue, write_queue
from pss_ops.quality.matching import pair_keys
from tests.unit.conftest import Stepped


def test_queue_without_a_matcher_spans_categories_and_the_score_range(stepped: Stepped, tmp_path: Path) -> None:
    queue = label_queue(stepped.ctx.run_uri, 40)
    assert list(queue.columns) == list(QUEUE_COLUMNS) and len(queue) == 40
    assert (queue["label"] == "").all() and queue["title_a"].notna().all() and queue["title_b"].notna().all()
    # Dealt across categories in turn, so both categories give half.
    assert queue["category"].value_counts().tolist() == [20, 20]
    # Unordered pairs, each once.
    assert len(set(pair_keys(queue["id_a"], queue["id_b"]))) == 40
    published = pd.read_parquet(stepped.published.parquet_uri)
    assert queue["score"].max() > published["score"].quantile(0.9) and queue["score"].min() < published["score"].quantile(0.1)

    out = tmp_path / "queue.csv"
    write_queue(queue.head(10), str(out))
    next_round = label_queue(stepped.ctx.run_uri, 40, exclude=[str(out)])
    assert not set(pair_keys(next_round["id_a"], next_round["id_b"])) & set(pair_keys(queue["id_a"][:10], queue["id_b"][:10]))
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns[:3]) == ["id_a", "id_b", "label"] and (written["label"] == "").all()
