"""SiameseNet: contrastive and multi-task losses on hand-computed data, gradients, shapes, eval determinism, spec."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pss_ops.config import load_config, parse_config
from pss_ops.learning.model import ModelSpec, SiameseNet, contrastive_loss, multitask_loss
from pss_ops.learning.settings import SiameseArchitecture, TrainingConfig
from tests.conftest import EXAMPLE_CONFIG

CONFIG = parse_config(
    {
        "application": "siamese-unit",
        "features": [
            {"type": "text_embedding", "batch_size": 8},
            {"type": "precomputed", "column": "image_vector", "dim": 8, "weight": 0.5},
        ],
    }
)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(7)


def unit(angle_degrees: float) -> list[float]:
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


def loss_of(a: list[float], b: list[float], y: float, margin: float) -> float:
    return float(contrastive_loss(torch.tensor([a]), torch.tensor([b]), torch.tensor([y]), margin))


def test_contrastive_loss_hand_computed() -> None:
    assert loss_of(unit(0), unit(0), 1, margin=1.0) == pytest.approx(0.0, abs=1e-12)
    # 90 degrees apart on the unit circle: d = sqrt(2).
    assert loss_of(unit(0), unit(90), 1, margin=1.0) == pytest.approx(2.0, rel=1e-6)
    assert loss_of(unit(0), unit(90), 0, margin=2.0) == pytest.approx((2.0 - math.sqrt(2.0)) ** 2, rel=1e-6)
    # 60 degrees apart: d = 1; a negative beyond the margin costs nothing, inside it costs (margin - d)^2.
    assert loss_of(unit(0), unit(60), 0, margin=1.0) == pytest.approx(0.0, abs=1e-6)
    assert loss_of(unit(0), unit(60), 0, margin=1.5) == pytest.approx(0.25, rel=1e-5)
    assert loss_of(unit(0), unit(60), 1, margin=1.5) == pytest.approx(1.0, rel=1e-5)
    # Identical negative: d = 0, loss = margin^2.
    assert loss_of(unit(30), unit(30), 0, margin=0.5) == pytest.approx(0.25, rel=1e-5)
    # The batch loss is the mean over pairs.
    h_i = torch.tensor([unit(0), unit(0), unit(0), unit(0)])
    h_j = torch.tensor([unit(0), unit(90), unit(90), unit(60)])
    y = torch.tensor([1, 1, 0, 0])
    expected = (0.0 + 2.0 + (2.0 - math.sqrt(2.0)) ** 2 + 1.0) / 4
    assert float(contrastive_loss(h_i, h_j, y, margin=2.0)) == pytest.approx(expected, rel=1e-6)


def test_contrastive_loss_gradient_is_finite_for_identical_outputs() -> None:
    h = torch.tensor([unit(10), unit(10)], requires_grad=True)
    loss = contrastive_loss(h, h.detach().clone(), torch.tensor([0.0, 1.0]), margin=1.0)
    loss.backward()
    assert h.grad is not None and bool(torch.isfinite(h.grad).all())


def test_contrastive_loss_rejects_bad_input() -> None:
    a = torch.tensor([unit(0)])
    with pytest.raises(ValueError, match="margin"):
        contrastive_loss(a, a, torch.tensor([1.0]), margin=0.0)
    with pytest.raises(ValueError, match="labels"):
        contrastive_loss(a, a, torch.tensor([1.0, 0.0]), margin=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        contrastive_loss(a, a, torch.tensor([2.0]), margin=1.0)
    with pytest.raises(ValueError, match="one shape"):
        contrastive_loss(a, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1.0]), margin=1.0)
    with pytest.raises(ValueError, match="at least one pair"):
        contrastive_loss(torch.zeros((0, 2)), torch.zeros((0, 2)), torch.zeros(0), margin=1.0)


def net(input_dim: int, widths: tuple[int, ...], *, feature_widths: tuple[int, ...] | None = None, **fields: Any) -> SiameseNet:
    """A fresh SiameseNet of this architecture."""
    return SiameseNet(input_dim, SiameseArchitecture(widths=widths, **fields), feature_widths=feature_widths)


def distances(h_i: torch.Tensor, h_j: torch.Tensor) -> torch.Tensor:
    """L2 distance of each pair of rows."""
    return torch.linalg.vector_norm(h_i - h_j, dim=1)


def branches(model: SiameseNet, x_i: torch.Tensor, x_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both branches through the shared weights as one batch, so BatchNorm sees one set of statistics."""
    out = model(torch.cat([x_i, x_j]))
    return out[: len(x_i)], out[len(x_i) :]


