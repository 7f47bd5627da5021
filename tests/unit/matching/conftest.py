"""Labelled candidate pairs of the real subset run: the query step's candidates, labelled by the subset's true pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from pss_ops import storage
from pss_ops.matching.scoring import candidate_features
from pss_ops.quality.matching import pair_keys
from tests.conftest import Subset
from tests.unit.conftest import Stepped, queried_table


@dataclass(frozen=True)
class Labelled:
    """Every candidate row's features, its pair's ids, and whether the pair is a true match."""

    features: pd.DataFrame
    pairs: pd.DataFrame
    labels: np.ndarray


def subset_items(stepped: Stepped) -> pd.DataFrame:
    frames = [storage.read_parquet(p.uri).to_pandas() for p in stepped.catalog_plan.partitions]
    return pd.concat(frames, ignore_index=True).set_index("item_id")


@pytest.fixture(scope="session")
def labelled(stepped: Stepped, ag_subset: Subset) -> Labelled:
    table = queried_table(stepped)
    features = candidate_features(stepped.ctx.config, table, subset_items(stepped))
    pairs = pd.DataFrame({"id_a": table.column("query_item_id").to_pylist(), "id_b": table.column("candidate_item_id").to_pylist()})
    truth = set(pair_keys(ag_subset.matches["id_a"], ag_subset.matches["id_b"]))
    labels = np.array([key in truth for key in pair_keys(pairs["id_a"], pairs["id_b"])], dtype=np.int64)
    return Labelled(features, pairs, labels)
