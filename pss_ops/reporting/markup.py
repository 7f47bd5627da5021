"""The report page's HTML pieces; every value from a run (titles, ids, categories, paths) is escaped on the way in.

Cells and paragraphs take plain values and escape them; only markup the page makes itself is passed as Html.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np


class Html(str):
    """Markup the page made itself, put in as it is; anything else is escaped."""


def text(value: Any) -> str:
    """A value as escaped page text: integers with thousands separators, floats to four significant places."""
    if isinstance(value, Html):
        return value
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.1f}" if float(value).is_integer() else f"{float(value):.4g}"
    return html.escape(str(value), quote=True)


def table(header: list[str], rows: list[list[Any]], *, numeric_from: int = 1, classes: str = "", widths: list[str] | None = None) -> Html:
    """A table, scrolled sideways when wider than the page; the columns from numeric_from on are right-aligned figures."""

    def row(cells: list[Any], tag: str) -> str:
        return (
            "<tr>" + "".join(f"<{tag}{' class=num' if i >= numeric_from else ''}>{text(c)}</{tag}>" for i, c in enumerate(cells)) + "</tr>"
        )

    sized = "<colgroup>" + "".join(f'<col style="width: {text(w)}">' for w in widths) + "</colgroup>" if widths else ""
    body = "".join(row(r, "td") for r in rows)
    return Html(
        f'<div class="scroll"><table class="{text(classes)}">{sized}<thead>{row(header, "th")}</thead><tbody>{body}</tbody></table></div>'
    )


def figure(svg: str, caption: str) -> Html:
    """A chart (an <svg> drawn by charts) with its caption."""
    return Html(f'<figure class="chart">{svg}<figcaption>{text(caption)}</figcaption></figure>')


def section(anchor: str, title: str, *parts: str) -> Html:
    """One section of the page: parts are Html or plain text."""
    return Html(f'<section id="{text(anchor)}"><h2>{text(title)}</h2>{"".join(text(p) for p in parts)}</section>')


def paragraph(*parts: Any) -> Html:
    """A paragraph of escaped text and the page's own markup."""
    return Html("<p>" + "".join(text(p) for p in parts) + "</p>")


def code(value: Any) -> Html:
    """A path or command, as text: never a link."""
    return Html(f"<code>{text(value)}</code>")


def columns(*parts: str) -> Html:
    """Parts side by side where the page is wide enough."""
    return Html('<div class="columns">' + "".join(text(p) for p in parts) + "</div>")


STYLE_SHEET = """
:root { --ink: #1d1d1f; --muted: #666; --line: #e3e3e3; --accent: #0072B2; --paper: #fff; --band: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); background: var(--band); }
header { background: var(--paper); border-bottom: 1px solid var(--line); padding: 20px 32px 8px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
.meta { color: var(--muted); margin: 0 0 14px; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 12px; }
.card { background: var(--band); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; }
.card span { color: var(--muted); font-size: 12px; }
nav { display: flex; flex-wrap: wrap; gap: 16px; padding: 6px 0; }
nav a { color: var(--accent); text-decoration: none; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 24px 32px; }
section { background: var(--paper); border: 1px solid var(--line); border-radius: 8px; padding: 18px 22px; margin: 16px 0; }
.columns { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.columns > * { flex: 1 1 360px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.scroll { overflow-x: auto; }
tbody tr:last-child td { border-bottom: none; }
table.categories tbody tr:last-child td { border-top: 2px solid var(--line); }
table.pairs { width: 100%; table-layout: fixed; }
table.pairs td { overflow-wrap: anywhere; }
table.pairs small { display: block; color: var(--muted); }
figure.chart { margin: 8px 0 16px; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; max-width: 900px; }
code { font-size: 12px; background: var(--band); padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.hint { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 0 0 24px; }
"""
