"""Synthetic part-number negatives: a catalog item against a copy of itself with one digit of a part number changed.

Labelled pairs like Amazon–Google's call two editions of one product the same ("2005" vs "2007" match there),
so a model trained on them alone learns that digits barely matter. Offers that differ only by a part number
("hx426c15fb" vs "hx424c15fb") are the hardest negatives of near-identical matching (WDC computers, Coupang's
duplicates), and no labelled set of ours has them. A part number, unlike a year or a version, is an identity
claim: change one of its digits and it names another product. These pairs teach exactly that and nothing about
editions, so they do not contradict the labels (bench/ablation.py and BENCHMARKS.md give the effect).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pss_ops.learning.pairs import PairSet

TASK = "part_numbers"
ID_PREFIX = "synthetic:part-number"
# Letters and digits mixed, at least five characters: "hx426c15fb", "mc309ll", "st31000340as". Years ("2007"),
# plain numbers ("500") and short tokens ("i7", "1tb", "v11") are left alone: they are editions and specs.
PART_NUMBER_PATTERN = re.compile(r"(?u)\b(?=\w*[^\W\d])(?=\w*\d)\w{5,}\b")
_VERSION = re.compile(r"(?i)v\d+\w*")


def part_numbers(text: str) -> list[re.Match[str]]:
    """The part-number-like tokens of a text, in order (versions such as "v8a2" excluded)."""
    return [m for m in PART_NUMBER_PATTERN.finditer(text) if not _VERSION.fullmatch(m.group())]


def part_number_negatives(
    catalog: pd.DataFrame, item_ids: Sequence[str], fields: Sequence[str], *, per_item: int, seed: int
) -> tuple[pd.DataFrame, PairSet]:
    """Up to per_item synthetic negatives for each item whose fields hold a part number.

    Each negative is a copy of the item's catalog row with one digit of one part number changed (token and digit
    drawn at random, the new digit always differs), given the id "synthetic:part-number:<k>:<item id>". Items without
    a part number get none. Returns the synthetic rows (the catalog's columns) and the (item, copy, 0) pairs.
    Deterministic for a seed.
    """
    if per_item < 1:
        raise ValueError(f"per_item must be at least 1, got {per_item}")
    missing = [f for f in fields if f not in catalog.columns]
    if missing:
        raise KeyError(f"part-number negatives read field(s) {missing} that the catalog lacks; it has {list(catalog.columns)}")
    rows = catalog.drop_duplicates("item_id").reset_index(drop=True)
    position = {item: i for i, item in enumerate(rows["item_id"])}
    unknown = [item for item in item_ids if item not in position]
    if unknown:
        raise KeyError(f"{len(unknown)} item id(s) are not in the catalog, e.g. {unknown[:3]}")
    # Plain lists for the scan: it visits every item, and only the few with a part number need their whole row.
    texts = {field: rows[field].tolist() for field in fields}
    rng = np.random.default_rng(seed)
    copies: list[dict[str, object]] = []
    pairs: list[tuple[str, str, int]] = []
    for item in dict.fromkeys(item_ids):
        i = position[item]
        found = [(field, m) for field in fields if isinstance(texts[field][i], str) for m in part_numbers(texts[field][i])]
        for k in range(per_item if found else 0):
            field, match = found[rng.integers(len(found))]
            digits = [match.start() + j for j, c in enumerate(match.group()) if c.isdecimal()]
            at = digits[rng.integers(len(digits))]
            text: str = texts[field][i]
            changed = str((int(text[at]) + int(rng.integers(1, 10))) % 10)
            copy = rows.iloc[i].to_dict()
            copy[field] = text[:at] + changed + text[at + 1 :]
            copy["item_id"] = f"{ID_PREFIX}:{k}:{item}"
            if copy["item_id"] in position:
                raise ValueError(f"catalog item id {copy['item_id']!r} collides with a synthetic part-number copy's id")
            copies.append(copy)
            pairs.append((item, copy["item_id"], 0))
    return pd.DataFrame(copies, columns=catalog.columns), PairSet.from_rows(TASK, pairs)
