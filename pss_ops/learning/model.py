"""The SiameseNet embedding model, its contrastive and multi-task losses, and its spec (paper §3.1.2)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, TypeAdapter, field_validator, model_validator
from torch import nn

from pss_ops.config import AppConfig, Feature, compound_id, feature_spec
from pss_ops.learning.settings import SiameseArchitecture, SiameseSettings

# Squared distances below this are clamped before the square root: sqrt has an infinite slope at 0.
_MIN_SQUARED_DISTANCE = 1e-12


class SiameseNet(nn.Module):
    """The shared branch FFN(.) of the SiameseNet: L x (Linear -> BatchNorm1d -> ReLU), unit-norm output.

    Paper eq. 1 applies the activation after every layer but the last: h = sigma(...) W^(L) + b^(L).
    The last block is therefore Linear -> BatchNorm1d without ReLU by default (``last_activation=False``):
    a ReLU output would confine every embedding to the positive orthant, where no two unit vectors are
    further apart than 90 degrees (cosine >= 0), wasting most of the sphere the index searches.
    ``forward`` L2-normalises the rows, so the index's inner product is the cosine similarity.
    Both branches of a training pair go through the same module (shared weights); forward them as one
    batch so BatchNorm normalises both with the same statistics.
    """

    # A registered buffer (moves with .to(device)); declared so type checkers see a tensor, not a module.
    _block_sizes: torch.Tensor

    def __init__(
        self,
        input_dim: int,
        architecture: SiameseArchitecture | None = None,
        *,
        feature_widths: Sequence[int] | None = None,
    ) -> None:
        """A fresh network on input_dim-wide rows (default architecture: the paper's 4 x 256).

        feature_widths, the widths of the input's compound feature blocks, is needed (and used) only when the
        architecture learns feature weights.
        """
        super().__init__()
        # Only the architecture's fields: a TrainingConfig or ModelSpec may be passed, neither is kept.
        self.architecture = (architecture or SiameseArchitecture()).architecture()
        if input_dim < 1:
            raise ValueError(f"input_dim must be at least 1, got {input_dim}")
        self.input_dim = int(input_dim)
        # With learned feature weights, one weight per compound feature block scales the input before both the
        # layers and the skip: the compound's hand-set weights become trainable, so a task can lean on the
        # feature that decides its matches. The learned weights are readable (feature_weights()).
        self.feature_widths: tuple[int, ...] | None = None
        if self.architecture.learn_feature_weights:
            if feature_widths is None:
                raise ValueError("learn_feature_weights needs the compound's feature_widths (e.g. [f.dim for f in app_config.features])")
            widths = tuple(int(w) for w in feature_widths)
            if min(widths, default=0) < 1 or sum(widths) != input_dim:
                raise ValueError(f"feature_widths {widths} must be positive and sum to input_dim {input_dim}")
            self.feature_widths = widths
            self.feature_log_weights = nn.Parameter(torch.zeros(len(widths)))
            self.register_buffer("_block_sizes", torch.tensor(widths), persistent=False)
        blocks = []
        previous = self.input_dim
        dropout = self.architecture.dropout
        for index, width in enumerate(self.architecture.widths):
            last = index == len(self.architecture.widths) - 1
            layers: OrderedDict[str, nn.Module] = OrderedDict(linear=nn.Linear(previous, width), norm=nn.BatchNorm1d(width))
            if not last or self.architecture.last_activation:
                layers["relu"] = nn.ReLU()
            if dropout > 0 and not last:
                # Hidden layers only: dropping coordinates of the embedding itself would distort its norm.
                layers["dropout"] = nn.Dropout(dropout)
            blocks.append(nn.Sequential(layers))
            previous = width
        self.blocks = nn.Sequential(*blocks)

    @property
    def output_dim(self) -> int:
        """Width of the embedding."""
        return self.architecture.widths[-1] + (self.input_dim if self.architecture.skip_weight > 0 else 0)

    def feature_weights(self) -> torch.Tensor | None:
        """The learned multiplier of each feature block (1 at initialisation), or None without them."""
        return torch.exp(self.feature_log_weights) if self.feature_widths is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a (n, input_dim) batch into unit-norm (n, output_dim) rows."""
        if self.feature_widths is not None:
            # exp keeps every block's weight positive: a feature can fade but never flip its similarity.
            x = x * torch.repeat_interleave(torch.exp(self.feature_log_weights), self._block_sizes)
        learned = F.normalize(self.blocks(x), p=2.0, dim=1)
        skip_weight = self.architecture.skip_weight
        if skip_weight == 0:
            return learned
        # normalise(concat(skip_weight * input, learned)), both parts unit-length: with weight 1 the cosine is the
        # mean of the compound's and the learned one, so the compound's ranking stays as a prior that the learned
        # part adjusts instead of replacing it.
        return F.normalize(torch.cat([skip_weight * F.normalize(x, p=2.0, dim=1), learned], dim=1), p=2.0, dim=1)

    def embed(self, x: np.ndarray, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
        """Embeddings of feature rows as float32, in eval mode (running BatchNorm stats, no dropout).

        The module is moved to ``device``; its train/eval mode is restored afterwards.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        features = np.asarray(x, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"expected features of shape (n, {self.input_dim}), got {features.shape}")
        was_training = self.training
        self.to(device)
        self.eval()
        try:
            out = np.empty((features.shape[0], self.output_dim), dtype=np.float32)
            with torch.inference_mode():
                for start in range(0, features.shape[0], batch_size):
                    chunk = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size])).to(device)
                    out[start : start + len(chunk)] = self(chunk).to("cpu", torch.float32).numpy()
        finally:
            self.train(was_training)
        return out


def contrastive_loss(h_i: torch.Tensor, h_j: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Contrastive loss (Hadsell et al. 2006): mean over pairs of y*d^2 + (1-y)*max(0, margin-d)^2.

    d is the L2 distance of the two branch outputs and y is 1 for similar, 0 for dissimilar pairs.
    For unit-norm outputs d lies in [0, 2], so a margin of 2 or more pushes every negative pair.
    """
    if h_i.ndim != 2 or h_i.shape != h_j.shape:
        raise ValueError(f"pair outputs must be two (n, dim) tensors of one shape, got {tuple(h_i.shape)} and {tuple(h_j.shape)}")
    if h_i.shape[0] == 0:
        raise ValueError("contrastive_loss needs at least one pair")
    if not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a positive number, got {margin}")
    labels = y.to(dtype=h_i.dtype, device=h_i.device).reshape(-1)
    if labels.shape[0] != h_i.shape[0]:
        raise ValueError(f"expected {h_i.shape[0]} labels, got {labels.shape[0]}")
    if bool(((labels < 0) | (labels > 1)).any()):
        raise ValueError("pair labels must lie in [0, 1] (1 = similar, 0 = dissimilar)")
    squared = (h_i - h_j).pow(2).sum(dim=1)
    distance = squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt()
    push = (margin - distance).clamp_min(0.0).pow(2)
    return (labels * squared + (1.0 - labels) * push).mean()


def multitask_loss(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The weighted sum of per-task losses, sum_t alpha_t * L_t (paper eq. 2)."""
    if not losses:
        raise ValueError("multitask_loss needs at least one task loss")
    missing = sorted(task for task in losses if task not in weights)
    if missing:
        raise KeyError(f"no weight for task(s) {', '.join(repr(t) for t in missing)}; weights are given for {sorted(weights)}")
    total: torch.Tensor | None = None
    for task, loss in losses.items():
        weight = float(weights[task])
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of task {task!r} must be a finite non-negative number, got {weight}")
        term = loss * weight
        total = term if total is None else total + term
    assert total is not None
    return total


_FEATURES: TypeAdapter[Any] = TypeAdapter(Feature)


class ModelSpec(SiameseSettings):
    """Everything that defines a trained SiameseNet besides its weights; all but created_at is content.

    The architecture and margin fields are SiameseSettings'; content_json sorts keys, so where they are declared
    does not change a model id.
    """

    format: Literal["siamese/v1"] = "siamese/v1"
    input_dim: int = Field(ge=1)
    # The compound config's features list: the model is only valid on that compound embedding.
    features: tuple[dict[str, Any], ...] = Field(min_length=1)
    # Fingerprint of the training pairs (e.g. a hash of the pair manifests).
    training_data: str = Field(min_length=1)
    # Task name -> alpha_t of paper eq. 2.
    tasks: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(min_length=1)
    # ISO-8601 time the model was saved; informational, not part of the content hash.
    created_at: str | None = None

    @field_validator("features")
    @classmethod
    def _canonical_features(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        return feature_spec(_FEATURES.validate_python(feature) for feature in value)

    @model_validator(mode="after")
    def _features_match_input(self) -> ModelSpec:
        width = sum(_FEATURES.validate_python(feature).dim for feature in self.features)
        if width != self.input_dim:
            raise ValueError(f"input_dim {self.input_dim} does not match the features' compound width {width}")
        return self

    @classmethod
    def for_config(cls, config: AppConfig, **fields: Any) -> ModelSpec:
        """A spec for a model on top of the config's compound embedding."""
        return cls(input_dim=config.dim, features=feature_spec(config.features), **fields)

    @property
    def compound_model_id(self) -> str:
        """The id of the compound embedding the model consumes; equals AppConfig.compound_model_id for the same features."""
        return compound_id(self.features)

    def content_json(self) -> str:
        """Canonical JSON of the content fields (everything but created_at); the registry hashes this."""
        payload = self.model_dump(mode="json", exclude={"created_at"})
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    @property
    def feature_widths(self) -> tuple[int, ...] | None:
        """Widths of the input's feature blocks when the model learns their weights, else None."""
        if not self.learn_feature_weights:
            return None
        return tuple(_FEATURES.validate_python(feature).dim for feature in self.features)

    def build(self) -> SiameseNet:
        """A freshly initialised network with this spec's architecture."""
        return SiameseNet(self.input_dim, self, feature_widths=self.feature_widths)

    def describes(self, model: SiameseNet) -> bool:
        """True when the model has exactly this spec's architecture."""
        return (model.input_dim, model.architecture, model.feature_widths) == (self.input_dim, self.architecture(), self.feature_widths)
