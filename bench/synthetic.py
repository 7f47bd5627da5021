"""Deterministic synthetic embeddings for the benchmarks: clustered unit vectors with planted near-duplicates.

Real product embeddings are neither uniform nor isotropic: items gather in categories and sub-types, each
spread along a few directions, and catalogs hold many near-identical listings. Isotropic Gaussian noise in
128 dimensions would make every neighbour almost equally far (the hardest, least realistic case for HNSW),
so each cluster here varies along its own low-rank basis, with a little full-rank noise on top.
"""

from __future__ import annotations

import numpy as np

CHUNK_ROWS = 65_536  # generation unit: bounds the float64 temporaries, and the output does not depend on it
INTRINSIC_RANK = 12
ITEMS_PER_CLUSTER = 2_000
CLUSTER_SPREAD = 0.35  # along the cluster's own directions, relative to the unit-length centre
ISOTROPIC_NOISE = 0.04  # full-rank noise, per vector (not per coordinate)
DUPLICATE_NOISE = 0.02  # a near-duplicate's distance from its original, per vector


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered_vectors(n: int, dim: int, seed: int = 0, duplicate_fraction: float = 0.05) -> np.ndarray:
    """n float32 unit vectors of width dim in unevenly sized low-rank clusters; a fraction are near-duplicates.

    A near-duplicate copies an earlier row of the same generation chunk plus a small perturbation
    (cosine ≈ 0.9998 to it), like one product listed by several sellers. Same arguments, same output.
    """
    if n < 1 or dim < 2:
        raise ValueError(f"need n >= 1 and dim >= 2, got n={n}, dim={dim}")
    if not 0 <= duplicate_fraction < 1:
        raise ValueError(f"duplicate_fraction must be in [0, 1), got {duplicate_fraction}")
    rank = min(INTRINSIC_RANK, dim)
    clusters = int(np.clip(n // ITEMS_PER_CLUSTER, 4, 2048))
    shared = np.random.default_rng(np.random.SeedSequence([seed, dim, clusters]))
    centres = _unit(shared.standard_normal((clusters, dim)))
    # Orthonormal directions per cluster, scaled so a cluster's spread is CLUSTER_SPREAD in total.
    bases = np.linalg.qr(shared.standard_normal((clusters, dim, rank)))[0] * (CLUSTER_SPREAD / np.sqrt(rank))
    # Uneven cluster sizes, as categories are: log-normal weights.
    weights = shared.lognormal(0.0, 1.0, clusters)
    weights /= weights.sum()

    out = np.empty((n, dim), dtype=np.float32)
    for number, start in enumerate(range(0, n, CHUNK_ROWS)):
        rows = min(CHUNK_ROWS, n - start)
        rng = np.random.default_rng(np.random.SeedSequence([seed, dim, clusters, number]))
        member = rng.choice(clusters, size=rows, p=weights)
        coords = rng.standard_normal((rows, rank))
        along = np.empty((rows, dim))
        # One small product per cluster: gathering a (rows, dim, rank) basis stack would need gigabytes.
        for cluster in np.unique(member):
            mine = member == cluster
            along[mine] = coords[mine] @ bases[cluster].T
        noise = rng.standard_normal((rows, dim)) * (ISOTROPIC_NOISE / np.sqrt(dim))
        block = _unit(centres[member] + along + noise)
        copies = np.flatnonzero(rng.random(rows) < duplicate_fraction)
        copies = copies[copies > 0]
        if len(copies):
            originals = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier row of this chunk
            jitter = rng.standard_normal((len(copies), dim)) * (DUPLICATE_NOISE / np.sqrt(dim))
            block[copies] = _unit(block[originals] + jitter)
        out[start : start + rows] = block
    return out
