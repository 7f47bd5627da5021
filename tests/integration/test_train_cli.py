"""`pss train` end to end: mine, clean, train, evaluate on held-out queries, register; promotion is a config edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pss_ops.cli import main
from pss_ops.config import load_config, parse_config
from pss_ops.learning.registry import list_models, load_model
from pss_ops.orchestration.run import run_pipeline
from tests.conftest import SNAPSHOT, Subset

CONFIG = {
    "application": "train_cli",
    "features": [{"type": "char_ngram", "dims": 128}],
    "k": 5,
    "post_filter": {"different": ["seller"]},
    "catalog": {"partition_size": 300},
    "quality": {"recall_sample": 50},
}


def test_train_registers_a_model_that_pss_run_can_use(ag_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "app.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    training = tmp_path / "training.yaml"
    training.write_text(yaml.safe_dump({"widths": [64], "epochs": 3, "batch_size": 128}), encoding="utf-8")
    registry = tmp_path / "registry"
    before = config_path.read_text(encoding="utf-8")

    argv = ["train", "--config", str(config_path), "--catalog", str(ag_subset.catalog)]
    argv += ["--pairs", f"{ag_subset.matches_path}:labelled", "--registry", str(registry)]
    argv += ["--training-config", str(training), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    report = json.loads((tmp_path / "out" / "train_report.json").read_text(encoding="utf-8"))
    model_id = report["model_id"]
    assert list_models(str(registry)) == [model_id] and model_id in printed and "not promoted" in printed
    assert config_path.read_text(encoding="utf-8") == before
    # Held-out evaluation: the same held-out pairs scored with both embeddings.
    for name in ("compound", "model"):
        figures = report["holdout"][name]["labelled"]
        assert figures["positives"] > 20 and figures["negatives"] >= 5 * figures["positives"]
        assert 0.0 <= figures["recall@1"] <= figures["recall@10"] <= 1.0
    assert report["holdout"]["compound"]["labelled"]["positives"] == report["holdout"]["model"]["labelled"]["positives"]
    assert report["training"]["epochs_run"] <= 3 and report["training_config"]["widths"] == [64]
    _, spec = load_model(str(registry), model_id)
    assert spec.compound_model_id == load_config(config_path).compound_model_id

    # Promotion is this edit; the run then embeds through the model and caches under its id.
    promoted = parse_config({**CONFIG, **report["promote_with"]})
    summary = run_pipeline(
        promoted, catalog_uri=str(ag_subset.catalog), out_dir=str(tmp_path / "run"), snapshot_date=SNAPSHOT, progress=print
    )
    assert summary["model_id"] == model_id
    assert summary["counts"]["rows_published"] > 0 and summary["search"]["recall_at_k"] >= 0.99


def test_pairs_naming_items_outside_the_catalog_fail_loudly(ag_subset: Subset, tmp_path: Path) -> None:
    config_path = tmp_path / "app.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(ag_subset.matches_path.read_text(encoding="utf-8") + "amazon:not-in-catalog,google:nope\n", encoding="utf-8")
    argv = ["train", "--config", str(config_path), "--catalog", str(ag_subset.catalog), "--pairs", str(pairs)]
    argv += ["--registry", str(tmp_path / "registry"), "--out", str(tmp_path / "out"), "--epochs", "1"]
    assert main(argv) == 2
    assert not (tmp_path / "registry").exists()


def test_part_number_negatives_train_as_their_own_task_and_are_never_evaluated(ag_subset: Subset, tmp_path: Path) -> None:
    config_path = tmp_path / "app.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    reports = {}
    for per_item in (0, 2):
        training = tmp_path / f"training-{per_item}.yaml"
        training.write_text(yaml.safe_dump({"widths": [32], "epochs": 1, "part_number_negatives": per_item}), encoding="utf-8")
        argv = ["train", "--config", str(config_path), "--catalog", str(ag_subset.catalog), "--pairs", str(ag_subset.matches_path)]
        argv += ["--registry", str(tmp_path / "registry"), "--training-config", str(training), "--out", str(tmp_path / f"out-{per_item}")]
        assert main(argv) == 0
        reports[per_item] = json.loads((tmp_path / f"out-{per_item}" / "train_report.json").read_text(encoding="utf-8"))

    counts = reports[2]["training"]["pair_counts"]
    assert set(counts) == {"labelled", "part_numbers"} and set(reports[0]["training"]["pair_counts"]) == {"labelled"}
    synthetic = counts["part_numbers"]
    assert synthetic["train_positives"] == synthetic["validation_positives"] == 0
    negatives = synthetic["train_negatives"] + synthetic["validation_negatives"]
    assert negatives > 0 and negatives % 2 == 0  # two per catalog item that has a part number
    assert reports[2]["training"]["task_weights"] == {"labelled": 1.0, "part_numbers": 1.0}
    # The held-out evaluation is the same pairs with or without the synthetic items: they are never candidates.
    assert reports[2]["holdout"]["compound"] == reports[0]["holdout"]["compound"]
    assert reports[2]["model_id"] != reports[0]["model_id"]
