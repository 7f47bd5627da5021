"""The run report: one self-contained HTML page of a run (report.html), with charts drawn by matplotlib as inline SVG.

`published` reads what the page shows of the run's pairs, `charts` draws, `page` assembles and writes the page, and
`labels` adds what `pss evaluate` measured against known matches (evaluation.json) when it is given the run's pairs.
"""

from __future__ import annotations

from pss_ops import storage


# Both live in the run's report/ folder, beside layout.run_summary.
def page_uri(run_uri: str) -> str:
    """The run's report.html."""
    return storage.join(run_uri, "report", "report.html")


def evaluation_uri(run_uri: str) -> str:
    """What `pss evaluate` measured on the run's pairs: the page's labels section."""
    return storage.join(run_uri, "report", "evaluation.json")
