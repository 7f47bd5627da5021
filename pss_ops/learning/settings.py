"""Training settings: the SiameseNet's architecture (declared once), TrainingConfig, and reading a training YAML."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pss_ops import storage

# Share of each task's query items held out to compare the trained model with the compound embedding.
DEFAULT_HOLDOUT_FRACTION = 0.3


class SiameseArchitecture(BaseModel):
    """The shape of the SiameseNet's shared branch; TrainingConfig and ModelSpec inherit it, SiameseNet is built from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Output widths of the Linear -> BatchNorm1d blocks; the last is the learned embedding's (paper: 4 x 256).
    widths: tuple[Annotated[int, Field(ge=1)], ...] = Field((256, 256, 256, 256), min_length=1)
    # A ReLU after the last block too; off, as in paper eq. 1 (see SiameseNet).
    last_activation: bool = False
    # Dropout after each hidden block's ReLU.
    dropout: float = Field(0.0, ge=0, lt=1)
    # > 0: the output concatenates the (weighted) compound input with the learned part; see SiameseNet.
    skip_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    # Learn one weight per compound feature block (the network then needs the blocks' widths).
    learn_feature_weights: bool = False

    def architecture(self) -> SiameseArchitecture:
        """These fields alone, also of a subclass (a TrainingConfig or a ModelSpec)."""
        return SiameseArchitecture(**{name: getattr(self, name) for name in SiameseArchitecture.model_fields})


class SiameseSettings(SiameseArchitecture):
    """The architecture and the contrastive loss's margin: what a training run sets and a trained model's spec records."""

    margin: float = Field(1.0, gt=0, allow_inf_nan=False)

    def siamese_settings(self) -> dict[str, Any]:
        """These fields as keyword arguments (a TrainingConfig's, for the ModelSpec of the model it trains)."""
        return {name: getattr(self, name) for name in SiameseSettings.model_fields}


class TrainingConfig(SiameseSettings):
    """Architecture and optimisation settings of one training run."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-5, ge=0, allow_inf_nan=False)
    # Synthetic negatives per catalog item with a part number: a copy with one of its digits changed, trained as
    # the "part_numbers" task (pss_ops.learning.part_numbers). 0 leaves them out.
    part_number_negatives: int = Field(0, ge=0)
    # alpha_t of eq. 2; tasks not listed weigh 1.
    task_weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = {}
    # Fraction of each task's query items (id_a) held out for validation and early stopping; 0 disables both.
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    # Epochs without a lower weighted validation loss before training stops.
    patience: int = Field(5, ge=1)
    # The one seed of a run: the held-out split, negative mining and training all use it (see read_training_config).
    seed: int = 0
    device: str = "cpu"

    def weights_for(self, tasks: Sequence[str]) -> dict[str, float]:
        """alpha_t for every task (1 unless configured); unknown configured tasks raise ValueError."""
        unknown = sorted(set(self.task_weights) - set(tasks))
        if unknown:
            raise ValueError(f"task_weights names unknown task(s) {', '.join(map(repr, unknown))}; tasks are {sorted(tasks)}")
        return {task: float(self.task_weights.get(task, 1.0)) for task in tasks}


def read_training_config(
    uri: str | None,
    *,
    base: str | Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> TrainingConfig:
    """A TrainingConfig from a YAML of its fields (None: the defaults) and overrides; errors name the file.

    A relative local uri is resolved against base when one is given. The seed rule: an explicit seed overrides
    the YAML's; without one the YAML's applies, else 0. epochs and device, when given, override the YAML's.
    """
    settings: dict[str, Any] = {}
    source = "(no file)"
    if uri:
        source = storage.resolve(uri, base) if base is not None else uri
        try:
            loaded = yaml.safe_load(storage.read_text(source))
        except yaml.YAMLError as err:
            raise ValueError(f"training config {source} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"training config {source} must be a YAML mapping of TrainingConfig fields")
        settings = dict(loaded or {})
    settings.update({name: value for name, value in (("epochs", epochs), ("device", device)) if value is not None})
    # Always set, so the frozen copy of a run's settings (dump_training_config) names the seed it used.
    settings["seed"] = seed if seed is not None else settings.get("seed", 0)
    try:
        return TrainingConfig.model_validate(settings)
    except ValidationError as err:
        raise ValueError(f"training config {source}: {err}") from None


def dump_training_config(config: TrainingConfig) -> str:
    """The fields a config was given (a YAML's, plus overrides) as YAML that read_training_config reads back to it."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True), sort_keys=False)
