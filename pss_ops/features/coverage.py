"""Which items the configured features and retrievers can represent, decided per item without running them.

An item that every retriever sees as nothing (the title "tv" under 3-character n-grams and digit-bearing
tokens) would get an all-zero vector, ten "similar items" at score 0 and a place in other items' lists.
The plan step rejects it instead, so it needs, at catalog scale, a predicate per feature that agrees with
the vectorizer on every text. Each one mirrors a scikit-learn analyzer (sklearn/feature_extraction/text.py)
applied to the text the feature reads (features.compound.feature_text), lowercased first:

- "char": runs of two or more whitespace characters become one space (`_white_spaces`), then every
  substring of ngram_min..ngram_max characters is a term: non-empty iff ngram_min characters remain;
- "char_wb": each whitespace-separated word, padded with a space each side, yields at least one term
  however short it is: non-empty iff there is a word;
- "word": the token pattern's matches, then their n-grams: non-empty iff ngram_min tokens are found;
- a text embedding needs a visible character; precomputed vectors are checked as vectors (catalog.vectors).

Counts are hashed with alternate_sign=False, so terms never cancel: one term is a non-zero row. Arrow
settles most items at once from printable ASCII (a sufficient condition); Python decides the rest exactly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops.config import (
    AppConfig,
    CharNgramFeature,
    LexicalRetriever,
    ModelTokenFeature,
    PrecomputedVectorFeature,
    TextEmbeddingFeature,
    VectorRetriever,
)

# scikit-learn's whitespace normalisation of the char analyzers, and the word analyzer's default token pattern.
WHITE_SPACES = re.compile(r"\s\s+")
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
# Printable ASCII other than the space: visible, never whitespace, one character however it is lowercased.
_PRINTABLE_ASCII = "[!-~]"
_PRINTABLE_BYTES = pa.array([bytes([b]) for b in range(0x21, 0x7F)], pa.binary())
_INVISIBLE_CATEGORIES = ("Cc", "Cf")

FieldArrays = Mapping[str, pa.Array]


def is_visible(text: str) -> bool:
    """A character that is not whitespace, a control (Cc) or a format character (Cf: zero-width space, BOM)."""
    return any(not c.isspace() and unicodedata.category(c) not in _INVISIBLE_CATEGORIES for c in text)


def _matches(array: pa.Array, pattern: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.match_substring_regex(array, pattern), False).to_numpy(zero_copy_only=False), dtype=bool)


def _counts(array: pa.Array, pattern: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.count_substring_regex(array, pattern), 0).to_numpy(zero_copy_only=False))


def _rows(array: pa.Array, mask: np.ndarray) -> pa.Array:
    """The array's cells where the mask is set (the array itself when it is set throughout: no copy)."""
    return array if mask.all() else array.filter(pa.array(mask))


def visible_mask(array: pa.Array) -> np.ndarray:
    """Per text cell: does it hold a visible character (NULL does not)."""
    array = array.cast(pa.string())
    # Most cells start with printable ASCII: a one-byte look settles them, a search the others, Python the rest.
    first = pc.binary_slice(array.cast(pa.binary()), 0, 1)
    found = np.asarray(pc.is_in(first, value_set=_PRINTABLE_BYTES).to_numpy(zero_copy_only=False), dtype=bool)
    unsure = ~found & np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    found[unsure] = _matches(_rows(array, unsure), _PRINTABLE_ASCII)
    rest = np.flatnonzero(unsure & ~found)
    found[rest] = [is_visible(text) for text in array.take(pa.array(rest, pa.int64())).to_pylist()]
    return found


def char_ngrams_found(text: str, ngram_min: int) -> bool:
    """sklearn's "char" analyzer yields a term: ngram_min characters once lowercased and whitespace collapsed."""
    return len(WHITE_SPACES.sub(" ", text.lower())) >= ngram_min


def char_wb_ngrams_found(text: str) -> bool:
    """sklearn's "char_wb" analyzer yields a term: a word once lowercased and whitespace collapsed."""
    return bool(WHITE_SPACES.sub(" ", text.lower()).split())


