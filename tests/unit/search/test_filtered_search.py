"""Filter-aware search (search.eligibility, search.dense, search.exact) against filtering an exact search.

Real vectors and titles of the Amazon-Google subset; sellers reassigned so that one holds most of the catalog, a
second a tenth and a third a few items, with a few NULLs: every way the dense search can go is taken.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from pss_ops import storage
from pss_ops.config import PostFilterConfig
from pss_ops.manifests import IndexSpec
from pss_ops.search.dense import filtered_search
from pss_ops.search.eligibility import Eligibility
from pss_ops.search.exact import exact_search
from pss_ops.search.indexes import build_index
from tests.unit.conftest import TIE, Stepped, scope_vectors

FETCH = 13


def _seller(item: str) -> str | None:
    bucket = hashlib.sha256(item.encode()).digest()[0]
    return None if bucket < 1 else "tiny" if bucket < 3 else "small" if bucket < 40 else "big"


@pytest.fixture(scope="module")
def catalog(stepped: Stepped) -> tuple[pa.Table, np.ndarray]:
    """Both scopes' items as one catalog: ids with dominated sellers, and their vectors."""
    ids, blocks = [], []
    for scope in sorted({e.scope for e in stepped.embedded}):
        scope_ids, vectors = scope_vectors(stepped, scope)
        ids += scope_ids
        blocks.append(vectors)
    table = pa.table({"item_id": ids, "seller": pa.array([_seller(i) for i in ids], pa.string())})
    return table, np.vstack(blocks)


def _eligible(rules: PostFilterConfig, sellers: list[str | None]) -> np.ndarray:
    s = np.asarray(sellers, dtype=object)
    known = (s != None)[:, None] & (s != None)[None, :]  # noqa: E711
    same = s[:, None] == s[None, :]
    return known & (same if rules.same else ~same)


def _shallow(family: str) -> IndexSpec:
    """A small graph searched shallowly (efSearch 16), or an inverted file scanning 8 of its 16 lists: cheaper than exact
    search for the groups whose filter admits most rows. On a catalog this small the cost model would otherwise
    search all exactly."""
    if family == "hnsw":
        return IndexSpec(family="hnsw", hnsw_m=8, ef_construction=40, search_effort=16)
    return IndexSpec(family="ivf", nlist=16, search_effort=8)


@pytest.mark.parametrize("family", ["hnsw", "ivf"])
@pytest.mark.parametrize("rules", [PostFilterConfig(different=("seller",)), PostFilterConfig(same=("seller",))], ids=["different", "same"])
def test_dense_filtered_search_equals_filtering_exact_search(
    catalog: tuple[pa.Table, np.ndarray], rules: PostFilterConfig, family: str
) -> None:
    table, vectors = catalog
    sellers = table.column("seller").to_pylist()
    counts = {s: sellers.count(s) for s in set(sellers)}
    assert counts["big"] > 0.75 * len(sellers) and 0 < counts["tiny"] + counts[None] <= FETCH and counts[None] > 0
    spec = _shallow(family)
    index = build_index(vectors, spec)
    scores, rows, stats = filtered_search(index, vectors, FETCH, spec, lambda: vectors, Eligibility(rules, table, table))

    if rules.different:
        assert stats.exact > 0 and stats.selector > 0 and stats.exclusion_list > 0  # every path taken
    else:
        assert stats.exact > 0 and stats.selector > 0
    eligible = _eligible(rules, sellers)
    exact = vectors @ vectors.T
    hits = wanted = 0
    for q in range(len(vectors)):
        got = rows[q][rows[q] >= 0]
        assert eligible[q, got].all()  # nothing ineligible is ever returned
        want = np.sort(exact[q, eligible[q]])[::-1][:FETCH]
        assert len(got) == len(want)  # never short while eligible rows exist
        np.testing.assert_allclose(scores[q, : len(got)], exact[q, got], atol=TIE)  # scores are the true cosines
        if rules.different and sellers[q] == "big":
            # The dominant seller's queries: few eligible rows, searched exactly, identical to filtering exact search.
            np.testing.assert_allclose(scores[q, : len(got)], want, atol=TIE)
        hits += int((exact[q, got] >= (want[-1] - TIE if len(want) else np.inf)).sum())
        wanted += len(want)
    # The rest went through the index, approximate by design, here deliberately shallow. On these few hundred real
    # title vectors an inverted file's 16 lists split near neighbours more often than a graph loses them.
    assert hits / wanted >= (0.97 if family == "hnsw" else 0.95)
    assert len(stats.without_candidates) == counts[None]


def test_lexical_filtered_search_equals_filtering_the_full_sparse_product(stepped: Stepped, catalog: tuple[pa.Table, np.ndarray]) -> None:
    table, _ = catalog
    titles = {}
    for part in stepped.catalog_plan.partitions:
        chunk = storage.read_parquet(part.uri, columns=["item_id", "title"])
        titles.update(zip(chunk.column("item_id").to_pylist(), chunk.column("title").to_pylist()))
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(
        [titles[i] for i in table.column("item_id").to_pylist()]
    )
    rules = PostFilterConfig(different=("seller",))
    full = (matrix @ matrix.T).toarray()
    eligible = _eligible(rules, table.column("seller").to_pylist()) & (full > 0)
    # Rows another retriever found (any eligible rows, here drawn at random): their cosines come back too.
    rng = np.random.default_rng(3)
    also = np.full((full.shape[0], 3), -1, dtype=np.int64)
    for q in range(full.shape[0]):
        pool = np.flatnonzero(eligible[q])
        picked = rng.choice(pool, size=min(3, len(pool)), replace=False)
        also[q, : len(picked)] = picked
    scores, rows, also_scores = exact_search(
        matrix.tocsr(), matrix.tocsr(), FETCH, Eligibility(rules, table, table), positive_only=True, also=also
    )
    for q in range(full.shape[0]):
        want = np.sort(full[q, eligible[q]])[::-1][:FETCH]
        got = rows[q][rows[q] >= 0]
        assert len(got) == len(want) and eligible[q, got].all()
        np.testing.assert_allclose(scores[q, : len(got)], want, atol=1e-6)
        listed = also[q] >= 0
        np.testing.assert_allclose(also_scores[q][listed], full[q, also[q][listed]], atol=1e-6)
        assert np.isnan(also_scores[q][~listed]).all()


def test_dense_search_when_every_item_is_its_own_seller(catalog: tuple[pa.Table, np.ndarray]) -> None:
    """Offers from many shops (WDC): one group per query, nearly every row eligible; one masked exact pass."""
    table, vectors = catalog
    own = table.set_column(table.schema.get_field_index("seller"), "seller", table.column("item_id"))
    spec = IndexSpec(family="hnsw", hnsw_m=16, ef_construction=80, search_effort=128)
    index = build_index(vectors, spec)
    rules = Eligibility(PostFilterConfig(different=("seller",)), own, own)
    scores, rows, stats = filtered_search(index, vectors, FETCH, spec, lambda: vectors, rules)
    assert stats.exact == len(vectors) and stats.selector == stats.exclusion_list == stats.fallback == 0
    exact = vectors @ vectors.T
    np.fill_diagonal(exact, -np.inf)  # the only row a query's own seller holds is itself
    want = -np.sort(-exact, axis=1)[:, :FETCH]
    np.testing.assert_allclose(scores, want, atol=TIE)
    assert not (rows == np.arange(len(vectors))[:, None]).any()
