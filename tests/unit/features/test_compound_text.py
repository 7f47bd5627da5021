"""The text a feature reads, and the content hash the cache keys on, when a field is NULL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pss_ops.features.compound import content_hashes, feature_text


def frame_as_embed_reads_it() -> pd.DataFrame:
    # A partition as embed reads it: Arrow text columns with NULLs, to pandas (NaN for NULL under its string dtype).
    table = pa.table(
        {
            "title": pa.array(["Sony WH-1000XM4 headphones", "tv", "Kindle Paperwhite"], pa.string()),
            "description": pa.array([None, None, "6.8 inch display, 16 GB"], pa.string()),
        }
    )
    return table.to_pandas()


def test_a_null_field_is_no_text_never_the_word_nan() -> None:
    texts = feature_text(frame_as_embed_reads_it(), ("title", "description"))
    assert texts == ["Sony WH-1000XM4 headphones", "tv", "Kindle Paperwhite 6.8 inch display, 16 GB"]


def test_a_null_field_hashes_the_same_whether_pandas_holds_it_as_nan_or_none() -> None:
    read = frame_as_embed_reads_it()
    as_none = pd.DataFrame({"title": read["title"].tolist(), "description": [None, None, "6.8 inch display, 16 GB"]}, dtype=object)
    assert content_hashes(read, ("title", "description")) == content_hashes(as_none, ("title", "description"))
    # and a real value still changes the hash
    changed = as_none.assign(description=[None, "55 inch", "6.8 inch display, 16 GB"])
    assert content_hashes(changed, ("title", "description"))[1] != content_hashes(as_none, ("title", "description"))[1]
    assert np.all([len(h) == 32 for h in content_hashes(read, ("title", "description"))])
