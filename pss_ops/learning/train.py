"""Multi-task SiameseNet training on labelled pairs (paper §3.1.2, eq. 2), deterministic on CPU."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pss_ops.config import AppConfig
from pss_ops.learning.folds import split_by_query
from pss_ops.learning.model import ModelSpec, SiameseNet, contrastive_loss, multitask_loss
from pss_ops.learning.pairs import POSITIVE, PairSet, item_rows, pairs_fingerprint

# Declared in settings.py (importable without torch); cli and bench import it from here.
from pss_ops.learning.settings import TrainingConfig as TrainingConfig

# Validation pairs scored per forward pass.
_EVAL_BATCH = 8192


@dataclass(frozen=True)
class PairCounts:
    """A task's pair counts on each side of the validation split."""

    train_positives: int
    train_negatives: int
    validation_positives: int
    validation_negatives: int


@dataclass(frozen=True)
class TrainingReport:
    """How a training run went: losses per epoch and task, the epoch kept, the data it saw.

    Losses are mean contrastive losses; index e of a per-epoch tuple is epoch e + 1. Validation losses are computed in
    eval mode; initial_validation_loss is the untrained network's. Without validation the validation tuples are empty.
    """

    epochs_run: int
    best_epoch: int
    stopped_early: bool
    task_weights: dict[str, float]
    train_loss: dict[str, tuple[float, ...]]
    validation_loss: dict[str, tuple[float, ...]]
    weighted_validation_loss: tuple[float, ...]
    initial_validation_loss: dict[str, float]
    pair_counts: dict[str, PairCounts]

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        out = dict(self.__dict__)
        out["train_loss"] = {t: list(v) for t, v in self.train_loss.items()}
        out["validation_loss"] = {t: list(v) for t, v in self.validation_loss.items()}
        out["weighted_validation_loss"] = list(self.weighted_validation_loss)
        out["pair_counts"] = {t: dict(c.__dict__) for t, c in self.pair_counts.items()}
        return out


@dataclass(frozen=True)
class _TaskData:
    rows_a: torch.Tensor
    rows_b: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch (on a forked RNG, restored afterwards) and force deterministic algorithms for the block."""
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


def _task_data(pairs: PairSet, row: Mapping[str, int], device: str) -> _TaskData:
    def rows(ids: np.ndarray) -> torch.Tensor:
        out = []
        for item in ids.tolist():
            index = row.get(item)
            if index is None:
                raise ValueError(f"task {pairs.task!r}: no vector for item {item!r}")
            out.append(index)
        return torch.tensor(out, dtype=torch.long, device=device)

    return _TaskData(rows(pairs.id_a), rows(pairs.id_b), torch.from_numpy(pairs.label.astype(np.float32)).to(device))


def _counts(pairs: PairSet) -> tuple[int, int]:
    positives = int((pairs.label == POSITIVE).sum())
    return positives, len(pairs) - positives


def _batch_sizes(sizes: Mapping[str, int], batch_size: int) -> dict[str, int]:
    """Pairs per step per task, proportional to the task's size (at least one each)."""
    total = sum(sizes.values())
    return {task: max(1, round(batch_size * size / total)) for task, size in sizes.items()}


def _validation_losses(model: SiameseNet, features: torch.Tensor, data: Mapping[str, _TaskData], margin: float) -> dict[str, float]:
    """Mean contrastive loss over each task's validation pairs, in eval mode."""
    model.eval()
    losses: dict[str, float] = {}
    with torch.no_grad():
        for task, pairs in data.items():
            total = 0.0
            for start in range(0, len(pairs), _EVAL_BATCH):
                stop = min(start + _EVAL_BATCH, len(pairs))
                h = model(torch.cat([features[pairs.rows_a[start:stop]], features[pairs.rows_b[start:stop]]]))
                loss = contrastive_loss(h[: stop - start], h[stop - start :], pairs.labels[start:stop], margin)
                total += float(loss) * (stop - start)
            losses[task] = total / len(pairs)
    return losses