@pytest.mark.parametrize("label", [1.0, 0.0])
def test_one_step_moves_pairs_the_right_way(label: float) -> None:
    model = net(24, (32, 16))
    x_i, x_j = torch.randn(12, 24), torch.randn(12, 24)
    y = torch.full((12,), label)
    margin = 2.0  # unit outputs are at most 2 apart: every negative pair is inside the margin
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    with torch.no_grad():
        before = distances(*branches(model, x_i, x_j))
    loss = contrastive_loss(*branches(model, x_i, x_j), y, margin)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        h_i, h_j = branches(model, x_i, x_j)
        after = distances(h_i, h_j)
        assert float(contrastive_loss(h_i, h_j, y, margin)) < loss.item()
    if label == 1.0:
        assert float(after.mean()) < float(before.mean())
    else:
        assert float(after.mean()) > float(before.mean())


def test_gradients_reach_every_layer() -> None:
    model = net(24, (32, 16, 8))
    x_i, x_j = torch.randn(10, 24), torch.randn(10, 24)
    loss = contrastive_loss(*branches(model, x_i, x_j), torch.tensor([1.0, 0.0] * 5), margin=1.0)
    loss.backward()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    assert linears[0].weight.grad is not None and float(linears[0].weight.grad.abs().sum()) > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


def test_structure_follows_paper_equation_one() -> None:
    model = SiameseNet(24)
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.Linear | nn.BatchNorm1d | nn.ReLU | nn.Dropout)]
    # Four 256-wide FC layers, each with BatchNorm; ReLU after all but the last (the embedding layer).
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 3 + [nn.Linear, nn.BatchNorm1d]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [256, 256, 256, 256]
    assert model.output_dim == 256

    with_relu = net(24, (16, 8), last_activation=True, dropout=0.2)
    kinds = [type(m) for m in with_relu.modules() if isinstance(m, nn.Linear | nn.BatchNorm1d | nn.ReLU | nn.Dropout)]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.ReLU]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"widths": ()}, "widths"),
        ({"widths": (8, 0)}, "widths"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"skip_weight": -1.0}, "skip_weight"),
        ({"skip_weight": float("inf")}, "skip_weight"),
    ],
)
def test_architecture_is_validated_once_for_the_net_the_training_config_and_the_spec(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiameseArchitecture(**fields)
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**fields)
    with pytest.raises(ValueError, match=message):
        spec(**fields)


def test_the_net_keeps_only_the_architecture_of_what_it_is_built_from() -> None:
    config = TrainingConfig(widths=(16, 8), dropout=0.2, margin=0.5, epochs=3)
    model = SiameseNet(24, config)
    assert model.architecture == SiameseArchitecture(widths=(16, 8), dropout=0.2)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [16, 8]
    assert any(isinstance(m, nn.Dropout) and m.p == 0.2 for m in model.modules())
    with pytest.raises(ValueError, match="input_dim"):
        SiameseNet(0, config)


def test_outputs_are_unit_rows_and_use_the_whole_sphere() -> None:
    x = torch.randn(64, 24)
    with torch.no_grad():
        out = net(24, (32, 16))(x)
        confined = net(24, (32, 16), last_activation=True)(x)
    assert out.shape == (64, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(64), atol=1e-5)
    # Without a final ReLU the embedding has negative coordinates, so cosines can be negative.
    assert bool((out < 0).any())
    assert float((out[:32] * out[32:]).sum(dim=1).min()) < 0
    # With it, every coordinate is >= 0: the positive orthant.
    assert bool((confined >= 0).all())


