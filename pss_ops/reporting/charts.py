"""The run report's charts, drawn by matplotlib as SVG text to inline in the page: no script, no font or image to fetch.

Each chart function returns one <svg> element. Text stays text (svg.fonttype "none", drawn in the reader's
sans-serif), which keeps the files small and the labels searchable. The ids inside each SVG are prefixed with a hash of
the chart, so several charts in one page never share an id.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter
from matplotlib.typing import RcKeyType

P = ParamSpec("P")

# Okabe–Ito: told apart by colour-blind readers too.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MUTED = "#BBBBBB"
STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "pss-report",  # ids from a fixed salt: the same run draws the same bytes
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#E6E6E6",
    "legend.frameon": False,
    "figure.facecolor": "none",
    # Panels, their tick labels and legends outside the axes get room of their own.
    "figure.constrained_layout.use": True,
    "axes.facecolor": "none",
}
WIDTH = 7.5  # inches; the page scales each SVG to its column
THOUSANDS = StrMethodFormatter("{x:,.0f}")
_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')


def _inline(svg: str, label: str) -> str:
    """matplotlib's SVG document as an element for an HTML page: no XML prologue or DTD, ids unique to this chart."""
    svg = _NAMESPACES.sub("", _PROLOGUE.sub("", svg, count=1))
    # The HTML parser puts <svg> and xlink:href in their namespaces itself; the declarations would only be URLs.
    prefix = "c" + hashlib.sha256(svg.encode()).hexdigest()[:8] + "-"
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", svg)
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def chart(draw: Callable[P, Figure]) -> Callable[P, str]:
    """Draw a figure in the report's style and return it as an inline <svg>, labelled with the function's docstring."""
    label = (draw.__doc__ or draw.__name__).strip().splitlines()[0].rstrip(".")

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> str:
        with matplotlib.rc_context(STYLE):
            figure = draw(*args, **kwargs)
            buffer = io.StringIO()
            figure.savefig(
                buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
            )
        return _inline(buffer.getvalue(), label)

    return drawn


def _label_bars(axes: Any, bars: Any, values: Sequence[float], fmt: str = "{:,.0f}", horizontal: bool = False) -> None:
    labels = [fmt.format(v) for v in values]
    axes.bar_label(bars, labels=labels, padding=2, fontsize=8)
    if horizontal:
        axes.set_xlim(0, max(values, default=0) * 1.18 or 1)
    else:
        axes.set_ylim(0, max(values, default=0) * 1.15 or 1)


@chart
def step_times(step_seconds: Mapping[str, float], wall_seconds: Mapping[str, float] | None) -> Figure:
    """Seconds per step: wall clock of the run, and the sum of the step's partitions."""
    steps = list(dict.fromkeys([*step_seconds, *(wall_seconds or {})]))
    figure = Figure(figsize=(WIDTH, 0.32 * len(steps) + 0.9))
    axes = figure.subplots()
    y = np.arange(len(steps))
    series = [("sum over partitions", step_seconds)]
    if wall_seconds:
        series.insert(0, ("wall clock", wall_seconds))
    height = 0.8 / len(series)
    for number, (name, seconds) in enumerate(series):
        values = [float(seconds.get(step, 0.0)) for step in steps]
        bars = axes.barh(y + (number - (len(series) - 1) / 2) * height, values, height=height, color=COLOURS[number], label=name)
        _label_bars(axes, bars, values, "{:,.1f} s", horizontal=True)
    axes.set_yticks(y, steps)
    axes.invert_yaxis()
    axes.set_xlabel("seconds")
    axes.grid(axis="y", visible=False)
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(series))
    return figure


def _holds(found_by: pd.Series, name: str) -> np.ndarray:
    return found_by.fillna("").map(lambda value: name in value.split(",")).to_numpy(dtype=bool)


