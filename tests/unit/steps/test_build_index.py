"""The build_index step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import numpy as np

from pss_ops import layout, storage
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import (
    BuiltIndex,
)
from pss_ops.search.indexes import load_index
from tests.unit.conftest import TIE, Stepped


def test_build_index_ids_round_trip_and_self_search(stepped: Stepped) -> None:
    assert len(stepped.built) == len(stepped.index_plan.partitions) >= 4
    for part, built in zip(stepped.index_plan.partitions, stepped.built):
        assert BuiltIndex.read(layout.index_manifest(stepped.ctx.run_uri, part.name)) == built
        expected_ids: list[str] = []
        blocks = []
        for piece in part.slices:
            table, vectors = read_vectors(piece.uri, piece.start, piece.stop)
            expected_ids.extend(table.column("item_id").to_pylist())
            blocks.append(vectors)
        stored = np.vstack(blocks)
        ids_table = storage.read_parquet(built.ids_uri)
        assert ids_table.column("item_id").to_pylist() == expected_ids
        assert built.rows == part.rows == len(expected_ids)

        index = load_index(built.index_uri)
        assert index.ntotal == built.rows and index.d == stepped.ctx.config.dim
        index.hnsw.efSearch = 256
        scores, rows = index.search(stored, 1)
        # Every stored vector finds itself first (or an identical twin with the same score).
        exact_self = np.einsum("ij,ij->i", stored, stored)
        twin = np.einsum("ij,ij->i", stored[rows[:, 0]], stored) >= exact_self - TIE
        assert np.all((rows[:, 0] == np.arange(len(stored))) | twin)
        np.testing.assert_allclose(scores[:, 0], exact_self, atol=TIE)
        assert np.mean(rows[:, 0] == np.arange(len(stored))) > 0.95
