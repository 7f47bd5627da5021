"""prepare_training and the training report's text: what the training DAG's tasks call, without Airflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pss_ops.config import AppConfig, load_config, parse_config
from pss_ops.learning.pairs import parse_pair_source
from pss_ops.learning.settings import TrainingConfig, read_training_config
from pss_ops.orchestration.training import (
    comparison_text,
    default_registry_uri,
    prepare_training,
    resolve_runs_root,
    training_report_uri,
)
from tests.conftest import EXAMPLE_CONFIG, ROOT, write_config

RECIPE = ROOT / "examples" / "training" / "siamese.yaml"
MODEL = {"registry_uri": "/models", "model_id": "siamese-0123456789abcdef"}


def app_config(**fields: object) -> AppConfig:
    """The demo config with a relative catalog and a promoted model (training must drop it)."""
    data = load_config(EXAMPLE_CONFIG).model_dump(mode="json", exclude_none=True)
    return parse_config({**data, "catalog_uri": "data/catalog.csv", "embedding_model": MODEL, **fields}, "test config")


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    (tmp_path / "configs" / "training").mkdir(parents=True)
    (tmp_path / "configs" / "training" / "siamese.yaml").write_text(RECIPE.read_text())
    return str(write_config(app_config(), tmp_path / "configs" / "app.yaml"))


def test_prepare_training_freezes_the_settings_and_builds_the_step_arguments(config_path: str, tmp_path: Path) -> None:
    configs, runs = tmp_path / "configs", str(tmp_path / "runs")
    request = prepare_training(
        config_path,
        pairs=["pairs/m.csv:labelled", "s3://bucket/clicks.csv:co_click"],
        run_id="manual__2026-11-30T00:00:00+00:00",
        runs_root=runs,
        training_config="training/siamese.yaml",
        epochs=2,
        seed=3,
        device="cuda",
    )
    run_uri = f"{runs}/near_identical/training/manual__2026-11-30T00_00_00_00_00"
    assert request.run_uri == run_uri and request.run_id == "manual__2026-11-30T00_00_00_00_00"
    assert request.catalog_uri == str(configs / "data" / "catalog.csv")
    assert request.registry_uri == f"{runs}/models" == default_registry_uri(runs)
    assert request.pairs == [f"{configs / 'pairs' / 'm.csv'}:labelled", "s3://bucket/clicks.csv:co_click"]
    assert (request.seed, request.holdout) == (3, 0.3)
    assert request.train_arguments == [
        "--config", f"{run_uri}/config.yaml",
        "--catalog", str(configs / "data" / "catalog.csv"),
        "--pairs", f"{configs / 'pairs' / 'm.csv'}:labelled",
        "--pairs", "s3://bucket/clicks.csv:co_click",
        "--registry", f"{runs}/models",
        "--holdout", "0.3",
        "--seed", "3",
        "--training-config", f"{run_uri}/training.yaml",
    ]  # fmt: skip
    # The frozen config trains on the compound embedding: the promoted model is dropped, nothing else changes.
    assert load_config(request.config_uri) == app_config().model_copy(update={"embedding_model": None})
    # The frozen settings are the recipe with the overrides, and read back to the config trained with.
    recipe = yaml.safe_load(RECIPE.read_text())
    assert yaml.safe_load(Path(request.training_uri).read_text()) == {**recipe, "epochs": 2, "seed": 3, "device": "cuda"}
    assert read_training_config(request.training_uri) == TrainingConfig(**{**recipe, "epochs": 2, "seed": 3, "device": "cuda"})
    assert [parse_pair_source(p) for p in request.pairs] == [
        (str(configs / "pairs" / "m.csv"), "labelled"),
        ("s3://bucket/clicks.csv", "co_click"),
    ]
    assert request.as_dict()["train_arguments"] == request.train_arguments


def test_seed_is_the_param_then_the_yaml_then_zero(config_path: str, tmp_path: Path) -> None:
    seeded = tmp_path / "configs" / "seeded.yaml"
    seeded.write_text("widths: [8]\nseed: 7\n")
    common = {"pairs": ["m.csv:labelled"], "runs_root": str(tmp_path / "runs")}
    assert prepare_training(config_path, run_id="a", training_config="seeded.yaml", **common).seed == 7
    assert prepare_training(config_path, run_id="b", training_config="seeded.yaml", seed=0, **common).seed == 0
    request = prepare_training(config_path, run_id="c", **common)
    assert request.seed == 0 and request.train_arguments[request.train_arguments.index("--seed") + 1] == "0"
    assert yaml.safe_load(Path(request.training_uri).read_text()) == {"seed": 0}


def test_registry_param_is_resolved_against_the_config_directory(config_path: str, tmp_path: Path) -> None:
    common = {"pairs": ["m.csv:labelled"], "runs_root": str(tmp_path / "runs")}
    assert prepare_training(config_path, run_id="r", registry_uri="models", **common).registry_uri == str(tmp_path / "configs" / "models")
    assert prepare_training(config_path, run_id="s", registry_uri="s3://b/models", **common).registry_uri == "s3://b/models"


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"pairs": []}, "no training pairs"),
        ({"pairs": ["m.csv"]}, r"pairs entry 'm.csv' must be '<pairs.csv>:<task>'"),
        ({"pairs": ["s3://b/m.csv"]}, r"must be '<pairs.csv>:<task>'"),
        ({"runs_root": None}, "no runs location"),
        ({"holdout": 0.0}, r"holdout must be a fraction in \(0, 1\)"),
        ({"training_config": "bad.yaml"}, r"(?s)training config .*bad\.yaml: .*widht"),
        ({"epochs": 0}, r"(?s)training config \(no file\): .*epochs"),
    ],
)
def test_bad_inputs_fail_before_anything_is_written(config_path: str, tmp_path: Path, changes: dict[str, object], pattern: str) -> None:
    (tmp_path / "configs" / "bad.yaml").write_text("widths: [8]\nwidht: 3\n")
    arguments: dict[str, object] = {"pairs": ["m.csv:labelled"], "run_id": "r", "runs_root": str(tmp_path / "runs"), **changes}
    with pytest.raises(ValueError, match=pattern):
        prepare_training(config_path, **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "runs").exists()


def test_a_config_without_a_catalog_is_refused(tmp_path: Path) -> None:
    path = write_config(app_config().model_copy(update={"catalog_uri": None}), tmp_path / "app.yaml")
    with pytest.raises(ValueError, match="sets no catalog_uri"):
        prepare_training(str(path), pairs=["m.csv:t"], run_id="r", runs_root=str(tmp_path / "runs"))


def test_runs_root_is_the_setting_then_the_config_relative_to_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = app_config(runs_uri="runs")
    path = str(tmp_path / "configs" / "app.yaml")
    assert resolve_runs_root(config, path) == str(tmp_path / "configs" / "runs")
    assert resolve_runs_root(config, path, "elsewhere") == str(tmp_path / "elsewhere")
    assert resolve_runs_root(config, path, "s3://b/runs") == "s3://b/runs"
    assert resolve_runs_root(app_config(), path) is None
    assert training_report_uri("s3://b/runs/app/training/r") == "s3://b/runs/app/training/r/train/report.json"


def test_comparison_text_names_both_embeddings_and_how_to_promote() -> None:
    report = {
        "model_id": "siamese-0123456789abcdef",
        "registry_uri": "/models",
        "holdout": {
            "compound": {"labelled": {"recall@1": 0.5, "positives": 10, "note": "x"}},
            "model": {"labelled": {"recall@1": 0.75, "positives": 10, "note": "y"}, "clicks": {"recall@1": 0.25}},
        },
    }
    lines = comparison_text(report, "/configs/app.yaml").splitlines()
    assert lines == [
        "model siamese-0123456789abcdef saved in /models (NOT promoted)",
        "held-out pairs: compound → model",
        "  task labelled:",
        "    recall@1          0.5000 →    0.7500  (+0.2500)",
        "    positives             10 →        10",
        "    note                   x →         y",
        "  task clicks:",
        "    recall@1            None →      0.25",
        "to promote it, edit /configs/app.yaml (a reviewed change; training never does it):",
        "  embedding_model:",
        "    registry_uri: /models",
        "    model_id: siamese-0123456789abcdef",
    ]


def test_comparison_text_of_a_single_level_report() -> None:
    report = {"model_id": "siamese-0123456789abcdef", "holdout": {"compound": {"recall@1": 0.5}, "model": {"recall@1": 0.4}}}
    text = comparison_text(report, "app.yaml")
    assert "  recall@1          0.5000 →    0.4000  (-0.1000)" in text.splitlines()
    assert "task" not in text and "saved in None" in text