def _stacked(axes: Any, edges: np.ndarray, series: Sequence[tuple[np.ndarray, str, str]]) -> None:
    """Histograms of (values, colour, label) stacked on one another, each one filled outline (not a patch per bar)."""
    bottom = np.zeros(len(edges) - 1)
    for values, colour, label in series:
        top = bottom + np.histogram(values, bins=edges)[0]
        axes.stairs(top, edges, baseline=bottom, fill=True, color=colour, label=label)
        bottom = top


@chart
def score_histograms(sample: pd.DataFrame, retrievers: Sequence[str]) -> Figure:
    """Score histograms: the fused score, and each retriever's cosine split by who found the pair (Coupang's Fig. 6)."""
    panels = ["score", *retrievers]
    figure = Figure(figsize=(max(WIDTH, 2.3 * len(panels)), 2.6))
    axes_row = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    axes_row[0].set_ylabel("published pairs")
    axes_row[0].yaxis.set_major_formatter(THOUSANDS)
    for axes, panel in zip(axes_row, panels):
        values = sample[panel].to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        edges = np.linspace(min(0.0, float(values[finite].min())) if finite.any() else 0.0, 1.0, 41)
        if panel == "score":
            _stacked(axes, edges, [(values[finite], COLOURS[7], "fused score")])
            axes.set_title("fused score")
            axes.set_xlabel("score")
            continue
        found = _holds(sample["found_by"], panel)
        others = np.zeros(len(sample), dtype=bool)
        for other in retrievers:
            if other != panel:
                others |= _holds(sample["found_by"], other)
        # Coupang compares the pairs one embedding found and the other didn't; here each retriever's own cosine shows
        # where its finds fall, and where the pairs that only the others found would have scored with it.
        groups = [
            (found & ~others, COLOURS[0], f"{panel} only"),
            (found & others, COLOURS[1], f"{panel} and another"),
            (~found, MUTED, "others only"),
        ]
        shown = [(values[mask & finite], colour, name) for mask, colour, name in groups if (mask & finite).any()]
        _stacked(axes, edges, shown)
        if shown:
            axes.legend(loc="upper left", fontsize=7)
        axes.set_title(panel)
        axes.set_xlabel("cosine")
    return figure


@chart
def probability_histogram(probabilities: np.ndarray, threshold: float) -> Figure:
    """Match probabilities of the published pairs, with the match threshold."""
    figure = Figure(figsize=(WIDTH, 2.4))
    axes = figure.subplots()
    values = probabilities[np.isfinite(probabilities)]
    edges = np.linspace(0.0, 1.0, 41)
    below, above = values[values < threshold], values[values >= threshold]
    _stacked(axes, edges, [(below, MUTED, "below the threshold"), (above, COLOURS[2], "at or above: linked into groups")])
    axes.axvline(threshold, color=COLOURS[7], linestyle="--", linewidth=1)
    # Most published pairs are far from a match: on a linear axis the matches' bars vanish.
    axes.set_yscale("log")
    axes.set_ylim(bottom=0.8)
    axes.set_xlabel("match probability")
    axes.set_ylabel("published pairs (log scale)")
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2)
    return figure


@chart
def retriever_overlap(overlap: Mapping[str, int], retrievers: Sequence[str]) -> Figure:
    """Published pairs by the combination of retrievers that found them (UpSet-style: bars, and which retrievers below)."""
    combinations = list(overlap)
    figure = Figure(figsize=(WIDTH * 0.6, 1.9 + 0.28 * len(retrievers)))
    bars_axes, dots_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 0.35 * max(len(retrievers), 1) + 0.3]})
    x = np.arange(len(combinations))
    counts = [overlap[c] for c in combinations]
    bars = bars_axes.bar(x, counts, color=COLOURS[0], width=0.6)
    _label_bars(bars_axes, bars, counts)
    bars_axes.set_ylabel("published pairs")
    bars_axes.yaxis.set_major_formatter(THOUSANDS)
    bars_axes.grid(axis="x", visible=False)
    for row, name in enumerate(retrievers):
        member = [name in c.split(",") for c in combinations]
        dots_axes.scatter(x, [row] * len(x), s=60, color=[COLOURS[7] if m else "#DDDDDD" for m in member], zorder=3)
    for column, combination in enumerate(combinations):
        rows = [row for row, name in enumerate(retrievers) if name in combination.split(",")]
        if len(rows) > 1:
            dots_axes.plot([column, column], [min(rows), max(rows)], color=COLOURS[7], linewidth=2, zorder=2)
    dots_axes.set_yticks(range(len(retrievers)), retrievers)
    dots_axes.set_ylim(len(retrievers) - 0.5, -0.5)
    dots_axes.set_xticks(x, [""] * len(x))
    dots_axes.tick_params(length=0)
    dots_axes.grid(False)
    for side in ("left", "bottom"):
        dots_axes.spines[side].set_visible(False)
    return figure


