"""`pss train-matcher`: labelled pairs in, a calibrated matcher in the registry out (never promoted).

1. Read and check the labelled pairs (id_a,id_b,label; any other columns are ignored): every error names its row.
2. Run the search over the catalog (plan → query, as `pss run` does), refusing labels whose items the plan did not
   accept before any embedding is computed.
3. Each labelled pair's features are read off the candidate tables, in either direction (a pair both items list
   gives two rows). A labelled pair the search never produced cannot be scored at run time either: it is counted,
   and a true one counts against recall in the held-out figures.
4. Hold out a fifth of the labelled pairs (whole connected components), fit and calibrate a matcher on the rest and
   measure it on them; then fit the registered matcher, by the same recipe, on every pair.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pss_ops import storage
from pss_ops.config import AppConfig
from pss_ops.manifests import CatalogPlan, RunContext
from pss_ops.matching.model import BOOSTING_ROUNDS, TREE_PARAMS, fit_matcher, pair_folds
from pss_ops.matching.registry import MatcherSpec, save_matcher
from pss_ops.matching.scoring import partition_features
from pss_ops.quality.matching import decision_report, pair_keys

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("id_a", "id_b", "label")
HOLDOUT_FOLDS = 5  # one of five folds is held out: a fifth of the labelled pairs
# Fewer labelled candidate pairs of a class than this and neither the trees nor the calibration mean anything.
MIN_PER_CLASS = 10


class LabelError(ValueError):
    """The labelled pairs file is unusable; the message names the row."""


def _where(uri: str, index: int) -> str:
    # index counts data rows from 0; the header is line 1.
    return f"{uri} row {index + 1} (line {index + 2})"


def read_labelled_pairs(uri: str) -> pd.DataFrame:
    """id_a, id_b, label (0/1) and line, checked row by row; a pair labelled twice must agree."""
    try:
        frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LabelError(f"{uri} is not a readable CSV: {err}") from None
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise LabelError(f"{uri} lacks column(s) {', '.join(missing)}; a labelled-pairs file has the header id_a,id_b,label")
    if frame.empty:
        raise LabelError(f"{uri} holds no labelled pairs")
    frame = frame.loc[:, list(LABEL_COLUMNS)].apply(lambda column: column.str.strip())
    for column in ("id_a", "id_b"):
        blank = np.flatnonzero(frame[column].to_numpy() == "")
        if len(blank):
            raise LabelError(f"{_where(uri, int(blank[0]))}: {column} is empty")
    bad = np.flatnonzero(~frame["label"].isin(["0", "1"]).to_numpy())
    if len(bad):
        raise LabelError(f"{_where(uri, int(bad[0]))}: label must be 0 or 1, got {frame['label'].iat[int(bad[0])]!r}")
    same = np.flatnonzero(frame["id_a"].to_numpy() == frame["id_b"].to_numpy())
    if len(same):
        raise LabelError(f"{_where(uri, int(same[0]))}: pairs an item with itself ({frame['id_a'].iat[int(same[0])]!r})")
    frame["label"] = frame["label"].astype(np.int64)
    frame["key"] = pair_keys(frame["id_a"], frame["id_b"])
    frame["row"] = np.arange(len(frame))
    first = frame.drop_duplicates("key")
    disagree = frame.merge(first[["key", "label", "row"]], on="key", suffixes=("", "_first"))
    disagree = disagree[disagree["label"] != disagree["label_first"]]
    if len(disagree):
        row = disagree.iloc[0]
        raise LabelError(
            f"{_where(uri, int(row['row']))}: labels the pair ({row['id_a']}, {row['id_b']}) {row['label']}, "
            f"but row {int(row['row_first']) + 1} labels it {row['label_first']}"
        )
    if first["label"].nunique() < 2:
        only = "matches (1)" if first["label"].iat[0] == 1 else "non-matches (0)"
        raise LabelError(f"{uri}: every pair is labelled {only}; a matcher learns from both kinds")
    return first.drop(columns=["row"]).assign(line=first["row"].to_numpy() + 2).reset_index(drop=True)


def check_items(uri: str, labelled: pd.DataFrame, catalog_plan: CatalogPlan) -> None:
    """Every labelled item must be an accepted catalog item of the run (named with its row otherwise)."""
    accepted: set[str] = set()
    for partition in catalog_plan.partitions:
        accepted.update(storage.read_parquet(partition.uri, columns=["item_id"]).column("item_id").to_pylist())
    for column in ("id_a", "id_b"):
        unknown = np.flatnonzero(~labelled[column].isin(accepted).to_numpy())
        if len(unknown):
            at = labelled.iloc[int(unknown[0])]
            raise LabelError(
                f"{uri} row {at['line'] - 1} (line {at['line']}): {column} {at[column]!r} is not an accepted item of the catalog "
                f"(not in it, rejected (see rejects.csv), or outside the chosen categories); "
                f"{len(unknown)} row(s) name such items in {column}"
            )


def labelled_candidates(config: AppConfig, run_uri: str, queried: list[Any], labelled: pd.DataFrame) -> pd.DataFrame:
    """Pair features of every candidate row whose unordered pair is labelled, with id_a, id_b, key and label."""
    labels = labelled.set_index("key")["label"]
    frames = []
    for part in queried:
        table = storage.read_parquet(part.uri)
        keys = pair_keys(table.column("query_item_id").to_pylist(), table.column("candidate_item_id").to_pylist())
        hit = np.flatnonzero(pd.Index(keys).isin(labels.index))
        if not len(hit):
            continue
        # Over the whole table, as the post-filter computes them: a row's own rank counts every row of its query.
        features = partition_features(config, run_uri, part.scope, table, hit).reset_index(drop=True)
        rows = table.take(hit)
        features["id_a"] = rows.column("query_item_id").to_pylist()
        features["id_b"] = rows.column("candidate_item_id").to_pylist()
        features["key"] = keys[hit]
        features["label"] = labels.reindex(keys[hit]).to_numpy()
        frames.append(features)
    if not frames:
        return pd.DataFrame(columns=["id_a", "id_b", "key", "label"])
    return pd.concat(frames, ignore_index=True)


def _holdout_keys(labelled: pd.DataFrame, seed: int) -> set[str]:
    """The labelled pairs of one fold of five (whole products per fold, model.pair_folds)."""
    folds = pair_folds(labelled["id_a"].to_numpy(), labelled["id_b"].to_numpy(), labelled["label"].to_numpy(), HOLDOUT_FOLDS, seed)
    return set(labelled["key"][folds == 0])


def _class_counts(labels: pd.Series, where: str) -> None:
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if positives < MIN_PER_CLASS or negatives < MIN_PER_CLASS:
        raise LabelError(
            f"{where} hold {positives} matches and {negatives} non-matches among the search's candidate pairs; "
            f"a matcher needs at least {MIN_PER_CLASS} of each: label more candidate pairs (pss label-queue lists some)"
        )


def train_matcher(
    config: AppConfig,
    *,
    catalog_uri: str,
    pairs_uri: str,
    registry_uri: str,
    work_dir: str | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, measure on held-out pairs, and register a matcher; returns the training report (with matcher_id)."""
    from pss_ops.orchestration.run import _stderr, search_run

    labelled = read_labelled_pairs(pairs_uri)

    def refuse_unknown(_: RunContext, catalog_plan: CatalogPlan) -> None:
        check_items(pairs_uri, labelled, catalog_plan)

    with tempfile.TemporaryDirectory(prefix="pss-train-matcher-") as scratch:
        searched = search_run(
            config, catalog_uri=catalog_uri, out_dir=work_dir or scratch, progress=progress or _stderr, after_plan=refuse_unknown
        )
        rows = labelled_candidates(config, searched.ctx.run_uri, searched.queried, labelled)
    _class_counts(rows["label"], f"the labelled pairs of {pairs_uri}")
    feature_columns = [c for c in rows.columns if c not in ("id_a", "id_b", "key", "label")]
    labels = rows["label"].to_numpy(dtype=np.int64)

    held = _holdout_keys(labelled, seed)
    test = rows["key"].isin(held).to_numpy()
    _class_counts(rows.loc[~test, "label"], "the training fold's pairs")
    trial = fit_matcher(rows.loc[~test, feature_columns], labels[~test], rows.loc[~test, ["id_a", "id_b"]], seed)
    probability = trial.probabilities(rows.loc[test, feature_columns])
    scored = pd.DataFrame({"id_a": rows.loc[test, "id_a"], "id_b": rows.loc[test, "id_b"], "probability": probability})
    held_labels = labelled[labelled["key"].isin(held)]
    threshold = config.matcher.match_threshold if config.matcher else 0.5
    figures = decision_report(scored, held_labels[held_labels["label"] == 1], threshold)
    figures["labelled_pairs"] = len(held_labels)
    # An undefined figure (no pair above a level) is null: the report and matcher.json are strict JSON.
    holdout = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in figures.items()}

    matcher = fit_matcher(rows[feature_columns], labels, rows[["id_a", "id_b"]], seed)
    found = set(rows["key"])
    training = {
        "catalog_uri": catalog_uri,
        "pairs_uri": pairs_uri,
        "run_id": searched.ctx.run_id,
        "labelled_pairs": len(labelled),
        "labelled_matches": int(labelled["label"].sum()),
        "labelled_pairs_among_candidates": len(found),
        "labelled_matches_among_candidates": int(labelled.loc[labelled["key"].isin(found), "label"].sum()),
        "candidate_rows": len(rows),
        "seed": seed,
        "boosting_rounds": BOOSTING_ROUNDS,
        "tree_params": TREE_PARAMS,
    }
    spec = MatcherSpec(
        application=config.application,
        features=tuple(feature_columns),
        retrievers=tuple(r.name for r in config.retrievers),
        compound_model_id=config.compound_model_id,
        calibration_slope=matcher.calibration.slope,
        calibration_intercept=matcher.calibration.intercept,
        training=training,
        holdout=holdout,
    )
    matcher_id = save_matcher(matcher, spec, registry_uri)
    log.info("registered %s in %s", matcher_id, registry_uri)
    return {"matcher_id": matcher_id, "registry_uri": registry_uri, "training": training, "holdout": holdout}
