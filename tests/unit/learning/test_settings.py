"""Training settings: the shipped recipe, YAML overrides, the seed rule, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pss_ops.learning.settings import TrainingConfig, dump_training_config, read_training_config
from tests.conftest import ROOT

RECIPE = ROOT / "examples" / "training" / "siamese.yaml"


def test_the_shipped_recipe_loads_unchanged_and_overrides_win() -> None:
    recipe = yaml.safe_load(RECIPE.read_text())
    assert "seed" not in recipe
    config = read_training_config(str(RECIPE))
    assert config == TrainingConfig(**recipe)
    # Relative to a base directory, as the training DAG resolves it against the config file's.
    overridden = read_training_config("training/siamese.yaml", base=ROOT / "examples", epochs=5, seed=2, device="cuda")
    assert overridden == TrainingConfig(**{**recipe, "epochs": 5, "seed": 2, "device": "cuda"})
    assert read_training_config(None) == TrainingConfig()


def test_seed_rule_explicit_then_yaml_then_zero(tmp_path: Path) -> None:
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text("widths: [8]\nseed: 7\n")
    assert read_training_config(str(seeded)).seed == 7
    assert read_training_config(str(seeded), seed=3).seed == 3
    assert read_training_config(str(seeded), seed=0).seed == 0  # an explicit 0 is a seed too
    assert read_training_config(str(RECIPE)).seed == 0
    assert read_training_config(None, seed=4).seed == 4


def test_the_frozen_yaml_holds_the_given_fields_and_reads_back_equal(tmp_path: Path) -> None:
    config = read_training_config(str(RECIPE), epochs=2)
    frozen = tmp_path / "training.yaml"
    frozen.write_text(dump_training_config(config))
    assert yaml.safe_load(frozen.read_text()) == {**yaml.safe_load(RECIPE.read_text()), "epochs": 2, "seed": 0}
    assert read_training_config(str(frozen)) == config
    assert yaml.safe_load(dump_training_config(read_training_config(None, epochs=3))) == {"epochs": 3, "seed": 0}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("widths: [256]\nwidht: 3\n", r"(?s)bad\.yaml: .*widht.*Extra inputs"),
        ("- 256\n", r"bad\.yaml must be a YAML mapping of TrainingConfig fields"),
        ("widths: [256\n", r"bad\.yaml is not valid YAML"),
        ("dropout: 1.5\n", r"(?s)bad\.yaml: .*dropout"),
    ],
)
def test_errors_name_the_file(tmp_path: Path, text: str, pattern: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_training_config(str(bad))


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_training_config("missing.yaml", base=tmp_path)
    with pytest.raises(ValueError, match=r"(?s)\(no file\): .*epochs"):
        read_training_config(None, epochs=0)


def test_train_model_refuses_a_second_seed(tmp_path: Path) -> None:
    """The split and mining seed is the training config's: a different one passed beside it is an error, not ignored."""
    from pss_ops.config import load_config
    from pss_ops.learning.pipeline import train_model

    config = load_config(ROOT / "examples" / "near_identical.yaml")
    common = {"catalog_uri": str(tmp_path / "none.csv"), "pair_sources": [], "registry_uri": str(tmp_path / "models")}
    with pytest.raises(ValueError, match="seed 2 differs from the training config's seed 1; a run has one seed"):
        train_model(config, training=TrainingConfig(seed=1), seed=2, **common)  # type: ignore[arg-type]
    assert not (tmp_path / "models").exists()