@chart
def precision_recall(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Precision against recall over every true pair (found or not), per score."""
    figure = Figure(figsize=(WIDTH * 0.55, 3.2))
    axes = figure.subplots()
    for number, (name, curve) in enumerate(curves.items()):
        axes.plot(curve["recall"], curve["precision"], color=COLOURS[number % len(COLOURS)], linewidth=1.6, label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall (of every true pair)")
    axes.set_ylabel("precision")
    axes.legend(loc="lower left")
    return figure


@chart
def calibration(bins: Sequence[Mapping[str, float]]) -> Figure:
    """Calibration: the observed match rate of the published pairs against their predicted probability, by bin."""
    figure = Figure(figsize=(WIDTH * 0.45, 3.2))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color=MUTED, linestyle="--", linewidth=1, label="perfect calibration")
    filled = [b for b in bins if b["pairs"]]
    predicted = [b["mean_probability"] for b in filled]
    observed = [b["match_rate"] for b in filled]
    axes.plot(predicted, observed, color=COLOURS[2], marker="o", linewidth=1.4, label="published pairs")
    for p, o, b in zip(predicted, observed, filled):
        axes.annotate(f"{b['pairs']:,}", (p, o), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#555555")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("predicted match probability (bin mean)")
    axes.set_ylabel("observed share of true matches")
    axes.legend(loc="upper left")
    return figure


@chart
def group_sizes(sizes: Sequence[Mapping[str, int]]) -> Figure:
    """Duplicate groups by size: those whose every pair is a true match, and the rest."""
    figure = Figure(figsize=(WIDTH * 0.55, 2.6))
    axes = figure.subplots()
    x = np.arange(len(sizes))
    exact = np.array([s["exact"] for s in sizes])
    rest = np.array([s["groups"] - s["exact"] for s in sizes])
    axes.bar(x, exact, color=COLOURS[2], width=0.6, label="every pair a true match")
    bars = axes.bar(x, rest, bottom=exact, color=COLOURS[5], width=0.6, label="holds a false pair")
    _label_bars(axes, bars, list(exact + rest))
    axes.set_xticks(x, [str(s["size"]) for s in sizes])
    axes.set_xlabel("items in the group")
    axes.set_ylabel("groups")
    axes.yaxis.set_major_formatter(THOUSANDS)
    axes.grid(axis="x", visible=False)
    axes.legend(loc="upper right")
    return figure


@chart
def scores_by_label(histograms: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Each score's distribution over true matches and over the other published pairs (Coupang's Fig. 6, with labels)."""
    figure = Figure(figsize=(max(WIDTH, 2.3 * len(histograms)), 2.4))
    axes_row = np.atleast_1d(figure.subplots(1, len(histograms)))
    for axes, (name, histogram) in zip(axes_row, histograms.items()):
        edges = np.asarray(histogram["edges"])
        for label, colour, listed in (("true match", COLOURS[2], histogram["match"]), ("other", COLOURS[5], histogram["other"])):
            counts = np.asarray(listed, dtype=np.float64)
            axes.stairs(counts / counts.sum() if counts.sum() else counts, edges, color=colour, linewidth=1.4, label=label)
        axes.set_title(name)
        axes.set_xlabel("score" if name in ("score", "match_probability") else "cosine")
    axes_row[0].set_ylabel("share of pairs")
    axes_row[0].legend(loc="upper left", fontsize=7)
    return figure
