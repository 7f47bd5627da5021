"""The report page's sections, each from the run summary, the published pairs or evaluation.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pss_ops.reporting import charts
from pss_ops.reporting.markup import Html, code, columns, figure, paragraph, section, table, text
from pss_ops.reporting.published import SHOWN_PAIRS, PublishedPairs, retriever_score_columns

# The figures of `pss evaluate` the labels section lists first, when present; the rest follow in its order.
ITEM_COLUMNS = ("query_item_id", "candidate_item_id")
HEADLINE_FIGURES = ("recall@1", "recall@10", "ndcg@10", "map@30", "R@P90", "precision@threshold", "recall@threshold", "f1@threshold")


# run_summary.json is written with sorted keys; the page shows steps and counts in the pipeline's order.
STEP_ORDER = ("plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report")
COUNT_ORDER = (
    "rows_read",
    "rows_accepted",
    "rows_rejected",
    "rows_out_of_scope",
    "catalog_partitions",
    "index_partitions",
    "queries",
    "rows_published",
    "queries_short_of_k",
)


def in_order(names: list[str], order: tuple[str, ...]) -> list[str]:
    """names in the given order, any others after them in theirs."""
    return [n for n in order if n in names] + [n for n in names if n not in order]


def steps_section(summary: Mapping[str, Any]) -> Html:
    """Counts, and seconds per step: as a table and a chart."""
    counts, cache = summary["counts"], summary["cache"]
    rows = [[name.replace("_", " "), counts[name]] for name in in_order(list(counts), COUNT_ORDER)]
    rows += [["embedding cache hits", cache["hits"]], ["embeddings computed", cache["misses"]]]
    wall = summary.get("wall_seconds") or {}
    names = in_order(list(dict.fromkeys([*summary["step_seconds"], *wall])), STEP_ORDER)
    step = {name: summary["step_seconds"][name] for name in names if name in summary["step_seconds"]}
    wall = {name: wall[name] for name in names if name in wall}
    seconds = [[name, wall.get(name), step.get(name)] for name in names]
    return section(
        "steps",
        "Counts and time per step",
        columns(table(["count", "value"], rows), table(["step", "wall seconds", "step seconds"], seconds)),
        figure(
            charts.step_times(step, wall or None),
            "Wall clock: the step's time in pss run (absent when the steps ran one at a time, as in Airflow). Sum over "
            "partitions: each partition's own time, added up; on parallel workers the wall clock is shorter.",
        ),
    )


def rejects_section(summary: Mapping[str, Any]) -> Html:
    """Rejected rows by reason, and where the rejects file is (its path as text, not a link)."""
    rejects = summary["rejects"]
    reasons = sorted(rejects["reasons"].items(), key=lambda item: (-item[1], item[0]))
    listed = table(["reason", "rows"], [[reason, count] for reason, count in reasons]) if reasons else paragraph("No row was rejected.")
    return section(
        "rejects",
        "Rejects by reason",
        paragraph(f"{rejects['count']:,} of {summary['counts']['rows_read']:,} rows rejected ({rejects['fraction']:.3%})."),
        listed,
        paragraph("Every rejected row, with its row number, reason and whole record, is in ", code(rejects["file"]), "."),
    )


def category_section(accepted: pd.Series, published: PublishedPairs, groups: pd.DataFrame, *, matched: bool) -> Html:
    """Per category: accepted rows (each one a query), queries with results and short of k, rows published, groups."""
    frame = pd.concat([accepted.rename("queries"), published.by_category, groups], axis=1).fillna(0).astype(np.int64)
    frame["queries_short_of_k"] = frame["queries"] - frame["queries_with_k"]
    shown = ["queries", "queries_with_results", "queries_short_of_k", "rows_published"]
    header = ["category", "accepted rows (queries)", "queries with results", "queries short of k", "rows published"]
    if matched:
        shown += ["rows_matched", "duplicate_groups", "items_in_groups"]
        header += ["pairs at or above the threshold", "duplicate groups", "items in groups"]
    rows = [[category, *frame.loc[category, shown].tolist()] for category in frame.index]
    total = [Html("<b>all</b>"), *frame[shown].sum().tolist()]
    return section("categories", "Per category", table(header, [*rows, total], classes="categories"))


def _sample_note(published: PublishedPairs) -> str:
    if len(published.sample) == published.rows:
        return f"all {published.rows:,} published pairs"
    return f"a uniform sample of {len(published.sample):,} of {published.rows:,} published pairs"


def score_section(published: PublishedPairs, retrievers: list[str], threshold: float | None) -> Html:
    """The fused score's and each retriever's histogram, and the match probabilities' with a matcher."""
    note = _sample_note(published)
    parts = [
        figure(
            charts.score_histograms(published.sample, retrievers),
            f"Over {note}. The fused score ranks each query's list. Each retriever's panel shows its cosine for the pairs "
            "it found alone, found with another retriever, and (grey) the pairs only the others found.",
        )
    ]
    if threshold is not None:
        probabilities = published.sample["match_probability"].to_numpy(dtype=np.float64, na_value=np.nan)
        caption = f"Over {note}. Pairs at or above the match threshold ({threshold:g}) link items into duplicate groups."
        parts.append(figure(charts.probability_histogram(probabilities, threshold), caption))
    return section("scores", "Scores", *parts)


def overlap_section(published: PublishedPairs, retrievers: list[str]) -> Html:
    """How many published pairs each combination of retrievers found."""
    total = sum(published.overlap.values()) or 1
    rows = [[combination or "none recorded", count, f"{count / total:.1%}"] for combination, count in published.overlap.items()]
    listed = table(["found by", "published pairs", "share"], rows)
    if len(retrievers) == 1:
        return section("overlap", "Retriever overlap", listed)
    caption = "Each bar counts the published pairs whose candidate was in the own top list of exactly the retrievers marked below."
    return section(
        "overlap", "Retriever overlap", columns(listed, figure(charts.retriever_overlap(published.overlap, retrievers), caption))
    )


