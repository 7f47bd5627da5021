"""Row L2 normalisation: the one definition every feature, the compound, training and evaluation use."""

from __future__ import annotations

import numpy as np


def l2_normalise(rows: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Each row divided by its L2 norm; all-zero rows stay zero (never NaN). `out=rows` normalises in place."""
    # Not sklearn's normalize or faiss.normalize_L2: both round differently in the last bit (measured on the
    # compound vectors), which would move published scores and tie orders; this is the arithmetic the
    # cached vectors were made with.
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    target = np.zeros_like(rows) if out is None else out
    return np.divide(rows, norms, out=target, where=norms > 0)
