"""Multi-task SiameseNet training on real Amazon–Google titles: learning, determinism, weights, early stopping."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from pss_ops.config import parse_config
from pss_ops.features.lexical import char_ngram_vectors
from pss_ops.learning.folds import split_by_query
from pss_ops.learning.mining import random_negatives
from pss_ops.learning.model import SiameseNet, contrastive_loss
from pss_ops.learning.pairs import PairSet, pairs_fingerprint
from pss_ops.learning.registry import load_model, save_model
from pss_ops.learning.train import TrainingConfig, deterministic, model_spec, train_siamese
from tests.conftest import DATA, ROOT

DIMS = 128
BASE = TrainingConfig(widths=(64, 32), epochs=12, batch_size=32, learning_rate=3e-3, validation_fraction=0.3, patience=50)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny matrices train faster, and results are only bit-stable per thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def sample() -> tuple[list[str], np.ndarray, PairSet]:
    """~130 real items that are both sides of every 20th true match, their char n-gram vectors and those matches."""
    catalog = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    matches = pd.read_csv(DATA / "matches.csv", dtype=str, keep_default_na=False)
    matches = matches[matches["id_a"].isin(set(catalog["item_id"])) & matches["id_b"].isin(set(catalog["item_id"]))]
    picked = matches.iloc[::20]
    keep = set(picked["id_a"]) | set(picked["id_b"])
    truth = matches[matches["id_a"].isin(keep) & matches["id_b"].isin(keep)]
    frame = catalog[catalog["item_id"].isin(keep)].reset_index(drop=True)
    vectors = char_ngram_vectors(frame["title"].tolist(), ngram_min=3, ngram_max=5, dims=DIMS)
    positives = PairSet("matches", truth["id_a"].to_numpy(object), truth["id_b"].to_numpy(object), np.ones(len(truth), np.int8))
    return frame["item_id"].tolist(), vectors, positives


@functools.cache
def matches_task() -> PairSet:
    """The true matches plus 3x random negatives."""
    ids, _, positives = sample()
    return positives.concat(random_negatives(positives, ids, ratio=3, seed=0))


def validation_loss(model: SiameseNet, pairs: PairSet, ids: list[str], vectors: np.ndarray, margin: float) -> float:
    """Mean contrastive loss of the model (eval mode) on the pairs, computed from scratch."""
    row = {item: i for i, item in enumerate(ids)}
    embedded = torch.from_numpy(model.embed(vectors))
    a = embedded[[row[i] for i in pairs.id_a]]
    b = embedded[[row[i] for i in pairs.id_b]]
    return float(contrastive_loss(a, b, torch.from_numpy(pairs.label.astype(np.float32)), margin))


def cosine_gap(embedded: np.ndarray, pairs: PairSet, ids: list[str]) -> float:
    """Mean cosine of the positive pairs minus that of the negative pairs."""
    row = {item: i for i, item in enumerate(ids)}
    unit = embedded / np.linalg.norm(embedded, axis=1, keepdims=True)
    cos = np.array([unit[row[a]] @ unit[row[b]] for a, b in zip(pairs.id_a, pairs.id_b)])
    return float(cos[pairs.label == 1].mean() - cos[pairs.label == 0].mean())


def test_training_lowers_validation_loss_and_separates_held_out_pairs() -> None:
    ids, vectors, _ = sample()
    pairs = matches_task()
    model, report = train_siamese(vectors, ids, {"matches": pairs}, BASE)
    train, held_out = split_by_query(pairs, holdout_fraction=BASE.validation_fraction, seed=BASE.seed)
    counts = report.pair_counts["matches"]
    assert (counts.train_positives + counts.train_negatives, counts.validation_positives + counts.validation_negatives) == (
        len(train),
        len(held_out),
    )
    assert counts.validation_positives == int(held_out.label.sum()) > 0
    with deterministic(BASE.seed):
        untrained = SiameseNet(DIMS, BASE)  # the same initial weights train_siamese starts from
    before = validation_loss(untrained, held_out, ids, vectors, BASE.margin)
    after = validation_loss(model, held_out, ids, vectors, BASE.margin)
    assert report.initial_validation_loss["matches"] == pytest.approx(before, rel=1e-5)
    assert after == pytest.approx(report.validation_loss["matches"][report.best_epoch - 1], rel=1e-5)
    assert after < 0.7 * before
    assert report.train_loss["matches"][-1] < report.train_loss["matches"][0]
    # Held-out positives move closer relative to held-out negatives.
    assert cosine_gap(model.embed(vectors), held_out, ids) > cosine_gap(untrained.embed(vectors), held_out, ids) + 0.1
    assert not model.training


def test_same_seed_gives_bit_identical_weights_and_other_seeds_do_not() -> None:
    ids, vectors, _ = sample()
    tasks = {"matches": matches_task()}
    torch.manual_seed(1)  # the global RNG state must not matter
    first, first_report = train_siamese(vectors, ids, tasks, BASE)
    torch.manual_seed(2)
    second, second_report = train_siamese(vectors, ids, tasks, BASE)
    state, again = first.state_dict(), second.state_dict()
    assert state.keys() == again.keys()
    assert all(torch.equal(state[name], again[name]) for name in state)
    assert first_report == second_report
    other, _ = train_siamese(vectors, ids, tasks, BASE.model_copy(update={"seed": 1}))
    assert not torch.equal(other.state_dict()["blocks.0.linear.weight"], state["blocks.0.linear.weight"])


def test_global_torch_state_is_restored() -> None:
    ids, vectors, _ = sample()
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    assert not torch.are_deterministic_algorithms_enabled()
    train_siamese(vectors, ids, {"matches": matches_task()}, BASE.model_copy(update={"epochs": 1}))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_context_restores_the_previous_setting() -> None:
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        for enabled, warn_only in ((False, False), (True, True)):
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
            with deterministic(5):
                assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
                drawn = torch.rand(3)
            assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == (
                enabled,
                warn_only,
            )
            with deterministic(5):
                assert torch.equal(torch.rand(3), drawn)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def test_task_weights_change_the_model() -> None:
    ids, vectors, _ = sample()
    matches = matches_task()
    # A task that wants the opposite: the weights alone decide which one the model serves.
    contrary = PairSet("contrary", matches.id_a, matches.id_b, 1 - matches.label)
    tasks = {"matches": matches, "contrary": contrary}
    pro, pro_report = train_siamese(vectors, ids, tasks, BASE.model_copy(update={"task_weights": {"contrary": 0.0}}))
    con, con_report = train_siamese(vectors, ids, tasks, BASE.model_copy(update={"task_weights": {"matches": 0.0}}))
    assert pro_report.task_weights == {"matches": 1.0, "contrary": 0.0}
    assert con_report.task_weights == {"matches": 0.0, "contrary": 1.0}
    assert set(pro_report.validation_loss) == {"matches", "contrary"}
    # Each model fits the training pairs of the task it weighs ...
    assert pro_report.train_loss["matches"][-1] < con_report.train_loss["matches"][-1]
    assert con_report.train_loss["contrary"][-1] < pro_report.train_loss["contrary"][-1]
    # ... and generalises to that task's held-out pairs.
    _, held_matches = split_by_query(matches, holdout_fraction=BASE.validation_fraction, seed=BASE.seed)
    _, held_contrary = split_by_query(contrary, holdout_fraction=BASE.validation_fraction, seed=BASE.seed)
    assert validation_loss(pro, held_matches, ids, vectors, BASE.margin) < validation_loss(con, held_matches, ids, vectors, BASE.margin)
    assert validation_loss(con, held_contrary, ids, vectors, BASE.margin) < validation_loss(pro, held_contrary, ids, vectors, BASE.margin)
    # The weighted validation loss (what early stopping watches) ignores a task of weight 0.
    best = pro_report.best_epoch - 1
    assert pro_report.weighted_validation_loss[best] == pytest.approx(pro_report.validation_loss["matches"][best])
    assert pro_report.weighted_validation_loss[best] == min(pro_report.weighted_validation_loss)


def test_early_stopping_restores_the_best_epoch() -> None:
    ids, vectors, _ = sample()
    pairs = matches_task()
    config = BASE.model_copy(update={"epochs": 80, "patience": 3, "learning_rate": 1e-2})
    model, report = train_siamese(vectors, ids, {"matches": pairs}, config)
    weighted = report.weighted_validation_loss
    assert report.stopped_early and report.epochs_run < config.epochs
    assert len(weighted) == len(report.train_loss["matches"]) == report.epochs_run
    assert report.best_epoch == int(np.argmin(weighted)) + 1
    assert report.epochs_run == report.best_epoch + config.patience
    _, held_out = split_by_query(pairs, holdout_fraction=config.validation_fraction, seed=config.seed)
    restored = validation_loss(model, held_out, ids, vectors, config.margin)
    assert restored == pytest.approx(weighted[report.best_epoch - 1], rel=1e-5)
    assert restored < weighted[-1] - 1e-4  # the last epoch's weights were not kept


def test_without_validation_the_last_epoch_is_kept() -> None:
    ids, vectors, _ = sample()
    config = BASE.model_copy(update={"validation_fraction": 0.0, "epochs": 3})
    _, report = train_siamese(vectors, ids, {"matches": matches_task()}, config)
    assert (report.epochs_run, report.best_epoch, report.stopped_early) == (3, 3, False)
    assert report.validation_loss == {} and report.weighted_validation_loss == () and report.initial_validation_loss == {}
    assert report.pair_counts["matches"].validation_positives == 0


def test_spec_and_registry_round_trip(tmp_path: Path) -> None:
    ids, vectors, _ = sample()
    tasks = {"matches": matches_task()}
    config = BASE.model_copy(update={"epochs": 2})
    model, _ = train_siamese(vectors, ids, tasks, config)
    app = parse_config({"application": "train-unit", "features": [{"type": "char_ngram", "ngram_min": 3, "ngram_max": 5, "dims": DIMS}]})
    spec = model_spec(app, config, tasks)
    assert spec.describes(model) and spec.training_data == pairs_fingerprint(tasks.values()) and spec.tasks == {"matches": 1.0}
    model_id = save_model(model, spec, str(tmp_path))
    loaded, _ = load_model(str(tmp_path), model_id)
    np.testing.assert_array_equal(loaded.embed(vectors), model.embed(vectors))


def test_bad_inputs_are_named() -> None:
    ids, vectors, positives = sample()
    ghost = positives.concat(PairSet.from_rows("matches", [(ids[0], "ghost:1", 0)]))
    with pytest.raises(ValueError, match="no vector for item 'ghost:1'"):
        train_siamese(vectors, ids, {"matches": ghost}, BASE)
    with pytest.raises(ValueError, match="unknown task"):
        train_siamese(vectors, ids, {"matches": positives}, BASE.model_copy(update={"task_weights": {"v2p": 1.0}}))
    with pytest.raises(ValueError, match="task 'other' is given the pairs of task 'matches'"):
        train_siamese(vectors, ids, {"other": positives}, BASE)
    with pytest.raises(ValueError, match="validation split"):
        train_siamese(vectors, ids, {"matches": PairSet.from_rows("matches", [(ids[0], ids[1], 1), (ids[0], ids[2], 0)])}, BASE)
    with pytest.raises(ValueError, match="vector rows"):
        train_siamese(vectors[:-1], ids, {"matches": positives}, BASE)
    with pytest.raises(ValidationError, match="extra"):
        TrainingConfig(learning_rte=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrainingConfig(validation_fraction=1.0)
    with pytest.raises(ValidationError):
        BASE.epochs = 3  # type: ignore[misc]


def test_example_training_config_is_valid_and_is_the_shipped_recipe() -> None:
    """examples/training/siamese.yaml parses as a TrainingConfig: the recipe bench/ablation.py measures."""
    import yaml

    path = ROOT / "examples" / "training" / "siamese.yaml"
    config = TrainingConfig.model_validate(yaml.safe_load(path.read_text()))
    assert config.widths == (256,) and config.skip_weight == 1.0 and config.learn_feature_weights
    assert config.part_number_negatives == 1