def train_siamese(
    vectors: np.ndarray,
    ids: Sequence[str],
    tasks: Mapping[str, PairSet],
    config: TrainingConfig,
    *,
    feature_widths: Sequence[int] | None = None,
) -> tuple[SiameseNet, TrainingReport]:
    """Train a SiameseNet on compound vectors (rows aligned with ids) with one contrastive loss per task.

    Each task's pairs are split by query item (split_by_query, config.seed) into train and validation. An epoch has
    ceil(train pairs / batch_size) Adam steps; every step draws from every task a batch proportional to the task's
    size (at least one pair), walking a fresh per-epoch permutation of the task's pairs, so each task's pairs are all
    seen about once per epoch. Both branches of all tasks' batches go through the network as one batch (shared
    BatchNorm statistics), and the step minimises sum_t alpha_t * mean contrastive loss of task t (eq. 2).
    After each epoch the weighted validation loss is computed in eval mode; the epoch with the lowest one is restored
    and training stops after `patience` epochs without improvement. Without validation the last epoch is kept.
    Bit-identical for a seed on CPU at a given torch thread count (float sums depend on it); the global torch RNG and
    deterministic-algorithms setting are left as they were.
    """
    if not tasks:
        raise ValueError("train_siamese needs at least one task")
    for name, pairs in tasks.items():
        if name != pairs.task:
            raise ValueError(f"task {name!r} is given the pairs of task {pairs.task!r}")
    ids = list(ids)
    features_np = np.ascontiguousarray(vectors, dtype=np.float32)
    if features_np.ndim != 2 or features_np.shape[0] != len(ids):
        raise ValueError(f"expected {len(ids)} vector rows (one per id), got shape {features_np.shape}")
    if not np.isfinite(features_np).all():
        raise ValueError("vectors contain NaN or infinite values")
    row = item_rows(ids)
    weights = config.weights_for(list(tasks))

    train_pairs: dict[str, PairSet] = {}
    validation_pairs: dict[str, PairSet] = {}
    counts: dict[str, PairCounts] = {}
    for task, pairs in tasks.items():
        train, validation = split_by_query(pairs, holdout_fraction=config.validation_fraction, seed=config.seed)
        if not len(train):
            raise ValueError(f"task {task!r} has no training pairs")
        train_pairs[task], validation_pairs[task] = train, validation
        counts[task] = PairCounts(*_counts(train), *_counts(validation))
    validate = all(len(v) for v in validation_pairs.values()) and config.validation_fraction > 0
    if config.validation_fraction > 0 and not validate:
        empty = sorted(t for t, v in validation_pairs.items() if not len(v))
        raise ValueError(f"task(s) {', '.join(map(repr, empty))} have too few query items for a validation split")

    device = config.device
    features = torch.from_numpy(features_np).to(device)
    train_data = {task: _task_data(pairs, row, device) for task, pairs in train_pairs.items()}
    validation_data = {task: _task_data(pairs, row, device) for task, pairs in validation_pairs.items()} if validate else {}
    sizes = {task: len(data) for task, data in train_data.items()}
    per_step = _batch_sizes(sizes, config.batch_size)
    steps = math.ceil(sum(sizes.values()) / config.batch_size)

    rng = np.random.default_rng(config.seed)
    train_loss: dict[str, list[float]] = {task: [] for task in tasks}
    validation_loss: dict[str, list[float]] = {task: [] for task in tasks} if validate else {}
    weighted: list[float] = []
    initial: dict[str, float] = {}
    best_epoch, best_value, best_state = 0, math.inf, None
    stale = 0
    epoch = 0
    with deterministic(config.seed):
        model = SiameseNet(features_np.shape[1], config, feature_widths=feature_widths)
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        if validate:
            initial = _validation_losses(model, features, validation_data, config.margin)
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = {}
            for task, size in sizes.items():
                laps = math.ceil(steps * per_step[task] / size)
                order[task] = torch.from_numpy(np.concatenate([rng.permutation(size) for _ in range(laps)])).to(device)
            sums = dict.fromkeys(tasks, 0.0)
            seen = dict.fromkeys(tasks, 0)
            for step in range(steps):
                picks = {task: order[task][step * per_step[task] : (step + 1) * per_step[task]] for task in tasks}
                left = torch.cat([features[train_data[t].rows_a[p]] for t, p in picks.items()])
                right = torch.cat([features[train_data[t].rows_b[p]] for t, p in picks.items()])
                h = model(torch.cat([left, right]))
                h_a, h_b = h[: len(left)], h[len(left) :]
                losses = {}
                offset = 0
                for task, pick in picks.items():
                    stop = offset + len(pick)
                    losses[task] = contrastive_loss(h_a[offset:stop], h_b[offset:stop], train_data[task].labels[pick], config.margin)
                    offset = stop
                loss = multitask_loss(losses, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for task, task_loss in losses.items():
                    sums[task] += float(task_loss.detach()) * len(picks[task])
                    seen[task] += len(picks[task])
            for task in tasks:
                train_loss[task].append(sums[task] / seen[task])
                if not math.isfinite(train_loss[task][-1]):
                    raise ValueError(f"task {task!r}: training loss is not finite in epoch {epoch}; lower the learning rate")
            if not validate:
                best_epoch = epoch
                continue
            current = _validation_losses(model, features, validation_data, config.margin)
            for task, value in current.items():
                validation_loss[task].append(value)
            total = sum(weights[task] * value for task, value in current.items())
            if not math.isfinite(total):
                raise ValueError(f"validation loss is not finite in epoch {epoch}; lower the learning rate")
            weighted.append(total)
            if total < best_value:
                best_epoch, best_value, stale = epoch, total, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    report = TrainingReport(
        epochs_run=epoch,
        best_epoch=best_epoch,
        stopped_early=epoch < config.epochs,
        task_weights=weights,
        train_loss={task: tuple(values) for task, values in train_loss.items()},
        validation_loss={task: tuple(values) for task, values in validation_loss.items()},
        weighted_validation_loss=tuple(weighted),
        initial_validation_loss=initial,
        pair_counts=counts,
    )
    return model, report


def model_spec(app_config: AppConfig, config: TrainingConfig, tasks: Mapping[str, PairSet]) -> ModelSpec:
    """The registry spec of a model trained by train_siamese on the app's compound embedding with these pairs."""
    return ModelSpec.for_config(
        app_config,
        **config.siamese_settings(),
        training_data=pairs_fingerprint(tasks.values()),
        tasks=config.weights_for(list(tasks)),
    )
