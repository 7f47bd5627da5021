"""Matchers in the registry: content ids, a round trip, and refusal of anything but LightGBM text."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from pss_ops.matching.model import fit_matcher
from pss_ops.matching.registry import (
    SPEC_FILE,
    TREES_FILE,
    MatcherRegistryError,
    MatcherSpec,
    load_matcher,
    matcher_id_for,
    save_matcher,
)
from tests.unit.matching.conftest import Labelled


@pytest.fixture(scope="module")
def stored(labelled: Labelled, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, MatcherSpec]:
    matcher = fit_matcher(labelled.features, labelled.labels, labelled.pairs, seed=0)
    spec = MatcherSpec(
        application="near_identical",
        features=matcher.features,
        retrievers=("dense", "lexical"),
        compound_model_id="compound-0000000000000000",
        calibration_slope=matcher.calibration.slope,
        calibration_intercept=matcher.calibration.intercept,
        training={"labelled_pairs": len(labelled.labels)},
        holdout={},
    )
    registry = tmp_path_factory.mktemp("registry")
    return registry, save_matcher(matcher, spec, str(registry)), spec


def test_round_trip_gives_the_same_probabilities(stored: tuple[Path, str, MatcherSpec], labelled: Labelled) -> None:
    registry, matcher_id, spec = stored
    assert matcher_id.startswith("matcher-") and len(matcher_id) == len("matcher-") + 16
    loaded, loaded_spec = load_matcher(str(registry), matcher_id)
    assert loaded_spec.content_json() == spec.content_json() and loaded_spec.created_at
    again = fit_matcher(labelled.features, labelled.labels, labelled.pairs, seed=0)
    np.testing.assert_allclose(loaded.probabilities(labelled.features), again.probabilities(labelled.features))
    # Saving the same matcher again is the same id and leaves the stored files alone.
    assert save_matcher(again, spec, str(registry)) == matcher_id


def test_a_pickle_is_refused_even_when_it_hashes_to_its_id(stored: tuple[Path, str, MatcherSpec], tmp_path: Path) -> None:
    registry, matcher_id, spec = stored
    evil = pickle.dumps({"trees": "pretend"})
    forged_id = matcher_id_for(spec, evil)
    (tmp_path / forged_id).mkdir()
    (tmp_path / forged_id / TREES_FILE).write_bytes(evil)
    (tmp_path / forged_id / SPEC_FILE).write_bytes((registry / matcher_id / SPEC_FILE).read_bytes())
    with pytest.raises(MatcherRegistryError, match="is a pickle"):
        load_matcher(str(tmp_path), forged_id)


def test_changed_files_and_bad_ids_are_refused(stored: tuple[Path, str, MatcherSpec], tmp_path: Path) -> None:
    registry, matcher_id, _ = stored
    copy = tmp_path / matcher_id
    copy.mkdir()
    trees = (registry / matcher_id / TREES_FILE).read_text()
    (copy / TREES_FILE).write_text(trees.replace("learning_rate", "learning_rate", 1) + "\n")
    (copy / SPEC_FILE).write_bytes((registry / matcher_id / SPEC_FILE).read_bytes())
    with pytest.raises(MatcherRegistryError, match="content hash mismatch"):
        load_matcher(str(tmp_path), matcher_id)
    with pytest.raises(MatcherRegistryError, match="not a matcher id"):
        load_matcher(str(registry), "siamese-0123456789abcdef")
    with pytest.raises(MatcherRegistryError, match="not in the registry"):
        load_matcher(str(registry), "matcher-0123456789abcdef")