def recall_section(summary: Mapping[str, Any]) -> Html:
    """Each retriever's recall@k against exact brute force, and how the search was run."""
    search = summary["search"]
    k = search["k"]
    rows = [[name, value] for name, value in search.get("recall_by_retriever", {}).items()]
    used = search.get("index_used", {})
    settings = [
        ["sampled queries", search.get("sample_queries")],
        ["candidates per query and retriever", search.get("candidates_per_query")],
        ["indexes searched", "; ".join(used.get("indexes", []))],
        ["dense queries answered exactly (selective filter)", search.get("dense_queries_exact")],
        ["dense queries searched again exactly (the index fell short)", search.get("dense_queries_fallback")],
        ["queries without an eligible candidate", search.get("queries_without_candidates")],
    ]
    calibrated = search.get("calibration")
    if calibrated:
        settings.append(["lowest recall@k measured while calibrating the search effort", calibrated["min_measured_recall"]])
    removed = summary.get("post_filter", {}).get("candidates_removed", {})
    parts: list[str] = [
        paragraph(
            f"Each retriever's top {k} against exact brute force with the same attribute rules, on sampled queries; ties count as hits."
        ),
        columns(
            table(["retriever", f"recall@{k}"], rows),
            table(["search", "value"], settings),
            table(["post-filter rule", "candidates removed"], [[rule, count] for rule, count in removed.items()]),
        ),
    ]
    empty = search.get("scopes_without_candidates") or []
    if empty:
        parts.append(paragraph(f"{len(empty)} scope(s) where every item fails the attribute rules (0 rows): {', '.join(empty[:20])}"))
    return section("recall", "Recall against exact search", *parts)


def label_section(evaluation: Mapping[str, Any] | None, pairs_uri: str) -> Html:
    """What pss evaluate measured against known matches, or how to get it."""
    if evaluation is None:
        command = f"pss evaluate --pairs {pairs_uri} --truth TRUE_PAIRS.csv"
        return section(
            "labels",
            "Against known matches",
            Html('<p class="hint">No labels yet. '),
            code(command),
            Html(
                " (a CSV of id_a,id_b true pairs, or id_a,id_b,label) adds the precision–recall curve, calibration and "
                "duplicate groups here.</p>"
            ),
        )
    figures = evaluation["figures"]
    ordered = [name for name in HEADLINE_FIGURES if name in figures] + [name for name in figures if name not in HEADLINE_FIGURES]
    denominator = f" ({evaluation['true_pairs']:,} in the recall denominator, found or not)."
    parts: list[str] = [paragraph("True pairs from ", code(evaluation["truth"]), denominator)]
    if evaluation.get("items"):
        parts.append(paragraph("Only pairs of the items in ", code(evaluation["items"]), " count."))
    curves = {curve["name"]: curve for curve in evaluation["precision_recall"]}
    charted = [figure(charts.precision_recall(curves), "Each unordered pair once, by the higher of its two directions' scores.")]
    if evaluation.get("calibration"):
        charted.append(figure(charts.calibration(evaluation["calibration"]), "Each point is labelled with its bin's number of pairs."))
    parts.append(columns(*charted))
    listed = table(["pss evaluate figure", "value"], [[name, figures[name]] for name in ordered])
    if evaluation.get("group_sizes"):
        sizes = figure(charts.group_sizes(evaluation["group_sizes"]), "A group is exact when every pair of its items is a true match.")
        parts.append(columns(sizes, listed))
    else:
        parts.append(listed)
    histograms = {histogram["name"]: histogram for histogram in evaluation["score_histograms"]}
    caption = "Coupang's Fig. 6 with labels: where the true matches and the other published pairs fall on each score."
    parts.append(figure(charts.scores_by_label(histograms), caption))
    return section("labels", "Against known matches", *parts)


def _pair_rows(pairs: pd.DataFrame, named: Mapping[str, str], ranked_by: str, retrievers: list[str]) -> list[list[Any]]:
    cosines = retriever_score_columns(pa.array(pairs["retriever_scores"].tolist(), pa.string()), retrievers)
    rows = []
    for row, pair in enumerate(pairs.to_dict("records")):
        items = [Html(f"{text(named.get(pair[side], ''))}<small>{text(pair[side])}</small>") for side in ITEM_COLUMNS]
        scores = ", ".join(f"{name} {cosines[name][row]:.3f}" for name in retrievers if np.isfinite(cosines[name][row]))
        found_by = pair["found_by"].replace(",", ", ") if isinstance(pair["found_by"], str) else None
        rows.append([row + 1, pair["category"], pair[ranked_by], *items, found_by, scores])
    return rows


def pairs_section(published: PublishedPairs, named: Mapping[str, str], retrievers: list[str]) -> Html:
    """The most and least confident published pairs, their titles side by side."""
    ranked_by = published.ranked_by.replace("_", " ")
    header = ["#", "category", ranked_by, "query item", "candidate item", "found by", "cosines"]
    parts: list[str] = []
    for which, pairs in (("most", published.most_confident), ("least", published.least_confident)):
        parts.append(Html(f"<h3>The {SHOWN_PAIRS} {which} confident pairs</h3>"))
        rows = _pair_rows(pairs, named, published.ranked_by, retrievers)
        parts.append(table(header, rows, numeric_from=99, classes="pairs", widths=["4%", "8%", "8%", "28%", "28%", "11%", "13%"]))
    return section("pairs", f"Pairs by {ranked_by}", paragraph(f"Each unordered pair once; ranked by {ranked_by}."), *parts)
