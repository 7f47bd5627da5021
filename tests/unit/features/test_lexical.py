"""Hashed char n-gram vectors: unit-length float32, deterministic, model numbers decide similarity."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pss_ops.features.lexical import char_ngram_vectors, model_token_vectors

TITLES = [
    "sony pslx350h belt-drive turntable",
    "sony pslx250h stereo turntable black",
    "clickart 950 000 - premier image pack (dvd-rom)",
    "peachtree by sage premium accounting for nonprofits 2007",
    "emc retrospect 7.5 disk to disk windows",
]


def vectors(texts: list[str], dims: int = 2048) -> np.ndarray:
    return char_ngram_vectors(texts, ngram_min=3, ngram_max=5, dims=dims)


def test_rows_are_unit_length_float32() -> None:
    out = vectors(TITLES)
    assert out.dtype == np.float32
    assert out.shape == (len(TITLES), 2048)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert (out >= 0).all()


@pytest.mark.parametrize("dims", [16, 300, 4096])
def test_dims_respected(dims: int) -> None:
    out = vectors(TITLES, dims=dims)
    assert out.shape == (len(TITLES), dims)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_deterministic_and_independent_of_batch() -> None:
    first = vectors(TITLES)
    again = vectors(TITLES)
    assert first.tobytes() == again.tobytes()
    # One item's vector does not depend on the rest of the batch (the cache relies on it).
    alone = vectors([TITLES[3]])
    np.testing.assert_array_equal(alone[0], first[3])
    reordered = vectors(TITLES[::-1])
    np.testing.assert_array_equal(reordered[::-1], first)


def test_lowercased() -> None:
    lower, upper = vectors(["sony pslx350h turntable", "SONY PSLX350H Turntable"])
    np.testing.assert_array_equal(lower, upper)


def test_model_number_decides_similarity() -> None:
    query = "sony pslx350h turntable"
    same_model = "sony pslx350h belt-drive turntable black"
    other_model = "sony pslx250h belt-drive turntable black"
    q, same, other = vectors([query, same_model, other_model])
    assert float(q @ same) > float(q @ other)
    # And symmetrically from the other model number's side.
    q2, same2, other2 = vectors(["sony pslx250h turntable", other_model, same_model])
    assert float(q2 @ same2) > float(q2 @ other2)


def test_model_number_query_prefers_exact_listing_to_near_miss() -> None:
    q, exact, near = vectors(["sony pslx350h turntable", "sony pslx350h turntable", "sony pslx250h turntable"])
    assert float(q @ exact) == pytest.approx(1.0, abs=1e-6)
    assert float(q @ near) < float(q @ exact)
    assert float(q @ near) > 0.5  # still lexically close: only the model number differs


def test_related_titles_closer_than_unrelated() -> None:
    out = vectors(TITLES)
    sims = out @ out.T
    assert sims[0, 1] > sims[0, 2]
    assert sims[0, 1] > sims[0, 3]


@pytest.mark.parametrize("empty", ["", "ab"])
def test_empty_or_too_short_text_gives_zero_row(empty: str) -> None:
    out = vectors([TITLES[0], empty, TITLES[1]])
    assert np.isfinite(out).all()
    assert not out[1].any()
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2]], axis=1), 1.0, rtol=1e-5)


def test_sublinear_term_frequency() -> None:
    # Each n-gram weighs 1 + ln(count) before normalising, so repetition grows weight slowly.
    text = "turntable pslx350h pslx350h pslx350h"
    counts = Counter(text[i : i + n] for n in range(3, 6) for i in range(len(text) - n + 1))
    assert set(counts.values()) == {1, 2, 3}
    (row,) = char_ngram_vectors([text], ngram_min=3, ngram_max=5, dims=1 << 20)
    values = row[row > 0]
    assert len(values) == len(counts)  # no hash collisions at this width
    ratios = np.unique(np.round(values / values.min(), 4))
    np.testing.assert_allclose(ratios, [1.0, 1 + np.log(2), 1 + np.log(3)], rtol=1e-4)


# Real WDC computers offers (data/wdc_computers): the first two are labelled different products.
WDC_TITLES = [
    "wd red 1tb nas hard drive 3 5 wd10efrx",
    "wd red 3tb nas hard drive 3 5 wd30efrx",
    "western digital red wd10efrx 1tb",
    "hp enterprise proliant server",
]


def test_model_tokens_are_whole_tokens_with_a_digit() -> None:
    out = model_token_vectors(WDC_TITLES, dims=4096)
    assert out.dtype == np.float32 and out.shape == (4, 4096)
    cos = out @ out.T
    # Capacity and model number differ: as char n-grams these titles are near-identical, as tokens they share "3", "5".
    assert cos[0, 1] == pytest.approx(2 / 4)
    assert char_ngram_vectors(WDC_TITLES[:2], ngram_min=3, ngram_max=5, dims=4096).prod(axis=0).sum() > 0.75
    # Same product in other words: the tokens {1tb, wd10efrx} are shared exactly.
    assert cos[0, 2] == pytest.approx(2 / np.sqrt(4 * 2))
    # No digit-bearing token: a zero row, which the compound normalisation leaves zero.
    assert not out[3].any()
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1.0, rtol=1e-6)


def test_model_tokens_count_presence_not_repetition() -> None:
    once, twice = model_token_vectors(["dell 2407wfp monitor", "dell 2407wfp 2407wfp monitor"], dims=256)
    np.testing.assert_array_equal(once, twice)
