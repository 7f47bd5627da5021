"""Runs for the report page's tests, made from ag_run's finished run: one with a matcher, and copies to change freely."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pss_ops import layout, storage
from pss_ops.config import MatcherRef
from pss_ops.manifests import CatalogPlan, QueriedPartition, RunContext
from pss_ops.matching.model import fit_matcher
from pss_ops.matching.registry import MatcherSpec, save_matcher
from pss_ops.matching.training import labelled_candidates
from pss_ops.quality.matching import pair_keys
from pss_ops.steps.post_filter import post_filter_partition
from pss_ops.steps.publish import publish
from pss_ops.steps.report import report
from tests.conftest import Run, Subset

# What a run's steps wrote and read; outputs/ and the steps' own results are redone by the copies that need them.
REDONE = ("outputs", "post_filter", "publish", "report")


def run_folder(run: Run) -> Path:
    """The run folder of a pss run."""
    return Path(run.summary["run_uri"])


def copy_out(run: Run, target: Path) -> Path:
    """A copy of a pss run's OUT (links kept as links; OUT/current's hard links become files), to change freely."""
    shutil.copytree(run.out_dir, target, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    return target


def matched_run(ag_run: Run, ag_subset: Subset, root: Path) -> Path:
    """ag_run's run again from its query output, with a matcher trained on its published pairs labelled by the true pairs.

    Made once per test session (root is kept in the session's temp folder): post_filter scores the pairs, publish forms
    duplicate groups, report writes the summary and the page.
    """
    run_uri = root / "run"
    if (run_uri / "report" / "report.html").exists():
        return run_uri
    shutil.rmtree(root, ignore_errors=True)  # an earlier attempt that failed half-way
    root.mkdir(parents=True)
    shutil.copytree(run_folder(ag_run), run_uri, ignore=shutil.ignore_patterns(*REDONE))
    searched = RunContext.read(layout.context(str(run_uri)))
    plan = CatalogPlan.read(layout.plan_manifest(str(run_uri)))
    queried = [QueriedPartition.read(layout.query_manifest(str(run_uri), p.name)) for p in plan.partitions]

    published = pd.read_parquet(ag_run.out_dir / "similar_items.parquet", columns=["query_item_id", "candidate_item_id"])
    labelled = published.rename(columns={"query_item_id": "id_a", "candidate_item_id": "id_b"})
    labelled["key"] = pair_keys(labelled["id_a"], labelled["id_b"])
    labelled = labelled.drop_duplicates("key")
    true_keys = set(pair_keys(ag_subset.matches["id_a"], ag_subset.matches["id_b"]).tolist())
    labelled["label"] = labelled["key"].isin(true_keys).astype(np.int64)
    rows = labelled_candidates(searched.config, str(run_uri), queried, labelled)
    features = [c for c in rows.columns if c not in ("id_a", "id_b", "key", "label")]
    matcher = fit_matcher(rows[features], rows["label"].to_numpy(dtype=np.int64), rows[["id_a", "id_b"]], seed=0)
    spec = MatcherSpec(
        application=searched.application,
        features=tuple(features),
        retrievers=tuple(r.name for r in searched.config.retrievers),
        compound_model_id=searched.config.compound_model_id,
        calibration_slope=matcher.calibration.slope,
        calibration_intercept=matcher.calibration.intercept,
        training={"labelled_pairs": len(labelled)},
        holdout={},
    )
    registry = str(root / "registry")
    config = searched.config.model_copy(
        update={"matcher": MatcherRef(registry_uri=registry, model_id=save_matcher(matcher, spec, registry))}
    )
    ctx = searched.model_copy(update={"run_id": "run-with-matcher", "run_uri": str(run_uri), "config": config})
    ctx.write(layout.context(str(run_uri)))
    for partition in queried:
        post_filter_partition(ctx, partition)
    publish(ctx, plan, f"sqlite:///{root / 'warehouse.sqlite'}")
    report(ctx)
    return run_uri


def copy_run(run_uri: Path, target: Path) -> Path:
    """A copy of a run folder to change freely (its manifests still point at the original's partition files)."""
    shutil.copytree(run_uri, target)
    return target


def rewrite_titles(run_uri: Path, titles: dict[str, str]) -> None:
    """Give items new titles in the run's catalog partitions (the titles the report page shows)."""
    for partition in CatalogPlan.read(layout.plan_manifest(str(run_uri))).partitions:
        uri = layout.catalog_partition(str(run_uri), partition.name)
        frame = storage.read_parquet(uri).to_pandas()
        frame["title"] = [titles.get(item, title) for item, title in zip(frame["item_id"], frame["title"])]
        frame.to_parquet(uri, index=False)
