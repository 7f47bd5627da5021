"""The SiameseNet embedding model, its contrastive and multi-task losses, and its spec (paper §3.1.2)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from torch import nn

from pss_ops.config import AppConfig, Feature

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
        widths: Sequence[int] = (256, 256, 256, 256),
        *,
        last_activation: bool = False,
        dropout: float = 0.0,
        skip_weight: float = 0.0,
        feature_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if skip_weight < 0:
            raise ValueError(f"skip_weight must be >= 0, got {skip_weight}")
        if input_dim < 1:
            raise ValueError(f"input_dim must be at least 1, got {input_dim}")
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive layer sizes, got {widths}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        feature_widths = tuple(int(w) for w in feature_widths) if feature_widths is not None else None
        if feature_widths is not None and (min(feature_widths, default=0) < 1 or sum(feature_widths) != input_dim):
            raise ValueError(f"feature_widths {feature_widths} must be positive and sum to input_dim {input_dim}")
        self.input_dim = int(input_dim)
        self.widths = widths
        self.last_activation = bool(last_activation)
        self.dropout = float(dropout)
        # With a skip, the output is normalise(concat(skip_weight * input, learned)), both parts unit-length:
        # with weight 1 the cosine is the mean of the compound's and the learned one. On 1,300 labelled pairs
        # this kept the compound's recall@10 while the learned half lifted recall@1 (docs/experiments).
        self.skip_weight = float(skip_weight)
        # With feature_widths, one learned weight per compound feature block scales the input before both the
        # layers and the skip: the compound's hand-set weights become trainable, so a task can lean on the
        # feature that decides its matches. The learned weights are readable (feature_weights()); what they
        # did on our data is in BENCHMARKS.md.
        self.feature_widths = feature_widths
        if feature_widths is not None:
            self.feature_log_weights = nn.Parameter(torch.zeros(len(feature_widths)))
            self.register_buffer("_block_sizes", torch.tensor(feature_widths), persistent=False)
        blocks = []
        previous = self.input_dim
        for index, width in enumerate(widths):
            last = index == len(widths) - 1
            layers: OrderedDict[str, nn.Module] = OrderedDict(linear=nn.Linear(previous, width), norm=nn.BatchNorm1d(width))
            if not last or self.last_activation:
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
        return self.widths[-1] + (self.input_dim if self.skip_weight > 0 else 0)

    def feature_weights(self) -> torch.Tensor | None:
        """The learned multiplier of each feature block (1 at initialisation), or None without them."""
        return torch.exp(self.feature_log_weights) if self.feature_widths is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a (n, input_dim) batch into unit-norm (n, output_dim) rows."""
        if self.feature_widths is not None:
            # exp keeps every block's weight positive: a feature can fade but never flip its similarity.
            x = x * torch.repeat_interleave(torch.exp(self.feature_log_weights), self._block_sizes)
        learned = F.normalize(self.blocks(x), p=2.0, dim=1)
        if self.skip_weight == 0:
            return learned
        return F.normalize(torch.cat([self.skip_weight * F.normalize(x, p=2.0, dim=1), learned], dim=1), p=2.0, dim=1)

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


def pair_distances(h_i: torch.Tensor, h_j: torch.Tensor) -> torch.Tensor:
    """L2 distance of each pair of rows; differentiable everywhere, also for identical rows."""
    squared = (h_i - h_j).pow(2).sum(dim=1)
    return squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt()


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


def feature_spec(config: AppConfig) -> tuple[dict[str, Any], ...]:
    """The compound features a model consumes, as JSON-able dicts (the part of the config the compound id hashes)."""
    return tuple(f.model_dump(mode="json", exclude={"batch_size"}) for f in config.features)


class ModelSpec(BaseModel):
    """Everything that defines a trained SiameseNet besides its weights; all but created_at is content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["siamese/v1"] = "siamese/v1"
    input_dim: int = Field(ge=1)
    widths: tuple[Annotated[int, Field(ge=1)], ...] = Field((256, 256, 256, 256), min_length=1)
    last_activation: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    skip_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    # One trainable weight per feature block of the input (see SiameseNet.feature_widths).
    learn_feature_weights: bool = False
    margin: float = Field(1.0, gt=0, allow_inf_nan=False)
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
        parsed = [_FEATURES.validate_python(feature) for feature in value]
        return tuple(f.model_dump(mode="json", exclude={"batch_size"}) for f in parsed)

    @model_validator(mode="after")
    def _features_match_input(self) -> ModelSpec:
        width = sum(_FEATURES.validate_python(feature).dim for feature in self.features)
        if width != self.input_dim:
            raise ValueError(f"input_dim {self.input_dim} does not match the features' compound width {width}")
        return self

    @classmethod
    def for_config(cls, config: AppConfig, **fields: Any) -> ModelSpec:
        """A spec for a model on top of the config's compound embedding."""
        return cls(input_dim=config.dim, features=feature_spec(config), **fields)

    @property
    def compound_model_id(self) -> str:
        """The id of the compound embedding the model consumes; equals AppConfig.model_id for the same features."""
        digest = hashlib.sha256(json.dumps({"compound/v1": list(self.features)}, sort_keys=True).encode()).hexdigest()
        return f"compound-{digest[:16]}"

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
        return SiameseNet(
            self.input_dim,
            self.widths,
            last_activation=self.last_activation,
            dropout=self.dropout,
            skip_weight=self.skip_weight,
            feature_widths=self.feature_widths,
        )

    def describes(self, model: SiameseNet) -> bool:
        """True when the model has exactly this spec's architecture."""
        return (model.input_dim, model.widths, model.last_activation, model.dropout, model.skip_weight, model.feature_widths) == (
            self.input_dim,
            tuple(self.widths),
            self.last_activation,
            self.dropout,
            self.skip_weight,
            self.feature_widths,
        )
