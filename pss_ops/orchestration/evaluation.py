"""`pss evaluate` on a run's pairs: what it measured is kept in the run (evaluation.json), and the run's report page
is drawn again with a labels section, so OUT/report.html shows it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pss_ops import layout, storage
from pss_ops.manifests import RunContext
from pss_ops.orchestration.outputs import regather
from pss_ops.quality.evaluate import load_items
from pss_ops.reporting import evaluation_uri
from pss_ops.reporting.labels import label_figures, run_of_pairs
from pss_ops.reporting.page import write_page

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedEvaluation:
    """Where the evaluation was kept, whose run's pairs were evaluated, and the report page drawn with it."""

    evaluation_uri: str
    run_uri: str | None
    page_uri: str | None

    def describe(self) -> str:
        """One line for the user."""
        if self.page_uri is not None:
            return f"report  {self.page_uri} now has a labels section (figures kept in {self.evaluation_uri})"
        if self.run_uri is not None:
            return f"evaluation  {self.evaluation_uri}: the run has no report yet; its report step will draw the labels"
        return f"evaluation  {self.evaluation_uri} (these pairs are no run's, so no report page shows it)"


def _folder(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if storage.is_s3(uri) else os.path.dirname(os.path.abspath(uri))


def record_evaluation(
    pairs_uri: str, truth_uri: str, figures: Mapping[str, Any], *, items_uri: str | None = None, groups_uri: str | None = None
) -> RecordedEvaluation:
    """Keep pss evaluate's figures and the label charts' data beside the run's summary, and redraw its report page.

    groups_uri defaults to duplicate_groups.parquet beside the pairs, as pss evaluate's does. Pairs that aren't a run's
    (a copied Parquet) get their evaluation.json beside them, and no page.
    """
    folder = _folder(pairs_uri)
    items = load_items(items_uri) if items_uri else None
    groups_uri = groups_uri or storage.join(folder, "duplicate_groups.parquet")
    run_uri = run_of_pairs(pairs_uri)
    run_id = RunContext.read(layout.context(run_uri)).run_id if run_uri else None
    record = {
        "run_id": run_id,
        "pairs": pairs_uri,
        "truth": truth_uri,
        "items": items_uri,
        "figures": dict(figures),
        **label_figures(pairs_uri, truth_uri, items=items, groups_uri=groups_uri),
    }
    if run_uri is None or run_id is None:
        uri = storage.join(folder, "evaluation.json")
        storage.write_json(uri, record)
        return RecordedEvaluation(uri, None, None)
    uri = evaluation_uri(run_uri)
    storage.write_json(uri, record)
    summary_uri = layout.run_summary(run_uri)
    if not storage.exists(summary_uri):
        # The report step hasn't run yet; when it does, its page has the labels.
        return RecordedEvaluation(uri, run_uri, None)
    page = write_page(run_uri, storage.read_json(summary_uri))
    regather(run_uri, run_id, "report.html", page, out_dir=folder)
    return RecordedEvaluation(uri, run_uri, page)
