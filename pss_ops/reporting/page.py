"""The run report page: one HTML file of a run's figures, tables and inline SVG charts; no script, nothing fetched."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pss_ops import layout, storage
from pss_ops.manifests import CatalogPlan
from pss_ops.reporting import evaluation_uri, page_uri, sections
from pss_ops.reporting.markup import STYLE_SHEET, code, text
from pss_ops.reporting.published import accepted_by_category, groups_by_category, read_published, titles
from pss_ops.timing import timed

log = logging.getLogger(__name__)

NAVIGATION = (
    ("steps", "Steps"),
    ("rejects", "Rejects"),
    ("categories", "Categories"),
    ("scores", "Scores"),
    ("overlap", "Overlap"),
    ("recall", "Recall"),
    ("labels", "Labels"),
    ("pairs", "Pairs"),
)
# Whatever a catalog value holds, the browser loads nothing and runs nothing (escaping is the first guard).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def run_evaluation(run_uri: str, run_id: str) -> dict[str, Any] | None:
    """What pss evaluate recorded for this run's pairs, if anything."""
    uri = evaluation_uri(run_uri)
    if not storage.exists(uri):
        return None
    recorded: dict[str, Any] = storage.read_json(uri)
    # A run folder copied under another id keeps the file, but its figures are of the other run's pairs.
    return recorded if recorded.get("run_id") == run_id else None


def _cards(summary: Mapping[str, Any]) -> str:
    counts, search, matching = summary["counts"], summary["search"], summary.get("matching")
    shown = [
        ("rows read", counts["rows_read"]),
        ("rejected", counts["rows_rejected"]),
        ("rows published", counts["rows_published"]),
        ("queries short of k", counts["queries_short_of_k"]),
        (f"search recall@{search['k']} (lowest retriever)", search.get("recall_at_k")),
    ]
    if matching:
        shown.append(("duplicate groups", matching["duplicate_groups"]))
    return "".join(f'<div class="card"><b>{text(value)}</b><span>{text(name)}</span></div>' for name, value in shown)


def render_page(run_uri: str, summary: Mapping[str, Any]) -> str:
    """The report page of a run whose publish has written its Parquet, from the summary the report step gathered."""
    plan = CatalogPlan.read(layout.plan_manifest(run_uri))
    retrievers = [r["name"] for r in summary["search"]["retrievers"]]
    matching = summary.get("matching")
    threshold = matching["match_threshold"] if matching else None
    pairs_uri = layout.similar_items(run_uri)
    published = read_published(pairs_uri, retrievers=retrievers, k=summary["search"]["k"], match_threshold=threshold)
    shown = pd.concat([published.most_confident, published.least_confident])
    named = titles(run_uri, plan, set(shown["query_item_id"]) | set(shown["candidate_item_id"]))
    body = [
        sections.steps_section(summary),
        sections.rejects_section(summary),
        sections.category_section(
            accepted_by_category(run_uri, plan),
            published,
            groups_by_category(layout.duplicate_groups(run_uri)),
            matched=threshold is not None,
        ),
        sections.score_section(published, retrievers, threshold),
        sections.overlap_section(published, retrievers),
        sections.recall_section(summary),
        sections.label_section(run_evaluation(run_uri, summary["run_id"]), pairs_uri),
        sections.pairs_section(published, named, retrievers),
    ]
    title = f"{summary['application']}: run {summary['run_id']}"
    nav = "".join(f'<a href="#{anchor}">{text(name)}</a>' for anchor, name in NAVIGATION)
    meta = " · ".join(
        [f"snapshot {text(summary['snapshot_date'])}", f"model {text(summary['model_id'])}", f"catalog {code(summary['catalog'])}"]
        + [f"run folder {code(run_uri)}"]
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{STYLE_SHEET}</style></head><body>"
        f'<header><h1>{text(title)}</h1><p class="meta">{meta}</p><div class="cards">{_cards(summary)}</div><nav>{nav}</nav></header>'
        f"<main>{''.join(body)}</main>"
        "<footer>Written by the report step from the run's manifests, run_summary.json and similar_items.parquet. "
        "One self-contained file: no script, nothing fetched when opened.</footer></body></html>\n"
    )


def write_page(run_uri: str, summary: Mapping[str, Any]) -> str:
    """Render the run's report page and write it atomically beside run_summary.json; its URI."""
    with timed("report page"):
        page = render_page(run_uri, summary)
        uri = page_uri(run_uri)
        storage.write_text(uri, page)
    log.info("report page: %s (%d KB)", uri, len(page.encode()) // 1024)
    return uri
