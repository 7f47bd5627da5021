"""Synthetic part-number negatives on real Amazon–Google rows: one digit of one part number changes, nothing else."""

from __future__ import annotations

import pandas as pd
import pytest

from pss_ops.learning.part_numbers import ID_PREFIX, TASK, part_number_negatives, part_numbers
from tests.conftest import DATA

CATALOG = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)


def _changed_positions(a: str, b: str) -> list[int]:
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


def test_part_numbers_are_mixed_tokens_of_five_or_more_characters_but_not_versions() -> None:
    text = "kingston hx426c15fb 2007 v11 i7 1tb st31000340as mc309ll/a win2000 v8a2b edition 600000"
    assert [m.group() for m in part_numbers(text)] == ["hx426c15fb", "st31000340as", "mc309ll", "win2000"]
    assert part_numbers("hoyle puzzle & board games 2007") == []


def test_each_copy_differs_from_its_item_in_one_digit_of_one_part_number() -> None:
    items = CATALOG["item_id"].tolist()
    copies, pairs = part_number_negatives(CATALOG, items, ["title"], per_item=1, seed=3)
    by_id = CATALOG.set_index("item_id")
    with_part_number = [item for item in items if part_numbers(by_id.at[item, "title"])]
    assert pairs.task == TASK and len(pairs) == len(with_part_number) == len(copies) > 50
    assert pairs.id_a.tolist() == with_part_number and not pairs.label.any()
    assert copies["item_id"].tolist() == pairs.id_b.tolist() == [f"{ID_PREFIX}:0:{item}" for item in with_part_number]
    assert list(copies.columns) == list(CATALOG.columns)
    for item, copy in zip(pairs.id_a, copies.to_dict("records")):
        original = by_id.loc[item]
        title = original["title"]
        (at,) = _changed_positions(title, copy["title"])
        assert title[at].isdecimal() and copy["title"][at].isdecimal()
        assert any(m.start() <= at < m.end() for m in part_numbers(title)), (title, copy["title"])
        assert all(copy[c] == original[c] for c in CATALOG.columns if c not in ("item_id", "title"))


def test_several_per_item_are_distinct_items_and_the_draw_is_seeded() -> None:
    items = CATALOG["item_id"].tolist()[:300]
    copies, pairs = part_number_negatives(CATALOG, items, ["title", "description"], per_item=3, seed=0)
    assert len(copies) == 3 * len(set(pairs.id_a)) and copies["item_id"].is_unique
    again, _ = part_number_negatives(CATALOG, items, ["title", "description"], per_item=3, seed=0)
    other, _ = part_number_negatives(CATALOG, items, ["title", "description"], per_item=3, seed=1)
    pd.testing.assert_frame_equal(copies, again)
    assert copies["item_id"].tolist() == other["item_id"].tolist()
    assert (copies[["title", "description"]] != other[["title", "description"]]).any(axis=None)
    # The description is a field too: some copies change it and keep the title.
    by_id = CATALOG.set_index("item_id")
    assert any(c["title"] == by_id.at[a, "title"] for a, c in zip(pairs.id_a, copies.to_dict("records")))


def test_bad_arguments_name_the_problem() -> None:
    items = CATALOG["item_id"].tolist()[:5]
    with pytest.raises(KeyError, match="'colour'"):
        part_number_negatives(CATALOG, items, ["title", "colour"], per_item=1, seed=0)
    with pytest.raises(KeyError, match="amazon:nope"):
        part_number_negatives(CATALOG, [*items, "amazon:nope"], ["title"], per_item=1, seed=0)
    with pytest.raises(ValueError, match="per_item"):
        part_number_negatives(CATALOG, items, ["title"], per_item=0, seed=0)
    first = next(i for i, title in enumerate(CATALOG["title"]) if part_numbers(title))
    clash = CATALOG.iloc[[first]].assign(item_id=f"{ID_PREFIX}:0:{CATALOG['item_id'].iloc[first]}")
    with pytest.raises(ValueError, match="collides"):
        part_number_negatives(pd.concat([CATALOG, clash]), CATALOG["item_id"].tolist(), ["title"], per_item=1, seed=0)
