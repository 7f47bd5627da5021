"""The plan_index step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from pss_ops import layout
from pss_ops.manifests import (
    IndexPlan,
)
from pss_ops.steps.plan_index import plan_index
from tests.unit.conftest import Stepped


@pytest.mark.parametrize("partition_size", [150, 100, 61, 7, 2, 10_000])
def test_plan_index_slices_cover_every_row_once_and_are_balanced(stepped: Stepped, tmp_path: Path, partition_size: int) -> None:
    # A copy of the run's embed manifests, so this plan does not replace the module run's index plan.
    run_uri = tmp_path / "run"
    shutil.copytree(Path(stepped.ctx.run_uri) / "embed", run_uri / "embed", ignore=shutil.ignore_patterns("*.parquet"))
    config = stepped.ctx.config.model_copy(update={"index": stepped.ctx.config.index.model_copy(update={"partition_size": partition_size})})
    ctx = stepped.ctx.model_copy(update={"run_uri": str(run_uri), "config": config})

    index_plan = plan_index(ctx, stepped.catalog_plan)

    assert IndexPlan.read(layout.index_plan_manifest(ctx.run_uri)) == index_plan
    assert index_plan.dim == config.dim
    assert [p.number for p in index_plan.partitions] == list(range(len(index_plan.partitions)))
    scope_of_uri = {e.uri: e.scope for e in stepped.embedded}
    covered: Counter[tuple[str, int]] = Counter()
    for part in index_plan.partitions:
        assert part.rows == sum(s.stop - s.start for s in part.slices) <= partition_size
        for piece in part.slices:
            assert scope_of_uri[piece.uri] == part.scope
            assert 0 <= piece.start < piece.stop
            covered.update((piece.uri, row) for row in range(piece.start, piece.stop))
    expected = Counter((e.uri, row) for e in stepped.embedded for row in range(e.rows))
    assert covered == expected
    for scope in {e.scope for e in stepped.embedded}:
        sizes = [p.rows for p in index_plan.for_scope(scope)]
        total = sum(e.rows for e in stepped.embedded if e.scope == scope)
        assert len(sizes) == -(-total // partition_size)
        assert max(sizes) - min(sizes) <= 1, sizes
