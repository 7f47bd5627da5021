"""Training pairs: the PairSet record and its fingerprint, reading pairs CSVs, parsing pair sources."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pss_ops.learning.pairs import PAIR_SOURCE_PATTERN, PairSet, format_pair_source, pairs_fingerprint, parse_pair_source, read_pairs
from tests.conftest import DATA

# --- PairSet -----------------------------------------------------------------------------------------------


def test_pairset_views_concat_and_fingerprint() -> None:
    pos = PairSet.from_rows("t", [("a", "b", 1), ("c", "d", 1)])
    neg = PairSet.from_rows("t", [("a", "d", 0)])
    both = pos.concat(neg)
    assert len(both) == 3 and both.label.dtype == np.int8 and both.id_a.dtype == object
    assert both.positives.rows() == pos.rows() and both.negatives.rows() == neg.rows()
    # Order-independent, but sensitive to a label, an id, the task.
    assert both.fingerprint() == neg.concat(pos).fingerprint()
    assert both.fingerprint() != PairSet.from_rows("t", [("a", "b", 1), ("c", "d", 1), ("a", "d", 1)]).fingerprint()
    assert both.fingerprint() != PairSet.from_rows("t", [("a", "b", 1), ("c", "d", 1), ("a", "e", 0)]).fingerprint()
    assert both.fingerprint() != PairSet("u", both.id_a, both.id_b, both.label).fingerprint()
    assert pairs_fingerprint([pos, neg]) == both.fingerprint()
    with pytest.raises(ValueError, match="task 'u'"):
        pos.concat(PairSet.from_rows("u", [("x", "y", 1)]))
    with pytest.raises(ValueError, match="0 or 1"):
        PairSet.from_rows("t", [("a", "b", 2)])
    with pytest.raises(ValueError, match="one length"):
        PairSet("t", np.array(["a"], object), np.array(["b", "c"], object), np.array([1]))


# --- read_pairs ---------------------------------------------------------------------------------------------


def test_read_pairs_real_matches_are_all_positive() -> None:
    pairs = read_pairs(str(DATA / "matches.csv"), "matches")
    expected = pd.read_csv(DATA / "matches.csv", dtype=str)
    assert len(pairs) == len(expected) and pairs.task == "matches"
    assert (pairs.label == 1).all()
    assert pairs.id_a.tolist() == expected["id_a"].tolist() and pairs.id_b.tolist() == expected["id_b"].tolist()


def test_read_pairs_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "labeled.csv"
    path.write_text("id_a,id_b,label\na,b,1\na,c,0\nd,e, 1\n", encoding="utf-8")
    pairs = read_pairs(str(path), "labeled")
    assert pairs.rows() == [("labeled", "a", "b", 1), ("labeled", "a", "c", 0), ("labeled", "d", "e", 1)]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("id_a,label\na,1\n", r"missing column 'id_b'"),
        ("id_b,id_a_x\na,b\n", r"missing column 'id_a'"),
        ("id_a,id_b,label\na,b,1\na,c,0\nd,e,yes\n", r"column 'label' must be 0 or 1, got 'yes' in data row 3"),
        ("id_a,id_b,label\na,b,1\na,c,\n", r"column 'label' must be 0 or 1, got '' in data row 2"),
        ("id_a,id_b\na,b\n,c\n", r"column 'id_a' is empty in data row 2"),
        ("id_a,id_b\na,b\nc,c\n", r"data row 2 pairs item 'c' with itself"),
    ],
)
def test_read_pairs_errors_name_file_column_row(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad_pairs.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=pattern) as err:
        read_pairs(str(path), "t")
    assert "bad_pairs.csv" in str(err.value)


# --- parse_pair_source --------------------------------------------------------------------------------------


def test_parse_pair_source_reads_the_task_after_the_last_colon(tmp_path: Path) -> None:
    assert parse_pair_source("pairs/m.csv:clicks") == ("pairs/m.csv", "clicks")
    assert parse_pair_source("s3://b/m.csv:clicks") == ("s3://b/m.csv", "clicks")
    # No task: the default, also when the only colon is the URI scheme's.
    assert parse_pair_source("m.csv") == ("m.csv", "labelled")
    assert parse_pair_source("s3://b/m.csv") == ("s3://b/m.csv", "labelled")
    assert parse_pair_source(" m.csv:x ", default_task="other") == ("m.csv", "x")
    # A base resolves relative local paths only.
    assert parse_pair_source("pairs/m.csv:clicks", base=tmp_path) == (str(tmp_path / "pairs" / "m.csv"), "clicks")
    assert parse_pair_source("s3://b/m.csv:clicks", base=tmp_path) == ("s3://b/m.csv", "clicks")
    assert parse_pair_source(format_pair_source(str(tmp_path / "m.csv"), "t")) == (str(tmp_path / "m.csv"), "t")


@pytest.mark.parametrize("value", ["m.csv:", ":labelled", "", "m.csv:two words"])
def test_parse_pair_source_refuses_malformed_entries(value: str) -> None:
    with pytest.raises(ValueError, match=r"pairs entry .* must be '<pairs.csv>' or '<pairs.csv>:<task>'"):
        parse_pair_source(value)


@pytest.mark.parametrize("value", ["m.csv", "s3://b/m.csv", ":labelled", "m.csv:"])
def test_parse_pair_source_without_a_default_needs_a_task(value: str) -> None:
    with pytest.raises(ValueError, match=r"must be '<pairs.csv>:<task>'"):
        parse_pair_source(value, default_task=None)


def test_pair_source_pattern_accepts_exactly_what_the_strict_parser_accepts() -> None:
    for value in ["m.csv:labelled", "s3://b/m.csv:clicks", "m.csv", "s3://b/m.csv", ":labelled", "m.csv:", "m.csv:a b"]:
        try:
            parse_pair_source(value, default_task=None)
            parsed = True
        except ValueError:
            parsed = False
        assert bool(re.search(PAIR_SOURCE_PATTERN, value)) == parsed, value
