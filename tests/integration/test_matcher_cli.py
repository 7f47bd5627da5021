"""Match decisions end to end on the real subset: label half the items' candidate pairs from the true matches,
pss train-matcher, then pss run with the matcher on two days, pss evaluate on the other half, pss label-queue."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pss_ops.cli import main
from pss_ops.config import AppConfig
from tests.conftest import SNAPSHOT, Run, Subset, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def labels(ag_run: Run, ag_subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/labels_from_truth.py over the first run's published pairs: train_pairs.csv, test_items.csv, test_truth.csv."""
    out = tmp_path_factory.mktemp("labels")
    argv = [sys.executable, str(ROOT / "examples" / "labels_from_truth.py"), "--pairs", str(ag_run.out_dir / "similar_items.parquet")]
    subprocess.run([*argv, "--truth", str(ag_subset.matches_path), "--out-dir", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def trained(labels: Path, ag_subset: Subset, warm_config: AppConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A config with the trained matcher set, and its id (as a user pastes it in)."""
    root = tmp_path_factory.mktemp("matcher")
    config_path = write_config(warm_config, root / "app.yaml")
    registry = root / "registry"
    argv = ["train-matcher", "--config", str(config_path), "--catalog", str(ag_subset.catalog)]
    argv += ["--pairs", str(labels / "train_pairs.csv"), "--registry", str(registry), "--report", str(root / "report.json")]
    assert main(argv) == 0
    matcher_id = json.loads((root / "report.json").read_text())["matcher_id"]
    data = yaml.safe_load(config_path.read_text())
    data["matcher"] = {"registry_uri": str(registry), "model_id": matcher_id}
    matched = root / "matched.yaml"
    matched.write_text(yaml.safe_dump(data), encoding="utf-8")
    return matched, matcher_id


def test_train_matcher_prints_only_the_id(
    labels: Path, ag_subset: Subset, warm_config: AppConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(warm_config, tmp_path / "app.yaml")
    before = config_path.read_text()
    argv = ["train-matcher", "--config", str(config_path), "--catalog", str(ag_subset.catalog)]
    assert main([*argv, "--pairs", str(labels / "train_pairs.csv"), "--registry", str(tmp_path / "registry")]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"matcher-[0-9a-f]{16}\n", out)
    assert (tmp_path / "registry" / out.strip() / "trees.txt").read_text().startswith("tree\n")
    assert "R@P90" in err and "not promoted" in err and config_path.read_text() == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda rows: rows.assign(id_b=rows["id_b"].where(rows.index != 3, "amazon:not-in-catalog")),
            r"row 4 \(line 5\): id_b 'amazon:not-in-catalog' is not an accepted item",
        ),
        (
            lambda rows: rows.assign(label=rows["label"].astype(str).where(rows.index != 6, "2")),
            r"row 7 \(line 8\): label must be 0 or 1, got '2'",
        ),
        (lambda rows: rows.assign(label=0), r"every pair is labelled non-matches"),
    ],
)
def test_train_matcher_refuses_bad_labels_naming_the_row(
    edit: object, message: str, labels: Path, ag_subset: Subset, warm_config: AppConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = pd.read_csv(labels / "train_pairs.csv", dtype=str)
    bad = tmp_path / "bad.csv"
    edit(rows).to_csv(bad, index=False)  # type: ignore[operator]
    config_path = write_config(warm_config, tmp_path / "app.yaml")
    argv = ["train-matcher", "--config", str(config_path), "--catalog", str(ag_subset.catalog), "--pairs", str(bad)]
    assert main([*argv, "--registry", str(tmp_path / "registry")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pss: error:") and re.search(message, last), err
    assert not (tmp_path / "registry").exists()


def test_runs_with_the_matcher_publish_probabilities_and_stable_groups(
    trained: tuple[Path, str], labels: Path, ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, matcher_id = trained
    out = tmp_path / "out"
    groups_by_day = {}
    for day in (SNAPSHOT, SNAPSHOT + dt.timedelta(days=1)):
        argv = [
            "run",
            "--config",
            str(config_path),
            "--catalog",
            str(ag_subset.catalog),
            "--out",
            str(out),
            "--snapshot-date",
            day.isoformat(),
        ]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert f"matcher {matcher_id}" in printed and "duplicate groups" in printed
        groups_by_day[day] = pq.read_table(out / "duplicate_groups.parquet").to_pandas()

    rows = pq.read_table(out / "similar_items.parquet").to_pandas()
    assert rows["match_probability"].notna().all() and rows["match_probability"].between(0, 1).all()
    # Each query's list is ranked by match probability.
    for _, listed in rows.groupby("query_item_id"):
        assert listed.sort_values("rank")["match_probability"].is_monotonic_decreasing

    first, second = groups_by_day.values()
    assert len(first) > 50 and (first.groupby("group_id").size() >= 2).all()
    # A pair alone links only at the threshold or above; a larger group may hold a weaker scored pair.
    pairs_only = first[first["group_size"] == 2]
    assert (pairs_only["weakest_link"] >= 0.5).all() and first["weakest_link"].between(0, 1).all()
    assert (first["group_size"] == first.groupby("group_id")["item_id"].transform("size")).all()
    # The same catalog on the next day: every group keeps its id.
    assert set(zip(first["group_id"], first["item_id"])) == set(zip(second["group_id"], second["item_id"]))

    with sqlite3.connect(out / "warehouse.sqlite") as db:
        per_day = dict(db.execute("SELECT snapshot_date, COUNT(*) FROM duplicate_groups GROUP BY snapshot_date").fetchall())
        nulls = db.execute("SELECT COUNT(*) FROM similar_items WHERE match_probability IS NULL").fetchone()[0]
    assert per_day == {SNAPSHOT.isoformat(): len(first), (SNAPSHOT + dt.timedelta(days=1)).isoformat(): len(second)} and nulls == 0

    # The held-out half: every true pair of it counts in recall, found or not.
    argv = ["evaluate", "--pairs", str(out / "similar_items.parquet"), "--truth", str(labels / "test_truth.csv")]
    assert main([*argv, "--items", str(labels / "test_items.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["true_pairs_in_recall"] == len(pd.read_csv(labels / "test_truth.csv"))
    assert report["R@P90"] > 0.3 and report["best_f1"] > 0.6 and report["group_pair_precision"] > 0.6

    queue_path = tmp_path / "queue.csv"
    assert main(["label-queue", "--run", str(out), "--n", "30", "--out", str(queue_path)]) == 0
    queue = pd.read_csv(queue_path, dtype=str, keep_default_na=False)
    # The pairs the matcher is least sure of: nearer 0.5 than the published pairs are on average.
    uncertainty = (queue["match_probability"].astype(float) - 0.5).abs()
    assert len(queue) == 30 and (queue["label"] == "").all()
    assert uncertainty.mean() < (rows["match_probability"] - 0.5).abs().mean()


def test_a_matcher_is_refused_by_a_config_whose_retrievers_changed(
    trained: tuple[Path, str], ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, matcher_id = trained
    data = yaml.safe_load(config_path.read_text())
    data["retrievers"] = [r for r in data["retrievers"] if r["type"] == "dense"]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data), encoding="utf-8")
    argv = ["run", "--config", str(changed), "--catalog", str(ag_subset.catalog), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("pss: error:") and matcher_id in last and "retrain it with pss train-matcher" in last
    assert not (tmp_path / "out" / "similar_items.parquet").exists()
