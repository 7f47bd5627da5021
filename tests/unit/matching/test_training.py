"""Labelled pairs for pss train-matcher: every unusable row is refused with its row named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pss_ops.matching.training import LabelError, check_items, read_labelled_pairs
from tests.unit.conftest import Stepped


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "labelled.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


GOOD = "id_a,id_b,label,note\na,b,1,x\nc,d,0,\nb,a,1,same pair reversed\n e , f ,0,\n"


def test_reads_labels_and_collapses_a_pair_given_both_ways(tmp_path: Path) -> None:
    frame = read_labelled_pairs(_write(tmp_path, GOOD))
    assert frame[["id_a", "id_b", "label"]].values.tolist() == [["a", "b", 1], ["c", "d", 0], ["e", "f", 0]]
    assert frame["line"].tolist() == [2, 3, 5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id_a,id_b,label\na,b,1\nc,d,yes\n", r"row 2 \(line 3\): label must be 0 or 1, got 'yes'"),
        ("id_a,id_b,label\na,b,1\nc,d,\n", r"row 2 \(line 3\): label must be 0 or 1, got ''"),
        ("id_a,id_b,label\na,b,1\nc,d,2\n", r"row 2 \(line 3\): label must be 0 or 1, got '2'"),
        ("id_a,id_b,label\na,b,1\n,d,0\n", r"row 2 \(line 3\): id_a is empty"),
        ("id_a,id_b,label\na,b,1\nc,c,0\n", r"row 2 \(line 3\): pairs an item with itself"),
        ("id_a,id_b,label\na,b,1\nc,d,0\nb,a,0\n", r"row 3 \(line 4\): labels the pair \(b, a\) 0, but row 1 labels it 1"),
        ("id_a,id_b,label\na,b,1\nc,d,1\n", "every pair is labelled matches \\(1\\)"),
        ("id_a,id_b,label\na,b,0\n", "every pair is labelled non-matches \\(0\\)"),
        ("id_a,id_b\na,b\n", "lacks column\\(s\\) label"),
        ("id_a,id_b,label\n", "holds no labelled pairs"),
    ],
)
def test_bad_labels_name_the_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        read_labelled_pairs(_write(tmp_path, text))


def test_an_item_outside_the_accepted_catalog_is_named_with_its_line(tmp_path: Path, stepped: Stepped) -> None:
    frame = stepped.catalog_plan.partitions[0]
    from pss_ops import storage

    ids = storage.read_parquet(frame.uri, columns=["item_id"]).column("item_id").to_pylist()
    uri = _write(tmp_path, f"id_a,id_b,label\n{ids[0]},{ids[1]},1\n{ids[2]},amazon:no-such-item,0\n")
    labelled = read_labelled_pairs(uri)
    with pytest.raises(LabelError, match=r"row 2 \(line 3\): id_b 'amazon:no-such-item' is not an accepted item of the catalog"):
        check_items(uri, labelled, stepped.catalog_plan)
