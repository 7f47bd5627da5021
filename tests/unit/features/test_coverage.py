"""The coverage predicates agree with the real vectorizers on every text: real titles, short, unicode and invisible ones."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from pss_ops.config import AppConfig, parse_config
from pss_ops.features.compound import compound_vectors, feature_text
from pss_ops.features.coverage import (
    DEFAULT_TOKEN_PATTERN,
    FeatureCoverage,
    char_ngrams_found,
    char_wb_ngrams_found,
    is_visible,
    visible_mask,
    word_ngrams_found,
)
from pss_ops.features.lexical import MODEL_TOKEN_PATTERN, term_frequencies

DATA = Path(__file__).resolve().parents[3] / "data"

# Each one an edge of an analyzer: lowercasing that lengthens ("İ" is two characters lowercased), whitespace
# that is or is not collapsed (a lone tab is kept, a run becomes one space), characters Python calls
# whitespace that are also controls (U+001C, U+0085), format characters that are not whitespace (U+200B,
# U+FEFF, U+180E), digits that are not ASCII, and words too short for any n-gram.
EDGES = [
    "",
    " ",
    "  ",
    "\t",
    " \t\n ",
    "\u3000",
    "\xa0\xa0",
    "\u2028",
    "\x85",
    "\x1c\x1d",
    "\x00",
    "\u200b",
    "\ufeff",
    "\u180e",
    "\u200b\u200b\u200b",
    "a\u200bb",
    "a",
    "é",
    "ß",
    "İ",
    "İx",
    "Σ",
    "tv",
    "PC",
    "TV ",
    " tv",
    "t v",
    "t  v",
    "t\tv",
    "a b c",
    "ab",
    "abc",
    "abcd",
    "1",
    "12",
    "123",
    "x1",
    "1tb",
    "v 2",
    "١٢٣",
    "１２３",
    "x²",
    "²",
    "_1",
    "__",
    "a_b",
    "📱",
    "📱📱📱",
    "e\u0301",
    "中文",
    "中文标题",
    "ipad 2",
    "a.b",
    "-1-",
    "..",
    "...",
    "\u0130\u0130",
]
# Short strings drawn from the characters above, for the combinations a list would miss.
ALPHABET = [" ", "\t", "\n", "\u3000", "\x85", "\u200b", "a", "B", "1", "é", "İ", "_", "-", "٣", "²", "中", "📱"]


def varied_texts() -> list[str]:
    """A few thousand texts: real titles from two catalogs, the edges above and random short strings."""
    amazon_google = pd.read_csv(DATA / "amazon_google" / "catalog.csv", dtype=str, keep_default_na=False)
    wdc = pd.read_csv(DATA / "wdc_computers" / "products.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(2024)
    random_short = ["".join(rng.choice(ALPHABET, size=rng.integers(1, 6))) for _ in range(1500)]
    pairs = ["".join(p) for p in itertools.product(["", " ", "İ", "1", "ab", "\u200b"], repeat=2)]
    texts = [*amazon_google["title"], *wdc["title"], *EDGES, *pairs, *random_short]
    return list(dict.fromkeys(texts))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    found = varied_texts()
    assert len(found) > 5000
    return found


def hashed_rows(texts: list[str], **options: Any) -> np.ndarray:
    """Which texts the vectorizer gives a non-zero row, with the options lexical.py uses (lowercase, no sign flips)."""
    vectorizer = HashingVectorizer(n_features=1 << 18, alternate_sign=False, norm=None, lowercase=True, **options)
    return vectorizer.transform(texts).getnnz(axis=1) > 0


@pytest.mark.parametrize(("ngram_min", "ngram_max"), [(1, 1), (1, 3), (2, 4), (3, 5), (4, 4), (5, 7)])
def test_char_predicate_matches_the_char_analyzer(texts: list[str], ngram_min: int, ngram_max: int) -> None:
    expected = hashed_rows(texts, analyzer="char", ngram_range=(ngram_min, ngram_max))
    found = np.array([char_ngrams_found(t, ngram_min) for t in texts])
    mismatches = [t for t, a, b in zip(texts, found, expected) if a != b]
    assert not mismatches
    assert (~expected).sum() > 0  # the texts reach the edge


@pytest.mark.parametrize(("ngram_min", "ngram_max"), [(1, 1), (2, 4), (3, 5), (5, 5)])
def test_char_wb_predicate_matches_the_char_wb_analyzer(texts: list[str], ngram_min: int, ngram_max: int) -> None:
    expected = hashed_rows(texts, analyzer="char_wb", ngram_range=(ngram_min, ngram_max))
    found = np.array([char_wb_ngrams_found(t) for t in texts])
    assert [t for t, a, b in zip(texts, found, expected) if a != b] == []
    assert (~expected).sum() > 0


@pytest.mark.parametrize(("ngram_min", "ngram_max"), [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)])
def test_word_predicate_matches_the_word_analyzer(texts: list[str], ngram_min: int, ngram_max: int) -> None:
    expected = hashed_rows(texts, analyzer="word", ngram_range=(ngram_min, ngram_max))
    found = np.array([word_ngrams_found(t, DEFAULT_TOKEN_PATTERN, ngram_min) for t in texts])
    assert [t for t, a, b in zip(texts, found, expected) if a != b] == []


def test_model_token_predicate_matches_the_model_token_vectorizer(texts: list[str]) -> None:
    expected = hashed_rows(texts, analyzer="word", token_pattern=MODEL_TOKEN_PATTERN, binary=True)
    found = np.array([word_ngrams_found(t, MODEL_TOKEN_PATTERN, 1) for t in texts])
    assert [t for t, a, b in zip(texts, found, expected) if a != b] == []
    assert expected.sum() > 1000 and (~expected).sum() > 1000


def _table(texts: list[str]) -> pa.Table:
    """The texts as titles; descriptions and brands NULL, whitespace-only, invisible or real, in turns."""
    descriptions = [None, "   ", "\u200b", "spare part 4", "é", "ab"]
    brands = [None, "hp", "  ", "x"]
    return pa.table(
        {
            "title": pa.array(texts, pa.string()),
            "description": pa.array([descriptions[i % len(descriptions)] for i in range(len(texts))], pa.string()),
            "brand": pa.array([brands[i % len(brands)] for i in range(len(texts))], pa.string()),
        }
    )


def _arrays(table: pa.Table) -> dict[str, pa.Array]:
    return {c: table.column(c).combine_chunks() for c in table.column_names}


def make_config(features: list[dict[str, Any]], lexical: list[dict[str, Any]] | None = None) -> AppConfig:
    retrievers = [{"type": "dense"}, *(lexical or [])]
    return parse_config({"application": "coverage_test", "features": features, "retrievers": retrievers})


CONFIGS = {
    "char3+model_tokens": ([{"type": "char_ngram", "dims": 256}, {"type": "model_tokens", "dims": 256}], None),
    "char1": ([{"type": "char_ngram", "dims": 256, "ngram_min": 1, "ngram_max": 2}], None),
    "char4 on title+description": ([{"type": "char_ngram", "dims": 256, "ngram_min": 4, "fields": ["title", "description"]}], None),
    "model_tokens on brand+title": ([{"type": "model_tokens", "dims": 256, "fields": ["brand", "title"]}], None),
    "model_tokens + lexical char_wb": ([{"type": "model_tokens", "dims": 256}], [{"type": "lexical"}]),
    "model_tokens + lexical char 3-5": ([{"type": "model_tokens", "dims": 256}], [{"type": "lexical", "analyzer": "char", "ngram_min": 3}]),
    "model_tokens + lexical words": ([{"type": "model_tokens", "dims": 256}], [{"type": "lexical", "analyzer": "word", "ngram_min": 1}]),
    "model_tokens + lexical word pairs on description": (
        [{"type": "model_tokens", "dims": 256}],
        [{"type": "lexical", "analyzer": "word", "ngram_min": 2, "ngram_max": 3, "fields": ["description", "title"]}],
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_uncovered_items_are_exactly_those_every_retriever_sees_as_zero(texts: list[str], name: str) -> None:
    features, lexical = CONFIGS[name]
    config = make_config(features, lexical)
    table = _table(texts)
    frame = table.to_pandas()  # as the embed step reads a partition
    compound = compound_vectors(frame, config)
    represented = np.linalg.norm(compound, axis=1) > 0
    for retriever in config.lexical_retrievers:
        represented |= term_frequencies(feature_text(frame, retriever.fields), retriever).getnnz(axis=1) > 0

    uncovered = FeatureCoverage(config).uncovered(_arrays(table))
    mismatches = [(t, bool(u)) for t, u, r in zip(texts, uncovered, represented) if u == r]
    assert mismatches == []
    assert uncovered.sum() > 0 or name == "char1"


def test_fields_the_catalog_lacks_read_as_nothing(texts: list[str]) -> None:
    config = make_config(
        [
            {"type": "char_ngram", "dims": 256, "fields": ["description", "title"]},
            {"type": "model_tokens", "dims": 256, "fields": ["brand", "title"]},
        ]
    )
    table = pa.table({"title": pa.array(texts, pa.string())})
    represented = np.linalg.norm(compound_vectors(table.to_pandas(), config), axis=1) > 0
    uncovered = FeatureCoverage(config).uncovered(_arrays(table))
    assert [t for t, u, r in zip(texts, uncovered, represented) if u == r] == []


def test_a_precomputed_vector_or_vector_retriever_covers_every_item(texts: list[str]) -> None:
    table = _table(texts[:50] + ["tv", ""])
    for config in (
        make_config([{"type": "char_ngram"}, {"type": "precomputed", "column": "image_vector", "dim": 4}]),
        make_config([{"type": "char_ngram"}], [{"type": "vector", "column": "image_vector", "dim": 4}]),
    ):
        assert not FeatureCoverage(config).uncovered(_arrays(table)).any()


def test_text_embedding_needs_a_visible_character_in_its_first_max_chars() -> None:
    config = make_config([{"type": "text_embedding", "max_chars": 16}])
    titles = ["tv", "\u200b\ufeff", " " * 20 + "late", "\u200b" * 20 + "x", "é", "\t\u3000"]
    arrays = {"title": pa.array(titles, pa.string())}
    assert FeatureCoverage(config).uncovered(arrays).tolist() == [False, True, True, True, False, True]


def test_reason_names_what_each_feature_and_retriever_needs() -> None:
    config = make_config(
        [{"type": "char_ngram", "name": "grams", "ngram_min": 3}, {"type": "model_tokens", "name": "numbers"}],
        [{"type": "lexical", "name": "words", "analyzer": "word", "fields": ["description"]}],
    )
    assert FeatureCoverage(config).reason("tv") == (
        "no features: title 'tv' yields no features: char_ngram 'grams' needs at least 3 characters, "
        "model_tokens 'numbers' needs a token with a digit, "
        "lexical retriever 'words' (word 2-4) needs 2 words of two or more letters or digits in description"
    )


def test_visible_means_something_other_than_whitespace_controls_and_format_characters() -> None:
    cells = ["tv", "", None, " \t", "\u200b", "\ufeff\u200b", "\x00", "\x85", "é", "中", "a\u200b", "\u180e", "\u2060", "📱"]
    expected = [True, False, False, False, False, False, False, False, True, True, True, False, False, True]
    assert [is_visible(c) if c is not None else False for c in cells] == expected
    assert visible_mask(pa.array(cells, pa.string())).tolist() == expected
