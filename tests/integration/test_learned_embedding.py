"""A registered SiameseNet in the config: `pss run` embeds through it, and the cache keys on its model id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pss_ops.config import AppConfig, parse_config
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache
from pss_ops.features.compound import compound_vectors
from pss_ops.features.embedded import read_vectors
from pss_ops.learning.model import ModelSpec, SiameseNet
from pss_ops.learning.registry import save_model
from pss_ops.learning.settings import SiameseArchitecture
from pss_ops.orchestration.run import run_pipeline
from tests.conftest import SNAPSHOT, Subset


def _lexical_config(**extra: object) -> AppConfig:
    return parse_config(
        {
            "application": "learned",
            "features": [{"type": "char_ngram", "dims": 128}],
            "k": 5,
            "post_filter": {"different": ["seller"]},
            "catalog": {"partition_size": 200},
            "index": {"partition_size": 300},
            "quality": {"recall_sample": 50},
            **extra,
        }
    )


@pytest.fixture
def registered(tmp_path: Path) -> tuple[str, str, SiameseNet]:
    """A small untrained-but-fixed SiameseNet over the lexical compound, saved to a registry."""
    torch.manual_seed(7)
    model = SiameseNet(128, SiameseArchitecture(widths=(64, 32))).eval()
    spec = ModelSpec.for_config(_lexical_config(), widths=(64, 32), training_data="fixture", tasks={"labelled": 1.0})
    registry = str(tmp_path / "registry")
    return registry, save_model(model, spec, registry), model


def _embedded(out: Path) -> tuple[list[str], np.ndarray]:
    ids, blocks = [], []
    for path in sorted(out.glob("runs/*/embed/*.parquet")):
        table, vectors = read_vectors(str(path))
        ids += table.column("item_id").to_pylist()
        blocks.append(vectors)
    return ids, np.vstack(blocks)


def test_pss_run_embeds_through_the_registered_model(registered: tuple[str, str, SiameseNet], ag_subset: Subset, tmp_path: Path) -> None:
    registry, model_id, model = registered
    config = _lexical_config(embedding_model={"registry_uri": registry, "model_id": model_id})
    assert config.model_id == model_id != config.compound_model_id

    first = run_pipeline(config, catalog_uri=str(ag_subset.catalog), out_dir=str(tmp_path / "a"), snapshot_date=SNAPSHOT, progress=print)
    assert first["model_id"] == model_id and first["cache"]["misses"] == first["counts"]["rows_accepted"]
    ids, vectors = _embedded(tmp_path / "a")
    assert vectors.shape[1] == 32
    # The run's vectors are the model applied to the compound embedding.
    frame = pd.read_csv(ag_subset.catalog, dtype=str, keep_default_na=False).set_index("item_id").loc[ids].reset_index()
    expected = model.embed(compound_vectors(frame, config))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    # The cache holds them under the model's id, and nothing under the compound id.
    cache = SQLiteEmbeddingCache(str(tmp_path / "a" / "cache" / "embeddings.sqlite"))
    try:
        assert cache.count(model_id) == len(ids) and cache.count(config.compound_model_id) == 0
    finally:
        cache.close()

    # A second run, cold in another directory, gives the same vectors and the same published rows.
    second = run_pipeline(config, catalog_uri=str(ag_subset.catalog), out_dir=str(tmp_path / "b"), snapshot_date=SNAPSHOT, progress=print)
    assert second["search"]["recall_at_k"] >= 0.99
    assert np.array_equal(_embedded(tmp_path / "b")[1], vectors)
    rows_a = pd.read_parquet(tmp_path / "a" / "similar_items.parquet").drop(columns="run_id")
    rows_b = pd.read_parquet(tmp_path / "b" / "similar_items.parquet").drop(columns="run_id")
    pd.testing.assert_frame_equal(rows_a, rows_b)


def test_a_model_trained_on_other_features_is_refused(registered: tuple[str, str, SiameseNet], ag_subset: Subset, tmp_path: Path) -> None:
    registry, model_id, _ = registered
    other = _lexical_config(embedding_model={"registry_uri": registry, "model_id": model_id})
    other = parse_config({**other.model_dump(mode="json"), "features": [{"type": "char_ngram", "dims": 128, "ngram_min": 2}]})
    with pytest.raises(ValueError, match=f"model {model_id} was trained on compound features"):
        run_pipeline(other, catalog_uri=str(ag_subset.catalog), out_dir=str(tmp_path / "x"), snapshot_date=SNAPSHOT, progress=print)
