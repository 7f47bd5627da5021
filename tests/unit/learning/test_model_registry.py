"""Model registry: content-addressed ids, bit-identical round trips, tamper detection, and no pickle ever."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pss_ops.config import parse_config
from pss_ops.learning.model import ModelSpec, SiameseNet, contrastive_loss
from pss_ops.learning.registry import SPEC_FILE, WEIGHTS_FILE, ModelRegistryError, list_models, load_model, save_model
from pss_ops.learning.settings import SiameseArchitecture

CONFIG = parse_config(
    {
        "application": "registry-unit",
        "features": [{"type": "char_ngram", "dims": 16}, {"type": "precomputed", "column": "behavior_vector", "dim": 8}],
    }
)
SPEC = ModelSpec.for_config(
    CONFIG, widths=(32, 16), dropout=0.1, margin=0.8, training_data="pairs-2024-05-01", tasks={"v2p": 1.0, "labeled": 2.0}
)
X = np.random.default_rng(11).normal(size=(40, 24)).astype(np.float32)


def trained(seed: int = 5) -> SiameseNet:
    """A deterministic few-step training run: weights and BatchNorm running stats both move."""
    torch.manual_seed(seed)
    model = SPEC.build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):
        x_i, x_j = torch.randn(16, 24), torch.randn(16, 24)
        out = model(torch.cat([x_i, x_j]))
        loss = contrastive_loss(out[:16], out[16:], torch.tensor([1.0, 0.0] * 8), SPEC.margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture
def registry(tmp_path: Path) -> str:
    return str(tmp_path / "registry")


def test_round_trip_gives_bit_identical_embeddings(registry: str) -> None:
    model = trained()
    model_id = save_model(model, SPEC, registry)
    assert model_id.startswith("siamese-") and len(model_id) == len("siamese-") + 16
    assert sorted(p.name for p in Path(registry, model_id).iterdir()) == [WEIGHTS_FILE, SPEC_FILE]
    loaded, spec = load_model(registry, model_id)
    assert not loaded.training
    assert spec.created_at is not None
    assert spec.model_copy(update={"created_at": None}) == SPEC
    assert np.array_equal(loaded.embed(X), model.embed(X))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert list_models(registry) == [model_id]


def test_identical_training_gives_the_same_id_and_saving_again_is_idempotent(registry: str) -> None:
    first = save_model(trained(), SPEC, registry)
    spec_file = Path(registry, first, SPEC_FILE)
    written = spec_file.read_bytes()
    assert save_model(trained(), SPEC, registry) == first
    assert save_model(trained(), SPEC.model_copy(update={"created_at": "2030-01-01T00:00:00+00:00"}), registry) == first
    assert spec_file.read_bytes() == written  # the stored copy, and its created_at, are kept
    assert list_models(registry) == [first]


def test_any_change_gives_a_new_id(registry: str) -> None:
    model = trained()
    original = save_model(model, SPEC, registry)
    with torch.no_grad():
        first_linear = model.blocks[0].linear  # type: ignore[index]
        first_linear.weight[0, 0] += 1e-4
    changed_weight = save_model(model, SPEC, registry)
    changed_spec = save_model(model, SPEC.model_copy(update={"margin": 0.5}), registry)
    other_seed = save_model(trained(seed=6), SPEC, registry)
    ids = {original, changed_weight, changed_spec, other_seed}
    assert len(ids) == 4
    assert list_models(registry) == sorted(ids)
    loaded, _ = load_model(registry, changed_weight)
    assert loaded.blocks[0].linear.weight[0, 0].item() == first_linear.weight[0, 0].item()  # type: ignore[index]


def test_tampered_spec_is_refused(registry: str) -> None:
    model_id = save_model(trained(), SPEC, registry)
    spec_file = Path(registry, model_id, SPEC_FILE)
    payload = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**payload, "created_at": "1999-01-01T00:00:00+00:00"}))
    load_model(registry, model_id)  # created_at is not content
    spec_file.write_text(json.dumps({**payload, "margin": 0.9}))
    with pytest.raises(ModelRegistryError, match=rf"{model_id}.*content hash mismatch"):
        load_model(registry, model_id)
    spec_file.write_text("{not json")
    with pytest.raises(ModelRegistryError, match=rf"{model_id}.*spec.json is corrupt"):
        load_model(registry, model_id)


def test_tampered_weights_are_refused(registry: str) -> None:
    model_id = save_model(trained(), SPEC, registry)
    weights_file = Path(registry, model_id, WEIGHTS_FILE)
    data = bytearray(weights_file.read_bytes())
    data[-3] ^= 0x01  # one bit of one float
    weights_file.write_bytes(bytes(data))
    with pytest.raises(ModelRegistryError, match=rf"{model_id}.*content hash mismatch"):
        load_model(registry, model_id)
    # Saving the same model again repairs the damaged copy.
    assert save_model(trained(), SPEC, registry) == model_id
    load_model(registry, model_id)


def _no_unpickling(*_: Any, **__: Any) -> Any:
    raise AssertionError("the registry tried to unpickle a weights file")


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_pickle_weights_are_refused_without_unpickling(registry: str, monkeypatch: pytest.MonkeyPatch, zipfile_format: bool) -> None:
    model = trained()
    model_id = save_model(model, SPEC, registry)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer, _use_new_zipfile_serialization=zipfile_format)
    Path(registry, model_id, WEIGHTS_FILE).write_bytes(buffer.getvalue())
    monkeypatch.setattr(torch, "load", _no_unpickling)
    monkeypatch.setattr(pickle, "load", _no_unpickling)
    monkeypatch.setattr(pickle, "loads", _no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", _no_unpickling)
    with pytest.raises(ModelRegistryError, match=rf"{model_id}.*not a safetensors file.*refusing"):
        load_model(registry, model_id)


def test_missing_and_malformed_ids(registry: str) -> None:
    with pytest.raises(ModelRegistryError, match="siamese-0123456789abcdef is not in the registry"):
        load_model(registry, "siamese-0123456789abcdef")
    with pytest.raises(ModelRegistryError, match="not a model id"):
        load_model(registry, "../siamese-0123456789abcdef")


def test_list_models_only_lists_complete_models(registry: str) -> None:
    assert list_models(registry) == []
    model_id = save_model(trained(), SPEC, registry)
    Path(registry, "siamese-ffffffffffffffff").mkdir()
    Path(registry, "siamese-ffffffffffffffff", WEIGHTS_FILE).write_bytes(b"half-written")
    Path(registry, "notes.txt").write_text("not a model")
    assert list_models(registry) == [model_id]


def test_spec_must_describe_the_model(registry: str) -> None:
    with pytest.raises(ValueError, match=r"widths=\(32, 8\)"):
        save_model(SiameseNet(24, SiameseArchitecture(widths=(32, 8), dropout=0.1)), SPEC, registry)
    assert list_models(registry) == []


def test_skip_models_round_trip_and_differ_by_id(registry: str) -> None:
    """The skip weight is part of the architecture: it is stored, rebuilt, and changes the content id."""
    skip_spec = SPEC.model_copy(update={"skip_weight": 1.0})
    torch.manual_seed(5)
    model = skip_spec.build()
    model_id = save_model(model, skip_spec, registry)
    loaded, spec = load_model(registry, model_id)
    assert spec.skip_weight == 1.0 and loaded.output_dim == 16 + 24
    assert np.array_equal(loaded.embed(X), model.embed(X))
    plain = SPEC.build()
    plain.load_state_dict(model.state_dict())
    assert save_model(plain, SPEC, registry) != model_id


def test_learned_feature_weights_round_trip_and_differ_by_id(registry: str) -> None:
    """Per-feature weights are stored as weights, rebuilt from the spec's features, and change the content id."""
    weighted_spec = SPEC.model_copy(update={"learn_feature_weights": True})
    torch.manual_seed(5)
    model = weighted_spec.build()
    with torch.no_grad():
        model.feature_log_weights.copy_(torch.tensor([0.7, -0.4]))
    model_id = save_model(model, weighted_spec, registry)
    loaded, spec = load_model(registry, model_id)
    assert spec.feature_widths == (16, 8)
    weights = loaded.feature_weights()
    assert weights is not None
    np.testing.assert_allclose(weights.detach().numpy(), np.exp([0.7, -0.4]), rtol=1e-6)
    assert np.array_equal(loaded.embed(X), model.embed(X))
    assert model_id not in {save_model(trained(), SPEC, registry)}