def trained_a_little(model: SiameseNet) -> SiameseNet:
    """Move the BatchNorm running statistics away from their initial values."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, model.input_dim) * 3 + 1)
    return model


def test_embed_is_deterministic_eval_mode_float32() -> None:
    model = trained_a_little(net(24, (32, 16), dropout=0.5))
    x = np.random.default_rng(3).normal(size=(50, 24))
    first = model.embed(x, batch_size=7)
    second = model.embed(x, batch_size=7)
    assert first.dtype == np.float32 and first.shape == (50, 16) and first.flags.c_contiguous
    assert np.array_equal(first, second)
    assert model.training  # the caller's mode is restored
    np.testing.assert_allclose(model.embed(x), first, atol=1e-6)  # batch size does not change the result
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x.astype(np.float32))).numpy(), first, atol=1e-6)
    # One row works in eval mode (training-mode BatchNorm would refuse a batch of one).
    np.testing.assert_allclose(model.embed(x[:1]), first[:1], atol=1e-6)
    assert model.embed(np.zeros((0, 24))).shape == (0, 16)
    with pytest.raises(ValueError, match=r"\(n, 24\)"):
        model.embed(np.zeros((3, 23)))


def test_multitask_loss_is_the_weighted_sum() -> None:
    v2p, labeled = torch.tensor(0.8, requires_grad=True), torch.tensor(0.3, requires_grad=True)
    total = multitask_loss({"v2p": v2p, "labeled": labeled}, {"v2p": 1.0, "labeled": 2.5, "unused": 9.0})
    assert float(total.detach()) == pytest.approx(1.0 * 0.8 + 2.5 * 0.3)
    total.backward()
    assert v2p.grad is not None and float(v2p.grad) == pytest.approx(1.0)
    assert labeled.grad is not None and float(labeled.grad) == pytest.approx(2.5)


def test_multitask_loss_missing_weight_names_the_task() -> None:
    with pytest.raises(KeyError, match="'labeled'"):
        multitask_loss({"v2p": torch.tensor(1.0), "labeled": torch.tensor(1.0)}, {"v2p": 1.0})
    with pytest.raises(ValueError, match="'v2p'"):
        multitask_loss({"v2p": torch.tensor(1.0)}, {"v2p": -1.0})
    with pytest.raises(ValueError, match="at least one"):
        multitask_loss({}, {"v2p": 1.0})


def spec(**fields: object) -> ModelSpec:
    base: dict[str, object] = {"widths": (32, 16), "margin": 1.0, "training_data": "pairs-abc", "tasks": {"v2p": 1.0}}
    return ModelSpec.for_config(CONFIG, **{**base, **fields})


def test_spec_content_excludes_created_at_and_tracks_the_compound_features() -> None:
    a, b = spec(created_at="2024-05-01T00:00:00+00:00"), spec(created_at="2025-01-01T00:00:00+00:00")
    assert a.content_json() == b.content_json()
    assert "created_at" not in a.content_json()
    assert spec(margin=0.5).content_json() != a.content_json()
    assert spec(tasks={"v2p": 1.0, "labeled": 2.0}).content_json() != a.content_json()
    assert a.input_dim == 384 + 8
    assert a.compound_model_id == CONFIG.model_id
    assert all("batch_size" not in f for f in a.features)  # not content, as in the compound model id
    assert ModelSpec.model_validate_json(a.model_dump_json()) == a
    model = a.build()
    assert a.describes(model) and not spec(widths=(32, 8)).describes(model)


def test_spec_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="input_dim 25 does not match the features' compound width 392"):
        ModelSpec(input_dim=25, features=CONFIG.model_dump(mode="json")["features"], training_data="x", tasks={"v2p": 1.0})
    with pytest.raises(ValueError, match="tasks"):
        spec(tasks={})
    with pytest.raises(ValueError, match="extra"):
        ModelSpec.model_validate({**spec().model_dump(mode="json"), "surprise": 1})


def test_skip_output_concatenates_the_input_and_averages_the_cosines() -> None:
    """With skip_weight 1 the embedding's cosine is the mean of the input's and the learned part's."""
    torch.manual_seed(3)
    model = net(6, (4,), skip_weight=1.0).eval()
    x = torch.randn(5, 6)
    out = model(x)
    assert out.shape == (5, 10) and model.output_dim == 10
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-6)
    plain = net(6, (4,)).eval()
    plain.load_state_dict(model.state_dict())
    inputs = torch.nn.functional.normalize(x, dim=1)
    learned = plain(x)
    expected = 0.5 * (inputs[0] @ inputs[1] + learned[0] @ learned[1])
    assert torch.isclose(out[0] @ out[1], expected, atol=1e-6)


