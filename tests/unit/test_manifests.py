"""Manifests round-trip through standard JSON, undefined figures (NaN) included."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pss_ops.manifests import BuiltIndex, IndexSpec, SearchCalibration


def test_a_nan_recall_is_written_as_standard_json_and_reads_back_as_nan(tmp_path: Path) -> None:
    # A one-item index partition: its rows have no neighbour, so the calibration's recall is undefined.
    spec = IndexSpec(family="hnsw", hnsw_m=32, ef_construction=200, search_effort=64)
    calibration = SearchCalibration(
        index=spec,
        target_recall=0.99,
        k=10,
        search_k=11,
        queries=1,
        ladder=((64, math.nan),),
        met_target=False,
        max_effort=512,
        seconds=0.01,
    )
    built = BuiltIndex(
        number=3,
        name="index-00003",
        scope="tv-mounts",
        index_uri="/runs/r/index/index-00003.faiss",
        ids_uri="/runs/r/index/index-00003.ids.parquet",
        rows=1,
        index=spec,
        seconds=0.02,
        measured_recall=math.nan,
        calibrations=(calibration,),
    )
    uri = tmp_path / "index-00003.json"
    built.write(str(uri))
    text = uri.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(f"non-standard JSON constant {name}")))
    read = BuiltIndex.read(str(uri))
    assert math.isnan(read.measured_recall or 0.0) and len(read.calibrations) == 1 and math.isnan(read.calibrations[0].ladder[0][1])
    assert read.model_copy(update={"measured_recall": None, "calibrations": ()}) == built.model_copy(
        update={"measured_recall": None, "calibrations": ()}
    )
