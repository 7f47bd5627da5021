"""Which candidates each query may list, as the search sees them: the post-filter's attribute rules over integer codes.

The rules (search.filters.attribute_rules) are applied during the search, not after it: every rule attribute of
the queries and of an index partition's rows is dictionary-encoded into one code space (NULL = -1), so a rule is
an integer comparison, and the queries that share their rule values share one set of eligible rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops.config import PostFilterConfig
from pss_ops.search.filters import attribute_rules

NULL = -1


@dataclass(frozen=True)
class QueryGroup:
    """Queries with the same rule values, and their eligible rows: listed (`allowed`), or all rows but `excluded`."""

    positions: np.ndarray
    allowed: np.ndarray | None
    excluded: np.ndarray | None

    def eligible_count(self, rows: int) -> int:
        return len(self.allowed) if self.allowed is not None else rows - len(self.excluded if self.excluded is not None else ())

    def eligible_rows(self, rows: int) -> np.ndarray:
        if self.allowed is not None:
            return self.allowed
        keep = np.ones(rows, dtype=bool)
        if self.excluded is not None:
            keep[self.excluded] = False
        return np.flatnonzero(keep)


class Eligibility:
    """The rules of one query partition against one index partition's rows."""

    def __init__(self, rules: PostFilterConfig, queries: pa.Table, candidates: pa.Table):
        self.same = np.asarray([same for _, _, same in attribute_rules(rules)], dtype=bool)
        names = [attribute for _, attribute, _ in attribute_rules(rules)]
        self.rows = candidates.num_rows
        query_codes, candidate_codes = [], []
        for name in names:
            both = pa.chunked_array([*queries.column(name).cast(pa.string()).chunks, *candidates.column(name).cast(pa.string()).chunks])
            codes = pc.fill_null(both.dictionary_encode().combine_chunks().indices, NULL).to_numpy().astype(np.int64)
            query_codes.append(codes[: queries.num_rows])
            candidate_codes.append(codes[queries.num_rows :])
        self.query_codes = np.stack(query_codes, axis=1) if names else np.zeros((queries.num_rows, 0), np.int64)
        self.candidate_codes = np.stack(candidate_codes, axis=1) if names else np.zeros((self.rows, 0), np.int64)
        # Per rule, the rows sorted by code: the rows holding one value are a slice of it.
        self._order = [np.argsort(self.candidate_codes[:, j], kind="stable") for j in range(len(names))]
        self._sorted = [self.candidate_codes[order, j] for j, order in enumerate(self._order)]

    @property
    def has_rules(self) -> bool:
        return bool(self.same.size)

    def _rows_with(self, rule: int, code: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._sorted[rule], [code, code + 1])
        return self._order[rule][lo:hi]

    def mask(self, positions: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(queries, rows) verdicts: the query may list the row. rows: a (queries, n) array of row numbers, or every row."""
        q = self.query_codes[positions]
        c = self.candidate_codes if rows is None else self.candidate_codes[np.where(rows < 0, 0, rows)]
        shape = (len(positions), self.rows) if rows is None else rows.shape
        verdict = np.ones(shape, dtype=bool)
        for j, same in enumerate(self.same):
            qj = q[:, j][:, None]
            cj = c[:, j][None, :] if rows is None else c[..., j]
            known = (qj != NULL) & (cj != NULL)
            verdict &= known & ((cj == qj) if same else (cj != qj))
        if rows is not None:
            verdict &= rows >= 0
        return verdict

    def groups(self) -> Iterator[QueryGroup]:
        """The queries grouped by their rule values, each group's eligible rows in the cheaper of the two forms."""
        if not self.has_rules:
            yield QueryGroup(np.arange(len(self.query_codes)), None, None)
            return
        keys, inverse = np.unique(self.query_codes, axis=0, return_inverse=True)
        order = np.argsort(inverse.ravel(), kind="stable")
        bounds = np.searchsorted(inverse.ravel()[order], np.arange(len(keys) + 1))
        for g, key in enumerate(keys):
            positions = order[bounds[g] : bounds[g + 1]]
            if (key == NULL).any():
                # NULL proves neither sameness nor difference: no row passes (search.filters.attribute_verdict).
                yield QueryGroup(positions, np.zeros(0, np.int64), None)
            elif self.same.any():
                first = int(np.flatnonzero(self.same)[0])
                rows = np.sort(self._rows_with(first, int(key[first])))
                keep = self.mask(positions[:1], rows[None, :])[0]
                yield QueryGroup(positions, rows[keep], None)
            else:
                parts = [self._rows_with(j, int(key[j])) for j in range(len(key))] + [self._rows_with(j, NULL) for j in range(len(key))]
                yield QueryGroup(positions, None, np.unique(np.concatenate(parts)).astype(np.int64))