def test_learned_feature_weights_scale_blocks_and_get_gradients() -> None:
    """One weight per feature block, exp-parameterised, applied before both the layers and the skip."""
    model = net(24, (16,), skip_weight=1.0, learn_feature_weights=True, feature_widths=(16, 8))
    weights = model.feature_weights()
    assert weights is not None and torch.equal(weights, torch.ones(2))
    model.eval()
    x = torch.randn(6, 24)
    before = model(x)
    with torch.no_grad():
        # Doubling both blocks' weights changes the input's scale only; BatchNorm in eval mode is affine,
        # so the output must change (the scale is not normalised away): the weights are live.
        model.feature_log_weights.copy_(torch.log(torch.tensor([2.0, 2.0])))
    assert not torch.allclose(model(x), before)
    with torch.no_grad():
        # Silence the second block (weight e^-30): the skip half then sees only the first block, direction-wise.
        model.feature_log_weights.copy_(torch.tensor([0.0, -30.0]))
    skip_part = model(x)[:, :24]
    assert float(skip_part[:, 16:].detach().abs().max()) < 1e-9
    model.train()
    with torch.no_grad():
        model.feature_log_weights.zero_()
    loss = contrastive_loss(*branches(model, torch.randn(8, 24), torch.randn(8, 24)), torch.tensor([1.0, 0.0] * 4), margin=1.0)
    loss.backward()
    assert model.feature_log_weights.grad is not None and float(model.feature_log_weights.grad.abs().min()) > 0


def test_feature_widths_must_cover_the_input_and_are_used_only_to_learn_weights() -> None:
    with pytest.raises(ValueError, match="learn_feature_weights needs the compound's feature_widths"):
        net(24, (8,), learn_feature_weights=True)
    plain = net(24, (8,), feature_widths=(16, 8))
    assert plain.feature_widths is None and plain.feature_weights() is None
    with pytest.raises(ValueError, match="sum to input_dim 24"):
        net(24, (8,), learn_feature_weights=True, feature_widths=(16, 4))
    with pytest.raises(ValueError, match="positive"):
        net(24, (8,), learn_feature_weights=True, feature_widths=(24, 0))


def test_spec_with_learned_feature_weights_builds_the_blocks_of_its_features() -> None:
    spec = ModelSpec.for_config(CONFIG, widths=(16,), learn_feature_weights=True, training_data="t", tasks={"labelled": 1.0})
    assert spec.feature_widths == (384, 8)
    model = spec.build()
    assert model.feature_widths == (384, 8) and spec.describes(model)
    assert not spec.model_copy(update={"learn_feature_weights": False}).describes(model)
    assert spec.content_json() != spec.model_copy(update={"learn_feature_weights": False}).content_json()


# The features the demo config had when these ids were pinned: a fixed input, so only the hashing can move them.
PINNED_FEATURES = [
    {"type": "text_embedding", "name": "title_embedding", "model": "all-MiniLM-L6-v2", "fields": ["title"], "weight": 1.0},
    {"type": "char_ngram", "name": "lexical", "fields": ["title"], "ngram_min": 3, "ngram_max": 5, "dims": 2048, "weight": 1.0},
    {"type": "model_tokens", "name": "model_tokens", "fields": ["title"], "dims": 1024, "weight": 0.5},
]


def test_ids_are_pinned_for_the_demo_config() -> None:
    """The compound id and a spec's content (hence every model id) are content hashes: a refactor must not move them."""
    example = load_config(EXAMPLE_CONFIG)
    demo = parse_config({**example.model_dump(mode="json"), "features": PINNED_FEATURES})
    assert demo.compound_model_id == "compound-a442f0bbe71714f7"
    demo_spec = ModelSpec.for_config(
        demo, widths=(256,), skip_weight=1.0, learn_feature_weights=True, training_data="abc", tasks={"labelled": 1.0}
    )
    assert demo_spec.compound_model_id == demo.compound_model_id
    assert hashlib.sha256(demo_spec.content_json().encode()).hexdigest()[:16] == "6b917d2917e493a7"
