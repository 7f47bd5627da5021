"""Row L2 normalisation: unit rows, zero rows kept zero, the same bits in place and not."""

from __future__ import annotations

import numpy as np

from pss_ops.features.normalise import l2_normalise


def test_rows_become_unit_and_zero_rows_stay_zero() -> None:
    rows = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=np.float32)
    out = l2_normalise(rows)
    assert np.allclose(np.linalg.norm(out[[0, 2]], axis=1), 1.0)
    assert out[1].tolist() == [0.0, 0.0] and not np.isnan(out).any()
    assert rows[0].tolist() == [3.0, 4.0]  # the input is left alone unless out= is given


def test_in_place_gives_the_same_bits() -> None:
    rows = np.random.default_rng(0).standard_normal((50, 33)).astype(np.float32)
    fresh = l2_normalise(rows)
    same = rows.copy()
    assert l2_normalise(same, out=same) is same
    assert np.array_equal(fresh, same)
