"""Config loading and validation: examples load, errors name the bad key, model_id tracks features."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pss_ops.config import (
    AppConfig,
    ConfigError,
    DenseRetriever,
    LexicalRetriever,
    ModelTokenFeature,
    PrecomputedVectorFeature,
    TextEmbeddingFeature,
    load_config,
    parse_config,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

BASE: dict[str, Any] = {
    "application": "unit_test_app",
    "features": [
        {"type": "text_embedding", "fields": ["title"], "weight": 1.0, "batch_size": 64},
        {"type": "char_ngram", "name": "lexical", "ngram_min": 3, "ngram_max": 5, "dims": 2048, "weight": 1.0},
        {"type": "precomputed", "column": "image_vector", "dim": 4, "weight": 2.0},
    ],
    "post_filter": {"different": ["seller"]},
}


def base(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(overrides)
    return data


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, AppConfig)
    assert config.application == path.stem
    assert config.features
    assert config.dim == sum(f.dim for f in config.features)


def test_example_feature_types_are_parsed() -> None:
    configs = {p.stem: load_config(p) for p in EXAMPLES}
    near = configs["near_identical"]
    assert isinstance(near.features[0], TextEmbeddingFeature)
    assert isinstance(near.features[1], ModelTokenFeature) and near.features[1].weight == 1.0
    assert len(near.features) == 2
    assert near.dim == 384 + 1024
    assert near.post_filter.different == ("seller",)
    dense, lexical = near.retrievers
    assert isinstance(dense, DenseRetriever) and dense.weight == 0.3
    assert isinstance(lexical, LexicalRetriever) and (lexical.analyzer, lexical.ngram_min, lexical.ngram_max, lexical.weight) == (
        "char_wb",
        2,
        4,
        0.7,
    )
    assert near.lexical_retrievers == (lexical,)
    visual = configs["visually_similar_same_color"]
    assert isinstance(visual.features[0], PrecomputedVectorFeature)
    assert visual.features[0].dim == 512
    assert visual.filter_attributes == ("color",)


def test_valid_base_config_parses() -> None:
    config = parse_config(base())
    assert config.dim == 384 + 2048 + 4
    assert config.filter_attributes == ("seller",)


def test_bad_value_names_key(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "app.yaml", base(index={"hnsw_m": 1}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "index.hnsw_m" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_key_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(post_filter={"samee": ["color"]}))
    assert "post_filter.samee" in str(info.value)


def test_unknown_top_level_key_names_it() -> None:
    data = base()
    data["kk"] = 5
    with pytest.raises(ConfigError, match="'kk'"):
        parse_config(data)


def test_feature_with_bad_type_names_list_position() -> None:
    data = base()
    data["features"][0]["type"] = "word2vec"
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "features.0" in str(info.value)
    assert "features.1" not in str(info.value)


def test_feature_with_bad_field_value_names_list_position_and_field() -> None:
    data = base()
    data["features"][1]["dims"] = 8
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert "features.1." in message
    assert "dims" in message


def test_invalid_yaml_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("application: x\nfeatures: [ {type: char_ngram\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_non_mapping_yaml_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_model_id_changes_with_weight() -> None:
    changed = base()
    changed["features"][2]["weight"] = 3.0
    assert parse_config(changed).model_id != parse_config(base()).model_id


def test_model_id_changes_with_dims() -> None:
    changed = base()
    changed["features"][1]["dims"] = 1024
    assert parse_config(changed).model_id != parse_config(base()).model_id


def test_model_id_ignores_batch_size() -> None:
    changed = base()
    changed["features"][0]["batch_size"] = 256
    original = parse_config(base())
    rebatched = parse_config(changed)
    assert rebatched.features[0].batch_size == 256  # type: ignore[union-attr]
    assert rebatched.model_id == original.model_id
    assert original.model_id.startswith("compound-")


def test_model_id_ignores_non_feature_settings() -> None:
    assert parse_config(base(k=50, index={"ef_search": 64})).model_id == parse_config(base()).model_id


@pytest.mark.parametrize("section", ["same", "different"])
def test_post_filter_on_title_refused(section: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(post_filter={section: ["title"]}))
    message = str(info.value)
    assert f"post_filter.{section}" in message
    assert "title" in message


def test_duplicate_feature_names_refused() -> None:
    data = base()
    data["features"].append({"type": "char_ngram", "name": "lexical", "dims": 512})
    with pytest.raises(ConfigError, match="lexical"):
        parse_config(data)


def test_retrievers_default_to_the_dense_compound_and_are_validated() -> None:
    base = load_config(EXAMPLES[0]).model_dump(mode="json", exclude={"retrievers"})
    assert parse_config(base).retrievers == (DenseRetriever(type="dense"),)
    lexical = {"type": "lexical", "name": "words", "analyzer": "word", "ngram_min": 1, "ngram_max": 2}
    parsed = parse_config({**base, "retrievers": [{"type": "dense"}, lexical]})
    assert parsed.lexical_retrievers[0].name == "words" and parsed.lexical_retrievers[0].fields == ("title",)
    for retrievers, message in (
        ([lexical], "exactly one 'dense' retriever"),
        ([{"type": "dense"}, {"type": "dense", "name": "other"}], "exactly one 'dense' retriever"),
        ([{"type": "dense"}, {**lexical, "name": "dense"}], "retriever names must be unique, repeated: dense"),
        ([{"type": "dense"}, {**lexical, "ngram_min": 3, "ngram_max": 2}], "ngram_min must not exceed ngram_max"),
        ([{"type": "dense"}, {**lexical, "name": "Bad Name"}], "key 'retrievers.1.lexical.name'"),
        ([{"type": "dense", "weight": 0}], "key 'retrievers.0.dense.weight'"),
        ([], "key 'retrievers'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({**base, "retrievers": retrievers})