def word_ngrams_found(text: str, token_pattern: str, ngram_min: int) -> bool:
    """sklearn's "word" analyzer yields a term: ngram_min tokens in the lowercased text."""
    return len(re.findall(token_pattern, text.lower())) >= ngram_min


@dataclass(frozen=True)
class TextNeed:
    """What one text feature or lexical retriever needs of an item to give it a non-zero representation."""

    label: str
    need: str
    fields: tuple[str, ...]
    max_chars: int | None
    found: Callable[[str], bool]
    # Per row, (met, unmet) as far as Arrow alone can tell from the need's field arrays; never wrong, rows
    # in neither go to `found` on the feature text.
    settle: Callable[[list[pa.Array]], tuple[np.ndarray, np.ndarray]]

    def describe(self) -> str:
        where = "" if self.fields == ("title",) else f" in {'+'.join(self.fields)}"
        return f"{self.label} needs {self.need}{where}"


def _any_field(test: Callable[[pa.Array], np.ndarray]) -> Callable[[list[pa.Array]], tuple[np.ndarray, np.ndarray]]:
    """Met where one field alone meets the need: the feature text holds each non-blank field whole."""

    def settle(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        met = np.zeros(len(arrays[0]), dtype=bool)
        for array in arrays:
            met |= test(array)
        return met, np.zeros(len(met), dtype=bool)

    return settle


def _ascii(array: pa.Array) -> np.ndarray:
    """NULL or ASCII only: Arrow's regular expressions then read the text as Python's do."""
    return np.asarray(pc.fill_null(pc.string_is_ascii(array), True).to_numpy(zero_copy_only=False), dtype=bool)


def _printable_at_least(count: int) -> str:
    return "(?s)" + ".*".join([_PRINTABLE_ASCII] * count)


def _char_need(label: str, fields: tuple[str, ...], ngram_min: int) -> TextNeed:
    return TextNeed(
        label,
        "a character" if ngram_min == 1 else f"at least {ngram_min} characters",
        fields,
        None,
        lambda text: char_ngrams_found(text, ngram_min),
        # Whitespace collapsing never removes a printable character, and lowercasing keeps each one.
        _any_field(lambda array: _matches(array, _printable_at_least(ngram_min))),
    )


def _char_wb_need(label: str, fields: tuple[str, ...]) -> TextNeed:
    return TextNeed(
        label, "a character other than whitespace", fields, None, char_wb_ngrams_found, _any_field(lambda a: _matches(a, _PRINTABLE_ASCII))
    )


def _word_need(label: str, fields: tuple[str, ...], ngram_min: int) -> TextNeed:
    def settle(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        # Fields are joined with a space, so tokens never span two; in an ASCII field Arrow counts them as Python does.
        tokens = np.zeros(len(arrays[0]), dtype=np.int64)
        for array in arrays:
            tokens += np.where(_ascii(array), _counts(array, r"\b\w\w+\b"), 0)
        return tokens >= ngram_min, np.zeros(len(tokens), dtype=bool)

    words = "a word" if ngram_min == 1 else f"{ngram_min} words"
    return TextNeed(
        label,
        f"{words} of two or more letters or digits",
        fields,
        None,
        lambda t: word_ngrams_found(t, DEFAULT_TOKEN_PATTERN, ngram_min),
        settle,
    )


def _model_token_need(label: str, fields: tuple[str, ...], token_pattern: str) -> TextNeed:
    def settle(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        # An ASCII digit is a word character, inside a run the pattern matches whole; text that is ASCII throughout
        # without one has no digit at all (the Unicode digits \d also matches are not ASCII).
        met, plain = np.zeros(len(arrays[0]), dtype=bool), np.ones(len(arrays[0]), dtype=bool)
        for array in arrays:
            met |= _matches(array, "[0-9]")
            plain &= _ascii(array)
        return met, plain & ~met

    return TextNeed(label, "a token with a digit", fields, None, lambda text: word_ngrams_found(text, token_pattern, 1), settle)


def _visible_need(label: str, fields: tuple[str, ...], max_chars: int) -> TextNeed:
    def settle(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        # Only the first field's head is surely within the first max_chars characters of the text.
        met = _matches(pc.utf8_slice_codeunits(arrays[0], 0, max_chars), _PRINTABLE_ASCII)
        return met, np.zeros(len(met), dtype=bool)

    return TextNeed(label, f"a visible character in its first {max_chars}", fields, max_chars, is_visible, settle)


class FeatureCoverage:
    """Per item, whether any retriever of a config represents it by a non-zero vector, and what each one needs."""

    def __init__(self, config: AppConfig) -> None:
        # Imported here, not at the top: they load scikit-learn and the text model's modules, which every `pss`
        # command would then pay for at start-up through the catalog's import of this module.
        from pss_ops.features.compound import feature_text
        from pss_ops.features.lexical import MODEL_TOKEN_PATTERN

        self._feature_text = feature_text
        # A precomputed vector is non-zero for every accepted row (catalog.vectors rejects the rest), and the dense
        # retriever's compound is non-zero when any of its features is.
        self.always = any(isinstance(f, PrecomputedVectorFeature) for f in config.features) or any(
            isinstance(r, VectorRetriever) for r in config.retrievers
        )
        needs: list[TextNeed] = []
        for feature in config.features:
            label = f"{feature.type} {feature.name!r}"
            if isinstance(feature, CharNgramFeature):
                needs.append(_char_need(label, feature.fields, feature.ngram_min))
            elif isinstance(feature, ModelTokenFeature):
                needs.append(_model_token_need(label, feature.fields, MODEL_TOKEN_PATTERN))
            elif isinstance(feature, TextEmbeddingFeature):
                needs.append(_visible_need(label, feature.fields, feature.max_chars))
        for retriever in config.lexical_retrievers:
            label = f"lexical retriever {retriever.name!r} ({retriever.analyzer} {retriever.ngram_min}-{retriever.ngram_max})"
            needs.append(_lexical_need(label, retriever))
        self.needs = tuple(needs)

    def uncovered(self, fields: FieldArrays) -> np.ndarray:
        """Rows no retriever can represent; fields maps catalog text columns to equal-length arrays (NULL: blank)."""
        rows = len(next(iter(fields.values()))) if fields else 0
        pending = np.zeros(rows, dtype=bool) if self.always else np.ones(rows, dtype=bool)
        for need in self.needs:
            if not pending.any():
                break
            pending[np.flatnonzero(pending)[self._found(need, fields, pending)]] = False
        return pending

    def _found(self, need: TextNeed, fields: FieldArrays, rows: np.ndarray) -> np.ndarray:
        """For the rows the mask selects: does the need hold."""
        selected = int(rows.sum())
        if not need.fields:
            return np.zeros(selected, dtype=bool)  # a feature reading no field sees "" for every item
        present = {f: _rows(fields[f], rows).cast(pa.string()) for f in need.fields if f in fields}
        # Arrow looks at every field in the feature's order, an absent one as NULL; the text is feature_text's own.
        found, unmet = need.settle([present.get(f, pa.nulls(selected, pa.string())) for f in need.fields])
        rest = ~found & ~unmet
        if rest.any():
            frame = pd.DataFrame({f: _rows(a, rest).to_pylist() for f, a in present.items()}, index=range(int(rest.sum())))
            found[rest] = [need.found(text) for text in self._feature_text(frame, need.fields, need.max_chars)]
        return found

    def reason(self, title: str) -> str:
        """The reject reason of an uncovered item: what each feature and lexical retriever needs."""
        shown = title if len(title) <= 60 else title[:60] + "..."
        return f"no features: title {shown!r} yields no features: " + ", ".join(need.describe() for need in self.needs)


def _lexical_need(label: str, retriever: LexicalRetriever) -> TextNeed:
    if retriever.analyzer == "char":
        return _char_need(label, retriever.fields, retriever.ngram_min)
    if retriever.analyzer == "char_wb":
        return _char_wb_need(label, retriever.fields)
    return _word_need(label, retriever.fields, retriever.ngram_min)
